"""The floor under `GET /recommend`: what one interpreter serving one profile read per request can do on this
machine, before it recommends anything.

Starts the durable embedded cloud (dynalite for DynamoDB) with 6,040 synthetic profiles of ML-1M's shape (a
100-item history, demographics, the consumer's bookkeeping), then a FastAPI app under uvicorn (httptools, uvloop,
as `rtrec run` serves) with two routes, each loaded by wrk (16 keep-alive connections, random users, `--seconds`):

- `/static/{user_id}`: a sync route that answers a constant (FastAPI, uvicorn and the thread-pool hop);
- `/profile/{user_id}`: a sync route that reads the profile with the real adapter (`DynamoFeatureStore.get_user`:
  botocore's GetItem, SigV4, the attribute map decoded) and answers one field of it.

Prints req/s, p50/p99 and the CPU milliseconds per request of the app's process and of dynalite. The gap between
`/profile` and the API's own CPU per request in `bench_make_run.py` is what the API adds on top of the floor.

    .venv/bin/python tests/bench/bench_api_floor.py [--seconds 20]

Needs wrk. Not collected by pytest. Figures go to tests/bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchkit import CORE, ROOT, machine, process_cpu

from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.domain.models import UserProfile
from rtrec.resources import ITEM_FEATURES, USER_FEATURES, ResourceNames

NAMES = ResourceNames(prefix="floor")
N_USERS = 6040
CONCURRENCY = 16
ENDPOINT_ENV = "RTREC_FLOOR_DYNAMODB"


def profiles() -> list[UserProfile]:
    """ML-1M-shaped profiles: 100 items of history, demographics, a shard watermark."""
    return [
        UserProfile(
            user_id=str(u),
            age=25,
            gender="F",
            occupation="10",
            zip_prefix="48",
            history=tuple(str(1 + (u * 7 + j * 13) % 3706) for j in range(100)),
            interaction_count=100,
            last_seen=1_764_806_400,
            applied_through=(("rtrec-events-shardId-000000000000", 10**20 + u),),
        )
        for u in range(1, N_USERS + 1)
    ]


def store(endpoint: str) -> DynamoFeatureStore:
    return DynamoFeatureStore(NAMES.table(USER_FEATURES), NAMES.table(ITEM_FEATURES), endpoint_url=endpoint)


def create_app() -> Any:
    """The app uvicorn serves (`bench_api_floor:app` in its own process)."""
    from fastapi import FastAPI

    features = store(os.environ[ENDPOINT_ENV])
    app = FastAPI()

    @app.get("/static/{user_id}")
    def static(user_id: str) -> dict[str, Any]:
        return {"user_id": user_id}

    @app.get("/profile/{user_id}")
    def profile(user_id: str) -> dict[str, Any]:
        found = features.get_user(user_id)
        return {"user_id": user_id, "history": len(found.history) if found else 0}

    return app


app = create_app() if ENDPOINT_ENV in os.environ else None


def wrk(base: str, route: str, seconds: float) -> tuple[float, str, str]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f'math.randomseed(7)\nrequest = function() return wrk.format("GET", "{route}" .. math.random(1, {N_USERS})) end\n'
    )
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{CONCURRENCY}", f"-d{seconds:.0f}s", "--latency", "-s", str(script), base],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        script.unlink()
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    p50, p99 = (re.search(rf"^\s+{q}%\s+(\S+)\s*$", out, re.MULTILINE) for q in (50, 99))
    if not (rate and p50 and p99):
        raise SystemExit(f"could not read wrk's output:\n{out}")
    return float(rate.group(1)), p50.group(1), p99.group(1)


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    table = process_cpu()
    return {role: table.get(pid, (0, 0.0))[1] for role, pid in pids.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8299)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install wrk)")
    print(machine(), flush=True)

    from rtrec_local.cloud import EmbeddedCloud
    from rtrec_local.state import LocalState

    with tempfile.TemporaryDirectory() as folder:
        cloud = EmbeddedCloud(port=0, names=NAMES, state=LocalState(Path(folder)), backend="durable", log_line=lambda _: None)
        cloud.start()
        server = None
        try:
            endpoint = cloud.service_endpoints["dynamodb"]
            written = store(endpoint).put_users(profiles())
            print(f"{written:,} profiles written to dynalite at {endpoint}", flush=True)
            env = {
                **os.environ,
                ENDPOINT_ENV: endpoint,
                "PYTHONPATH": os.pathsep.join([str(CORE), str(ROOT), str(Path(__file__).parent)]),
            }
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench_api_floor:app",
                    "--port",
                    str(args.port),
                    "--http",
                    "httptools",
                    "--loop",
                    "uvloop",
                    "--log-level",
                    "warning",
                ],
                env=env,
            )
            base = f"http://127.0.0.1:{args.port}"
            for _ in range(100):
                if subprocess.run(["curl", "-sf", f"{base}/static/1"], capture_output=True).returncode == 0:
                    break
                time.sleep(0.2)
            dynalite = next(
                pid
                for pid, (parent, _) in process_cpu().items()
                if parent == os.getpid() and b"dynamodb" in Path(f"/proc/{pid}/cmdline").read_bytes()
            )
            pids = {"app": server.pid, "dynalite": dynalite}
            print("route | req/s | p50 | p99 | app CPU ms/request | dynalite CPU ms/request", flush=True)
            for route in ("/static/", "/profile/"):
                wrk(base, route, 3)  # warm up
                before = cpu_of(pids)
                started = time.monotonic()
                rate, p50, p99 = wrk(base, route, args.seconds)
                requests = rate * (time.monotonic() - started)
                spent = {role: 1000 * (cpu - before[role]) / requests for role, cpu in cpu_of(pids).items()}
                print(
                    f"{route}{{user}} | {rate:,.0f} | {p50} | {p99} | {spent['app']:.2f} | {spent['dynalite']:.2f}", flush=True
                )
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=10)
            cloud.stop()


if __name__ == "__main__":
    main()
