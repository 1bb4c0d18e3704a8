"""Drift detection (issue 7): how often the reward detectors cry wolf, how late they notice a real drop, and what the
statistics of `rtrec.domain.drift` cost.

(a) False alarms: each detector (defaults; PH and ADWIN watching for a drop, and both two-sided) over `--seeds`
    stationary Bernoulli streams of `--stationary` points at the click rate `--rate` (and at 0.3, where the
    Page-Hinkley threshold, which is in the reward's units, needs scaling: the default and lambda 90 side by side).
(b) Detection delay: streams at `--rate` for `--change-at` points, then at the rate minus each of `--drops`; the
    delay is the number of points after the change until the first signal; "missed" if none within `--horizon`
    points; signals before the change count as false alarms.
(c) Cost: microseconds per update of each detector (Python loop over floats), its state as JSON (size, round trip),
    and `feature_drift` on samples of `--rows` rows a side (numeric, categorical, 64-d embedding, all together).

    .venv/bin/python tests/bench/bench_drift.py [--seeds 50] [--stationary 100000] [--rows 100000]

Nothing asserts; pytest does not collect this file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
from benchkit import machine, progress, table

from rtrec.domain.drift import (
    Adwin,
    DriftThresholds,
    PageHinkley,
    category_counts,
    chi_square_test,
    embedding_drift,
    feature_drift,
    js_divergence,
    ks_two_sample,
    psi,
)

Detector = PageHinkley | Adwin

DETECTORS: dict[str, Callable[[], Detector]] = {
    "Page-Hinkley, drop (delta 0.01, lambda 40)": lambda: PageHinkley(direction="down"),
    "Page-Hinkley, two-sided": lambda: PageHinkley(direction="both"),
    "ADWIN, drop (delta 0.002, clock 32)": lambda: Adwin(direction="down"),
    "ADWIN, two-sided": lambda: Adwin(direction="both"),
}


def stream(seed: int, parts: list[tuple[float, int]]) -> list[float]:
    rng = np.random.default_rng(seed)
    return np.concatenate([(rng.random(n) < p).astype(float) for p, n in parts]).tolist()


def false_alarms(args: argparse.Namespace) -> None:
    print(f"## (a) False alarms on stationary streams ({args.seeds} seeds x {args.stationary:,} points)\n")
    arms = dict(DETECTORS)
    arms["Page-Hinkley, drop, lambda 90 (scaled for rate 0.3)"] = lambda: PageHinkley(threshold=90.0, direction="down")
    rows = []
    for rate in (args.rate, 0.3):
        streams = [stream(1_000 + seed, [(rate, args.stationary)]) for seed in range(args.seeds)]
        for name, make in arms.items():
            if "scaled" in name and rate == args.rate:
                continue
            alarms, seeds_with_alarm = 0, 0
            for values in streams:
                found = len(make().update_many(values))
                alarms += found
                seeds_with_alarm += found > 0
            total = args.seeds * args.stationary
            rows.append([f"{rate:g}", name, f"{alarms}", f"{seeds_with_alarm}/{args.seeds}", f"{alarms / total * 1e6:.2f}"])
        progress(f"false alarms at rate {rate:g} done")
    print(table(["rate", "detector", "false alarms", "streams with one", "per 1M points"], rows, "llrrr") + "\n")


def delays(args: argparse.Namespace) -> None:
    print(
        f"## (b) Detection delay after a drop at point {args.change_at:,} from rate {args.rate:g} "
        f"({args.seeds} seeds, horizon {args.horizon:,} points)\n"
    )
    rows = []
    for drop in args.drops:
        after = args.rate - drop
        streams = [stream(2_000 + seed, [(args.rate, args.change_at), (after, args.horizon)]) for seed in range(args.seeds)]
        for name, make in DETECTORS.items():
            found, missed, early = [], 0, 0
            for values in streams:
                changes = make().update_many(values)
                early += sum(1 for i in changes if i < args.change_at)
                late = [i for i in changes if i >= args.change_at]
                if late:
                    found.append(late[0] - args.change_at + 1)
                else:
                    missed += 1
            cells = ["-", "-", "-", "-"]
            if found:
                cells = [f"{np.percentile(found, q):,.0f}" for q in (10, 50, 90)] + [f"{max(found):,}"]
            rows.append([f"{args.rate:g} -> {after:g}", name, *cells, f"{missed}", f"{early}"])
        progress(f"delays for a drop of {drop:g} done")
    print(
        table(
            ["rates", "detector", "delay p10", "median", "p90", "max", "missed", "alarms before the change"], rows, "llrrrrrr"
        )
        + "\n"
    )


def best_of(repeat: int, run: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def costs(args: argparse.Namespace) -> None:
    print("## (c) Cost\n")
    values = stream(3, [(args.rate, 200_000)])
    rows = []
    for name, make in DETECTORS.items():

        def loop(make: Callable[[], Detector] = make) -> None:
            detector = make()
            update = detector.update
            for x in values:
                update(x)

        seconds = best_of(3, loop)
        detector = make()
        detector.update_many(values)
        state = json.dumps(detector.to_dict())
        round_trip = best_of(20, lambda detector=detector: type(detector).from_dict(json.loads(json.dumps(detector.to_dict()))))
        extra = f", {detector.n_buckets} buckets for a window of {detector.width:,}" if isinstance(detector, Adwin) else ""
        rows.append([name, f"{seconds / len(values) * 1e6:.2f}", f"{len(state):,} bytes{extra}", f"{round_trip * 1e6:.0f}"])
    print(f"Detectors, {len(values):,} updates at rate {args.rate:g} (best of 3):\n")
    print(table(["detector", "us / update", "state as JSON", "JSON round trip (us)"], rows) + "\n")
    progress("detector costs done")

    rng = np.random.default_rng(4)
    n = args.rows
    genres = np.array(
        [
            "drama",
            "comedy",
            "action",
            "thriller",
            "romance",
            "horror",
            "sci-fi",
            "children",
            "crime",
            "war",
            "musical",
            "documentary",
            "animation",
            "western",
            "fantasy",
            "mystery",
            "film-noir",
            "adventure",
        ]
    )
    shares = rng.dirichlet(np.ones(genres.size) * 2)
    reference = {
        "age": rng.normal(35, 10, n),
        "score": rng.beta(2, 5, n),
        "genre": category_counts(rng.choice(genres, n, p=shares)),
        "user_embedding": rng.normal(size=(n, 64)).astype(np.float32),
    }
    live = {
        "age": rng.normal(36, 10, n),
        "score": rng.beta(2, 5, n),
        "genre": category_counts(rng.choice(genres, n, p=shares)),
        "user_embedding": rng.normal(size=(n, 64)).astype(np.float32),
    }
    labels_ref, labels_live = rng.choice(genres, n, p=shares), rng.choice(genres, n, p=shares)
    limits = DriftThresholds()
    parts: list[tuple[str, Callable[[], object]]] = [
        ("PSI, 10 quantile bins", lambda: psi(reference["age"], live["age"])),
        ("KS two-sample (statistic + p-value)", lambda: ks_two_sample(reference["age"], live["age"])),
        ("numeric feature in feature_drift (PSI + KS)", lambda: feature_drift({"age": reference["age"]}, {"age": live["age"]})),
        (
            "chi-square + JS on 18 genre counts",
            lambda: (chi_square_test(reference["genre"], live["genre"]), js_divergence(reference["genre"], live["genre"])),
        ),
        (
            "categorical from raw labels (counting included)",
            lambda: feature_drift({"genre": labels_ref}, {"genre": labels_live}),
        ),
        (
            f"embedding, 64-d, MMD on {limits.embedding_max_samples} a side, {limits.mmd_permutations} permutations",
            lambda: embedding_drift(
                reference["user_embedding"], live["user_embedding"], limits.embedding_max_samples, limits.mmd_permutations
            ),
        ),
        ("feature_drift, all four features (2 numeric, counts, embedding)", lambda: feature_drift(reference, live)),
    ]
    rows = []
    for name, run in parts:
        run()
        samples = [best_of(1, run) for _ in range(5)]
        rows.append([name, f"{statistics.median(samples) * 1e3:.1f}", f"{min(samples) * 1e3:.1f}"])
    print(f"Statistics on {n:,} rows a side (median and best of 5, after one warm-up):\n")
    print(table(["statistic", "ms (median)", "ms (best)"], rows) + "\n")
    report = feature_drift(reference, live)
    print(
        "Report on that sample (age moved by 0.1 sd): "
        + "; ".join(f"{f.name} drifted={f.drifted}" for f in report.features)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--stationary", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=0.10)
    parser.add_argument(
        "--drops", type=lambda text: [float(x) for x in text.split(",")], default=[0.01, 0.02, 0.03, 0.05, 0.08]
    )
    parser.add_argument("--change-at", type=int, default=5_000)
    parser.add_argument("--horizon", type=int, default=30_000)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    print(f"# Drift detection\n\n{machine(with_load=True)}\n", flush=True)
    started = time.perf_counter()
    false_alarms(args)
    delays(args)
    costs(args)
    print(f"Whole run: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
