"""The CDK app: `cdk synth` / `cdk deploy` run this file (see cdk.json). Settings come from CDK context
(`infra_cdk/config.py`); the stacks are in `infra_cdk/stacks/`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The CDK app imports the core package (`rtrec.resources`: the one definition of every name) and itself.
for path in (ROOT / "layers" / "core", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import aws_cdk as cdk  # noqa: E402

from infra_cdk.config import InfraConfig  # noqa: E402
from infra_cdk.stacks import build_stacks  # noqa: E402


def main() -> None:
    app = cdk.App()
    config = InfraConfig.from_context(app.node.try_get_context)
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    env = cdk.Environment(account=account, region=region) if account and region else None
    build_stacks(app, config, env=env, nag=config_flag(app, "nag", default=True))
    app.synth()


def config_flag(app: cdk.App, key: str, *, default: bool) -> bool:
    value = app.node.try_get_context(key)
    return default if value is None else str(value).lower() in ("true", "1", "yes")


if __name__ == "__main__":
    main()
