"""What the benchmarks share: the machine they ran on, the embedded cloud in a child process, processes' CPU time,
and the Lambda context a handler called directly reads."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "layers" / "core"

_CLOUD_CHILD = """
import inspect, sys
prefix, backend = sys.argv[1], sys.argv[2]
sys.path[:0] = sys.argv[3:]
from rtrec.local.cloud import EmbeddedCloud
from rtrec.resources import ResourceNames
options = {}
if "backend" in inspect.signature(EmbeddedCloud).parameters:  # a checkout from before the durable cloud has none
    from rtrec.settings import LocalSettings
    options["backend"] = backend or LocalSettings().cloud_backend
elif backend not in ("", "moto"):
    raise SystemExit("this tree's EmbeddedCloud has no backend " + backend)
cloud = EmbeddedCloud(port=0, names=ResourceNames(prefix=prefix), **options)
cloud.start()
print(cloud.endpoint_url, flush=True)
sys.stdin.read()  # until the parent closes the pipe
cloud.stop(save_state=False)
"""


@contextlib.contextmanager
def child_cloud(prefix: str, log: Path | None = None, *, tree: Path = ROOT,
                backend: str | None = None) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """EmbeddedCloud provisioned with `prefix` in a child process, so its request handling does not share the
    measured process's GIL (as a remote service would not); yields (endpoint URL, process). `tree`: the checkout
    whose code it runs (another one: the code before a change); `backend`: durable or moto (default: the
    settings', RTREC_CLOUD_BACKEND)."""
    stderr = log.open("w") if log is not None else None
    proc = subprocess.Popen([sys.executable, "-c", _CLOUD_CHILD, prefix, backend or "", str(tree / "layers" / "core"),
                             str(tree)], cwd=tree, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=stderr)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            where = f"; its log:\n{log.read_text()[-3000:]}" if log is not None else ""
            raise SystemExit(f"the embedded cloud ({backend or 'default backend'}) did not start in its child "
                             f"process{where}")
        yield url, proc
    finally:
        with contextlib.suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if stderr is not None:
            stderr.close()


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


def process_cpu() -> dict[int, tuple[int, float]]:
    """Every process's (parent pid, CPU seconds so far, user + system), from /proc (Linux; empty elsewhere)."""
    table: dict[int, tuple[int, float]] = {}
    try:
        tick = os.sysconf("SC_CLK_TCK")
        entries = os.listdir("/proc")
    except (OSError, ValueError, AttributeError):
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            table[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return table


class ConsumerLambdaContext:
    """The Lambda context the stream consumer's handler and Powertools read."""

    function_name = "rtrec-stream-consumer"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rtrec-stream-consumer"
    aws_request_id = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000
