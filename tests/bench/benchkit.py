"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def machine(with_load: bool = False) -> str:
    """nproc, CPU model, memory and Python version (and the load average, when asked)."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f", {kib / 2**20:.0f} GiB"
    text = f"nproc {os.cpu_count()} ({cpu}){memory}, Python {platform.python_version()}"
    if with_load:
        text += ", load average at start " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return text
