"""`make run` as users run it, under a loopback load: throughput, latency, consumer lag, start and stop times.

Starts `rtrec run` (ML-1M, a model in production: bootstrapped on the first start of a state folder) once per
cloud backend, side by side in one run (`--backends emulators,moto`), and measures from this separate process:

- the bare HTTP floor: 16 keep-alive clients as fast as they go on a static route (`/docs`, Swagger UI's small
  page, which stays the same size as the API grows; `/openapi.json` grew with every route and error code);
- `GET /recommend/{random user}`: 16 keep-alive clients as fast as they go (closed loop), then a paced
  open loop at `--rate` req/s over 16 connections (as `wrk2 -R200`: latency counts from the moment each request
  was due, so a stall is not hidden by coordinated omission);
- the stream consumer's lag behind the stream (`rtrec_consumer_behind_latest_seconds` on /metrics) during each
  load and in the `--after` seconds after it;
- start time with the state already there (process start to /health 200 with the model loaded) and shutdown
  time with a full stream (`--backlog` events posted, then Ctrl-C: drain + stop).

    .venv/bin/python tests/bench/bench_make_run.py [--stack durable:durable] [--stack before:moto:/tmp/before] \
        [--seconds 30] [--rate 200]

Not collected by pytest. Figures go to tests/bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from benchkit import ROOT, machine, percentiles, process_cpu, table, tooling_module, tree_paths

CONCURRENCY = 16
STATIC_ROUTE = "/docs"  # the HTTP floor: a route whose answer does not grow with the API
N_USERS = 6040


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Load:
    label: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    lag_during_s: list[float] = field(default_factory=list)
    lag_after_s: list[tuple[float, float]] = field(default_factory=list)  # (seconds after the load, lag)

    summary: dict[str, float] | None = None  # wrk's figures (it reports percentiles, not each latency)

    @property
    def rate(self) -> float:
        if self.summary is not None:
            return self.summary["rate"]
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def row(self) -> list[str]:
        figures = self.summary if self.summary is not None else percentiles(self.latencies_ms or [0.0])
        p50, p99, worst = figures["p50"], figures["p99"], figures["max"]
        lag_max = max(self.lag_during_s, default=float("nan"))
        settled = next((t for t, lag in self.lag_after_s if lag < 0.5), float("nan"))
        return [
            self.label,
            f"{self.rate:,.0f}",
            f"{p50:.1f}",
            f"{p99:.1f}",
            f"{worst:.0f}",
            str(self.errors),
            f"{lag_max:.2f}",
            f"{settled:.1f}",
        ]


def consumer_lag_s(client: httpx.Client) -> float | None:
    try:
        text = client.get("/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    match = re.search(r"^rtrec_consumer_behind_latest_seconds(?:\{[^}]*\})? ([0-9.eE+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


class LagSampler:
    """Samples the consumer's lag every 0.5 s on a thread of its own."""

    def __init__(self, base: str) -> None:
        self._client = httpx.Client(base_url=base)
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            lag = consumer_lag_s(self._client)
            if lag is not None:
                self.samples.append((time.monotonic(), lag))

    def __enter__(self) -> LagSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()


async def closed_loop(base: str, path_for, seconds: float) -> tuple[list[float], int, float]:
    rng = np.random.default_rng(1)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal errors
            while loop.time() < deadline:
                t0 = time.perf_counter()
                try:
                    response = await client.get(path_for(rng))
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += not ok

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return latencies, errors, loop.time() - start


async def open_loop(base: str, path_for, seconds: float, rate: float) -> tuple[list[float], int, float]:
    """Requests due every 1/rate s, each sent by the next free one of CONCURRENCY connections; latency from due."""
    rng = np.random.default_rng(2)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    total = int(seconds * rate)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30.0) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1
        queue: asyncio.Queue[float | None] = asyncio.Queue()

        async def worker() -> None:
            nonlocal errors
            while (due := await queue.get()) is not None:
                try:
                    response = await client.get(path_for(rng))
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((loop.time() - due) * 1000)
                errors += not ok

        workers = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
        for n in range(total):
            due = start + n / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait(due)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        return latencies, errors, loop.time() - start


WRK_RANDOM_USER = f"""
math.randomseed(7)
request = function() return wrk.format("GET", "/recommend/" .. math.random(1, {N_USERS})) end
"""
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def wrk_closed_loop(base: str, path: str | None, seconds: float) -> tuple[dict[str, float], int]:
    """`wrk` (C, one thread, CONCURRENCY keep-alive connections) as fast as it goes: a load generator that takes
    a fraction of the CPU Python's takes, so on 2 cores the server, not the client, sets the figure. `path` None:
    a random user's /recommend per request (Lua)."""
    script = None
    if path is None:
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text(WRK_RANDOM_USER)
    command = ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{seconds:.0f}s", "--latency", "--timeout", "30s"]
    command += ["-s", str(script)] if script is not None else []
    out = subprocess.run([*command, base + (path or "")], capture_output=True, text=True, check=True).stdout
    if script is not None:
        script.unlink()
    latency = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", out)
    p50, p99 = (re.search(rf"^\s+{q}%\s+(\S+)\s*$", out, re.MULTILINE) for q in (50, 99))
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not (latency and p50 and p99 and rate):
        raise SystemExit(f"could not read wrk's output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|connect|read|write|timeout):? (\d+)", out))
    return {
        "rate": float(rate.group(1)),
        "p50": _ms(p50.group(1)),
        "p99": _ms(p99.group(1)),
        "max": _ms(latency.group(3)),
    }, errors


PROCESS_ROLES = (
    ("consumer_process", "consumer"),
    ("emulator.js dynamodb", "dynalite"),
    ("emulator.js kinesis", "kinesalite"),
    ("emulator.js s3", "s3rver"),
    ("moto", "moto"),
    ("router.js", "router"),
)


def process_tree_cpu(root_pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of `rtrec run` (the API's process) and of each child, by role."""
    found: dict[str, float] = {}
    for pid, (parent, cpu) in process_cpu().items():
        if pid != root_pid and parent != root_pid:
            continue
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        role = "api" if pid == root_pid else next((r for key, r in PROCESS_ROLES if key in command), "other")
        found[role] = found.get(role, 0.0) + cpu
    return found


def measure_wrk(label: str, base: str, path: str | None, seconds: float, after_s: float, root_pid: int | None = None) -> Load:
    load = Load(label)
    with LagSampler(base) as lag:
        cpu_before = process_tree_cpu(root_pid) if root_pid else {}
        started = time.monotonic()
        load.summary, load.errors = wrk_closed_loop(base, path, seconds)
        ended = time.monotonic()
        if root_pid:
            requests = load.summary["rate"] * (ended - started)
            spent = {role: cpu - cpu_before.get(role, 0.0) for role, cpu in process_tree_cpu(root_pid).items()}
            say(
                f"{label}: CPU ms per request: "
                + ", ".join(f"{role} {1000 * cpu / requests:.2f}" for role, cpu in sorted(spent.items(), key=lambda kv: -kv[1]))
                + f"; all {1000 * sum(spent.values()) / requests:.2f}"
            )
        load.seconds = ended - started
        time.sleep(after_s)
    load.lag_during_s = [v for t, v in lag.samples if started <= t <= ended]
    load.lag_after_s = [(t - ended, v) for t, v in lag.samples if t > ended]
    return load


def recommend_path(rng: np.random.Generator) -> str:
    return f"/recommend/{int(rng.integers(1, N_USERS + 1))}"


def measure(label: str, base: str, run, after_s: float) -> Load:
    load = Load(label)
    with LagSampler(base) as lag:
        started = time.monotonic()
        load.latencies_ms, load.errors, load.seconds = asyncio.run(run())
        ended = time.monotonic()
        time.sleep(after_s)
    load.lag_during_s = [v for t, v in lag.samples if started <= t <= ended]
    load.lag_after_s = [(t - ended, v) for t, v in lag.samples if t > ended]
    return load


class Stack:
    """`rtrec run` in a child process with its own state folder and ports."""

    def __init__(self, backend: str, state_dir: Path, cloud_port: int, api_port: int, log: Path, tree: Path = ROOT) -> None:
        self.backend, self.state_dir, self.log, self.tree = backend, state_dir, log, tree
        self.cloud_port, self.api_port = cloud_port, api_port
        self.base = f"http://127.0.0.1:{api_port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RTREC_"))}
        env.update({"RTREC_STATE_DIR": str(self.state_dir), "RTREC_CLOUD_BACKEND": self.backend, "PYTHONUNBUFFERED": "1"})
        if self.tree != ROOT:  # another checkout (the code before a change) run with this venv
            env["PYTHONPATH"] = os.pathsep.join(tree_paths(self.tree))
        started = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                tooling_module(self.tree, "cli"),
                "run",
                "--cloud-port",
                str(self.cloud_port),
                "--api-port",
                str(self.api_port),
                "--bootstrap-epochs",
                "1",
                "--drift-check-seconds",
                "0",
                "--promote-check-seconds",
                "0",
            ],
            env=env,
            cwd=self.tree,
            stdout=self.log.open("a"),
            stderr=subprocess.STDOUT,
        )
        self.wait_for(lambda: httpx.get(f"{self.base}/health").status_code == 200, "the API", 300)
        return time.monotonic() - started

    def wait_for(self, predicate, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise SystemExit(f"rtrec run exited while waiting for {what}:\n{self.log.read_text()[-3000:]}")
            try:
                if predicate():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{what} not ready after {timeout_s:.0f} s:\n{self.log.read_text()[-3000:]}")

    def model_version(self) -> str | None:
        return httpx.get(f"{self.base}/health").json().get("model_version")

    def stop(self) -> float:
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return time.monotonic() - started


def post_backlog(base: str, events: int) -> float:
    """`events` clicks posted as fast as 4 clients go (500 per request); returns the seconds it took."""
    rng = np.random.default_rng(3)
    now = time.time()
    batches = [
        [
            {
                "event_id": f"backlog-{now:.0f}-{b}-{n}",
                "user_id": str(int(rng.integers(1, N_USERS + 1))),
                "item_id": str(int(rng.integers(1, 3884))),
                "type": "click",
                "timestamp": now,
            }
            for n in range(500)
        ]
        for b in range(events // 500)
    ]

    async def send() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            semaphore = asyncio.Semaphore(4)

            async def one(batch: list[dict]) -> None:
                async with semaphore:
                    response = await client.post("/events", json={"events": batch})
                    assert response.status_code == 202, response.text

            await asyncio.gather(*(one(b) for b in batches))

    started = time.monotonic()
    asyncio.run(send())
    return time.monotonic() - started


def bench_backend(args: argparse.Namespace, spec: str, workdir: Path) -> tuple[list[Load], dict[str, float]]:
    """One stack, `LABEL:BACKEND[:TREE]` (TREE: another checkout of the project, e.g. the commit before a change)."""
    from rtrec_local.cloud import free_port

    label, backend, *tree = spec.split(":")
    state_dir = workdir / f"state-{label}"
    stack = Stack(backend, state_dir, free_port(), free_port(), workdir / f"run-{label}.log", Path(tree[0]) if tree else ROOT)
    backend = label
    say(f"{backend}: first start (bootstraps a model when the state folder has none)")
    stack.start()
    stack.wait_for(lambda: stack.model_version() is not None, "a model in production", 900)
    stack.stop()
    say(f"{backend}: start again with the state there")
    times = {"start_s": stack.start()}
    stack.wait_for(lambda: stack.model_version() is not None, "the model", 120)
    times["start_with_model_s"] = times["start_s"]
    loads: list[Load] = []

    def record(load: Load) -> None:
        loads.append(load)
        say(f"measured: {' | '.join(load.row())}")  # printed at once: a later failure keeps it

    try:
        tool = "wrk" if args.wrk else "httpx"
        say(f"{backend}: static route, {CONCURRENCY} clients ({tool}), {args.seconds:.0f} s")
        if args.wrk:
            record(measure_wrk(f"{backend}: GET {STATIC_ROUTE}, closed loop (wrk)", stack.base, STATIC_ROUTE, args.seconds, 0))
        else:
            record(
                measure(
                    f"{backend}: GET {STATIC_ROUTE}, closed loop",
                    stack.base,
                    lambda: closed_loop(stack.base, lambda _: STATIC_ROUTE, args.seconds),
                    0,
                )
            )
        say(f"{backend}: GET /recommend, {CONCURRENCY} clients as fast as they go ({tool}), {args.seconds:.0f} s")
        if args.wrk:
            record(
                measure_wrk(
                    f"{backend}: GET /recommend, closed loop (wrk)",
                    stack.base,
                    None,
                    args.seconds,
                    args.after,
                    root_pid=stack.process.pid if stack.process else None,
                )
            )
        else:
            record(
                measure(
                    f"{backend}: GET /recommend, closed loop",
                    stack.base,
                    lambda: closed_loop(stack.base, recommend_path, args.seconds),
                    args.after,
                )
            )
        say(f"{backend}: GET /recommend, open loop at {args.rate:.0f} req/s, {args.seconds:.0f} s")
        record(
            measure(
                f"{backend}: GET /recommend, open loop {args.rate:.0f}/s",
                stack.base,
                lambda: open_loop(stack.base, recommend_path, args.seconds, args.rate),
                args.after,
            )
        )
        for rate in args.paced:
            stack.wait_for(lambda: (consumer_lag_s(httpx.Client(base_url=stack.base)) or 0.0) < 0.5, "the stream drained", 120)
            say(f"{backend}: GET /recommend, open loop at {rate:g} req/s, {args.seconds:.0f} s")
            record(
                measure(
                    f"{backend}: GET /recommend, open loop {rate:g}/s",
                    stack.base,
                    lambda rate=rate: open_loop(stack.base, recommend_path, args.seconds, rate),
                    args.after,
                )
            )
        say(f"{backend}: {args.backlog:,} events posted, then Ctrl-C")
        times["backlog_post_s"] = post_backlog(stack.base, args.backlog)
    finally:
        times["stop_s"] = stack.stop()
    drained = re.findall(r"drained in ([0-9.]+) s|stopped draining after ([0-9.]+) s", stack.log.read_text())
    if drained:
        times["drain_s"] = float(next(v for v in drained[-1] if v))
    return loads, times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--stack",
        action="append",
        help="LABEL:BACKEND[:TREE], repeatable (default: "
        "durable:durable and moto:moto); TREE runs another checkout, e.g. the code before a change",
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument(
        "--paced",
        type=float,
        action="append",
        default=[],
        help="also an open loop at this rate, once the stream has drained (repeatable)",
    )
    parser.add_argument("--after", type=float, default=6.0, help="seconds of lag sampling after each load")
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".rtrec-bench" / "make-run")
    parser.add_argument(
        "--wrk",
        action=argparse.BooleanOptionalAction,
        default=shutil.which("wrk") is not None,
        help="closed loops with wrk (apt-get install wrk; the default when it is there): Python's "
        "client tops out near 200 req/s on 2 cores, wrk measured the static floor at 1,400",
    )
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(machine(with_load=True))
    stacks = args.stack or ["durable:durable", "moto:moto"]
    results = {spec.split(":")[0]: bench_backend(args, spec, args.workdir) for spec in stacks}
    header = ["load", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "lag max s", "lag < 0.5 s after (s)"]
    print(table(header, [load.row() for loads, _ in results.values() for load in loads]))
    for backend, (loads, times) in results.items():
        floor, closed = loads[0].rate, loads[1].rate
        print(
            f"{backend}: /recommend closed loop at {closed / floor:.2f}x the static floor; "
            + ", ".join(f"{k} {v:.1f}" for k, v in times.items())
        )


if __name__ == "__main__":
    main()
