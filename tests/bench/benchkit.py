"""What the benchmarks share: the machine they ran on, the embedded cloud in a child process, processes' CPU time,
another checkout's code in a child process, the Lambda context a handler called directly reads, and the report's
pieces (progress lines, markdown tables, percentiles).

A script run as `.venv/bin/python tests/bench/x.py` has its own folder first on sys.path, so `import benchkit` works
as it is, and `rtrec`, `rtrec_local`, `functions` and `training` are installed (editable). Importing benchkit also puts the
repository's root on the path (last), for the one thing that is not installed: the unit tests' helpers
(`tests.unit...`) a few benchmarks reuse. isort places `benchkit` (third party) before `tests` (first party)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "layers" / "core"
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


def tree_paths(tree: Path) -> list[str]:
    """The import roots of a checkout (its core package's folder, the local tooling's where it has one, its root):
    first on a child process's path, they make it run that tree's `rtrec`, `rtrec_local`, `functions` and
    `training` instead of the installed ones."""
    local = [str(tree / "localstack")] if (tree / "localstack" / "rtrec_local").is_dir() else []
    return [str(tree / "layers" / "core"), *local, str(tree)]


def tree_env(tree: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with PYTHONPATH naming only `tree`'s import roots."""
    return {**(os.environ if base is None else base), "PYTHONPATH": os.pathsep.join(tree_paths(tree))}


def tooling_module(tree: Path, name: str) -> str:
    """The dotted name of the local tooling's module `name` (`cloud`, `cli`, ...) in `tree`: under `rtrec_local`, or
    in a checkout from before the tooling left the core package, under `rtrec.local` (the CLI: `rtrec.cli`)."""
    if (tree / "localstack" / "rtrec_local").is_dir():
        return f"rtrec_local.{name}"
    return "rtrec.cli" if name == "cli" else f"rtrec.local.{name}"


_CLOUD_CHILD = """
import importlib, inspect, sys
prefix, backend, cloud_module = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[:0] = sys.argv[4:]
EmbeddedCloud = importlib.import_module(cloud_module).EmbeddedCloud
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
def child_cloud(
    prefix: str, log: Path | None = None, *, tree: Path = ROOT, backend: str | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """EmbeddedCloud provisioned with `prefix` in a child process, so its request handling does not share the
    measured process's GIL (as a remote service would not); yields (endpoint URL, process). `tree`: the checkout
    whose code it runs (another one: the code before a change); `backend`: durable or moto (default: the
    settings', RTREC_CLOUD_BACKEND)."""
    stderr = log.open("w") if log is not None else None
    proc = subprocess.Popen(
        [sys.executable, "-c", _CLOUD_CHILD, prefix, backend or "", tooling_module(tree, "cloud"), *tree_paths(tree)],
        cwd=tree,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            where = f"; its log:\n{log.read_text()[-3000:]}" if log is not None else ""
            raise SystemExit(f"the embedded cloud ({backend or 'default backend'}) did not start in its child process{where}")
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
        text += ", load average at start " + load_average()
    return text


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


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


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) so far of a process and its descendants still running (Linux /proc; NaN
    elsewhere)."""
    table = process_cpu()
    if not table:
        return float("nan")
    wanted, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (its_parent, _) in table.items():
            if its_parent == parent and child not in wanted:
                wanted.add(child)
                frontier.append(child)
    return sum(table[p][1] for p in wanted if p in table)


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


def progress(message: str) -> None:
    """A progress line on stderr, so that stdout holds the report alone."""
    print(f"   .. {message}", file=sys.stderr, flush=True)


def show(title: str, text: str) -> None:
    """A report section: a markdown heading, then `text`."""
    print(f"\n### {title}\n\n{text}\n", flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A markdown table; `align` has one letter per column, `l` or `r` (default: the first left, the rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def percentiles(values: ArrayLike) -> dict[str, float]:
    """p50, p90, p95, p99 (numpy's linear interpolation), max and mean of `values`; all NaN when there are none."""
    import numpy as np  # here: importing benchkit stays cheap in the measured child processes that do

    array = np.asarray(values, dtype=float)
    if not array.size:
        return dict.fromkeys(("p50", "p90", "p95", "p99", "max", "mean"), float("nan"))
    p50, p90, p95, p99 = (float(x) for x in np.percentile(array, [50, 90, 95, 99]))
    return {"p50": p50, "p90": p90, "p95": p95, "p99": p99, "max": float(array.max()), "mean": float(array.mean())}
