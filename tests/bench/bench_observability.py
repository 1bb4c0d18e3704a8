"""What per-request observability costs the API: the ASGI middleware (request id, log context, latency) and the
metrics it and the recommend route emit, with no metrics sink, the Prometheus registry (local) and Powertools EMF
(Lambda, one EMF flush per request as `log_metrics` does per invocation).

The app is called in-process over ASGI (no HTTP server, no client), GET /recommend/{user} over the unit tests'
serving world (fake towers, FAISS, in-memory features), so the difference between configurations is the
observability code and not the network. Configurations are interleaved over rounds; medians are reported.

    .venv/bin/python tests/bench/bench_observability.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import statistics
import time

from benchkit import table

from functions.api.app import Services, create_app
from functions.api.observability import ObservabilityMiddleware
from rtrec.adapters.aws.powertools import lambda_observability
from rtrec.adapters.prometheus import PrometheusMetrics
from rtrec.monitoring.catalog import API_SERVICE
from rtrec.monitoring.telemetry import NO_TELEMETRY, Telemetry
from tests.unit.serving_world import make_world


def build(kind: str):
    world = make_world()
    services = Services(world.recommender(), catalog=None)  # type: ignore[arg-type]
    flush = None
    if kind == "prometheus":
        telemetry = Telemetry(PrometheusMetrics())
    elif kind == "emf":
        observability = lambda_observability(API_SERVICE, "rtrec-bench", tracing=False)
        telemetry = observability.telemetry
        flush = lambda: (observability.metrics.flush_metrics(), observability.emf.flush())  # noqa: E731
    else:
        telemetry = NO_TELEMETRY
    app = create_app(services, telemetry=telemetry)
    if kind == "baseline":  # the app as it was before: no observability middleware
        app.user_middleware = [m for m in app.user_middleware if m.cls is not ObservabilityMiddleware]
    return app, flush


async def call(app, path: str) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"k=10",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    status = 0

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def run(app, flush, requests: int) -> float:
    """Microseconds per request."""

    async def loop() -> float:
        users = ["u1", "cold", "empty", "stranger"]
        for n in range(50):  # warm-up
            await call(app, f"/recommend/{users[n % 4]}")
        started = time.perf_counter()
        for n in range(requests):
            assert await call(app, f"/recommend/{users[n % 4]}") == 200
            if flush is not None:
                flush()
        return (time.perf_counter() - started) / requests * 1e6

    with contextlib.redirect_stdout(io.StringIO()):  # the JSON logs and EMF lines, as Lambda's stdout would take them
        return asyncio.run(loop())


def isolated(requests: int, rounds: int) -> None:
    """The middleware alone around a bare ASGI app that answers 200 at once: what it adds to every request, free of
    the recommend path's own variance (which is larger than the middleware on a loaded 2-core machine)."""
    import logging

    from aws_lambda_powertools import Logger

    async def bare(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    logger = Logger(service="rtrec-bench")
    logging.getLogger("rtrec-bench").setLevel(logging.WARNING)
    apps = {
        "bare app": bare,
        "+ middleware, no sink": ObservabilityMiddleware(
            bare, telemetry=NO_TELEMETRY, logger=logger, model_version=lambda: "3"
        ),
        "+ middleware, Prometheus": ObservabilityMiddleware(
            bare, telemetry=Telemetry(PrometheusMetrics()), logger=logger, model_version=lambda: "3"
        ),
    }
    emf = lambda_observability(API_SERVICE, "rtrec-bench", tracing=False)
    apps["+ middleware, EMF (+ flush)"] = ObservabilityMiddleware(
        bare, telemetry=emf.telemetry, logger=logger, model_version=lambda: "3"
    )
    flushes = {"+ middleware, EMF (+ flush)": lambda: (emf.metrics.flush_metrics(), emf.emf.flush())}

    async def loop(app, flush) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await call(app, "/recommend/u1")
            if flush is not None:
                flush()
        return (time.perf_counter() - started) / requests * 1e6

    results: dict[str, list[float]] = {name: [] for name in apps}
    with contextlib.redirect_stdout(io.StringIO()):
        for _ in range(rounds):
            for name, app in apps.items():
                results[name].append(asyncio.run(loop(app, flushes.get(name))))
    base = statistics.median(results["bare app"])
    print(f"\nthe middleware alone, {requests} requests x {rounds} rounds (median):")
    print(
        table(
            ["configuration", "us/request", "added"],
            [
                [name, f"{statistics.median(values):.1f}", f"{statistics.median(values) - base:+.1f} us"]
                for name, values in results.items()
            ],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import logging

    logging.getLogger(API_SERVICE).setLevel(logging.WARNING)  # the per-request impression line is measured apart
    kinds = ("baseline", "middleware", "prometheus", "emf")
    apps = {kind: build(kind) for kind in kinds}
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            results[kind].append(run(*apps[kind], args.requests))
    base = statistics.median(results["baseline"])
    print(f"GET /recommend in-process over ASGI, {args.requests} requests x {args.rounds} rounds (median):")
    medians = {kind: statistics.median(results[kind]) for kind in kinds}
    print(
        table(
            ["configuration", "us/request", "overhead"],
            [[kind, f"{value:.1f}", f"{value - base:+.1f} us"] for kind, value in medians.items()],
        )
    )

    isolated(args.requests * 10, args.rounds)

    sink_calls = {
        "prometheus": Telemetry(PrometheusMetrics()),
        "emf": lambda_observability(API_SERVICE, "rtrec-bench", tracing=False).telemetry,
    }
    for name, telemetry in sink_calls.items():
        with contextlib.redirect_stdout(io.StringIO()):
            started = time.perf_counter()
            for _ in range(args.requests):
                telemetry.request("/recommend/{user_id}", 200, 0.004)
                telemetry.recommendation("two_tower", False, "3", True)
            per = (time.perf_counter() - started) / args.requests * 1e6
        print(f"telemetry calls alone ({name}): {per:.1f} us per request (8 metrics)")


if __name__ == "__main__":
    main()
