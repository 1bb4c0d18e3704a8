"""Training benchmark: wall time per epoch and in total, peak memory, and the quality table on ML-1M.

    .venv/bin/python tests/bench/bench_training.py [--dataset ml-1m] [--protocols recbole,temporal]

Prints the figures; record them in tests/bench/RESULTS.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from benchkit import machine

from training.report import quality_table
from training.train import TrainConfig, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-1m", choices=["ml-1m", "ml-100k"])
    parser.add_argument("--protocols", default="recbole,temporal")
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            dataset=args.dataset, output_dir=Path(tmp), epochs=args.epochs, protocols=tuple(args.protocols.split(","))
        )  # type: ignore[arg-type]
        started = time.monotonic()
        result = train(config, progress=lambda line: print(line, flush=True))
        wall = time.monotonic() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nmachine: {machine()}; torch threads {config.threads}; date {time.strftime('%Y-%m-%d')}")
    for protocol in config.protocols:
        epochs = [h for h in result.history if f"{protocol}.seconds" in h]
        print(
            f"{protocol}: {len(epochs)} epochs, {result.metrics[f'{protocol}.seconds_per_epoch']:.1f} s/epoch "
            f"(best epoch {int(result.metrics[f'{protocol}.best_epoch'])})"
        )
    print(f"total wall time {wall / 60:.1f} min (train() reports {result.seconds / 60:.1f} min); peak RSS {peak_mib:,.0f} MiB")
    print(quality_table(result.metrics, args.dataset))


if __name__ == "__main__":
    main()
