"""The API against its OpenAPI document, longer than the unit test (issue 17): Schemathesis with all its checks,
`--examples` per operation (default 500) and each `--seed` (default 1 and 2), over the same app as
tests/unit/test_api_schemathesis.py. Prints the cases run and the failures found per seed; nothing is timed.

    .venv/bin/python tests/bench/bench_api_contract.py
    .venv/bin/python tests/bench/bench_api_contract.py --examples 2000 --seed 7
"""

from __future__ import annotations

import argparse
import os
import time

import pytest
from benchkit import ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--seed", type=int, action="append")
    args = parser.parse_args(argv)
    worst = 0
    for seed in args.seed or [1, 2]:
        os.environ["RTREC_CONTRACT_EXAMPLES"] = str(args.examples)  # read by this file's test below
        started = time.monotonic()
        code = pytest.main(
            [__file__, "-q", "-p", "no:cacheprovider", f"--hypothesis-seed={seed}", "-o", "addopts=", "--rootdir", str(ROOT)]
        )
        print(
            f"seed {seed}: {args.examples} examples per operation, pytest exit {code} "
            f"({'no failures' if code == 0 else 'failures above'}), {time.monotonic() - started:.0f} s",
            flush=True,
        )
        worst = max(worst, int(code))
    return worst


if os.environ.get("RTREC_CONTRACT_EXAMPLES"):  # collected by the pytest.main above, never by the suite
    from hypothesis import HealthCheck, settings

    from tests.unit.test_api_schemathesis import schema, validate

    @schema.parametrize()
    @settings(max_examples=int(os.environ["RTREC_CONTRACT_EXAMPLES"]), deadline=None, suppress_health_check=list(HealthCheck))
    def test_contract(case):
        validate(case)


if __name__ == "__main__":
    raise SystemExit(main())
