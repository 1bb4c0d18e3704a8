"""One in-process synth of the whole CDK app, shared by the template tests; one deployment of it (CDK CLI) to a
fresh embedded cloud, shared by the deployment tests.

The runtime layer is a stand-in folder here: its real contents come from `make layers` (pip, Linux wheels) and
only change the layer's asset hash, which no test reads; tests/infra/test_layers.py checks the real one.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = ROOT / "infra_cdk"
for path in (ROOT / "layers" / "core", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# jsii prints a banner for every Node release it no longer supports; the tests do not need it.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,19,20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "18,19,20")

STACKS = ("Data", "Search", "Streaming", "Serving", "Training", "Drift", "Monitoring")


@pytest.fixture(scope="session")
def runtime_layer_stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runtime-layer")
    (folder / "python").mkdir()
    (folder / "python" / "README.txt").write_text("stand-in for the runtime layer in synth tests (`make layers` builds it)\n")
    return folder


@dataclass
class Synth:
    """The synthesized app: templates by construct id, the CDK stacks, the build folder of the core layer."""

    templates: dict[str, dict[str, Any]]
    stacks: Any
    core_layer_dir: Path
    error: str | None = None

    def template(self, stack: str) -> dict[str, Any]:
        if self.error is not None:
            pytest.fail(f"synth failed: {self.error[:2000]}")
        return self.templates[stack]

    def resources(self, stack: str, kind: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.template(stack)["Resources"].items() if r["Type"] == kind}

    def all_resources(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for stack in self.templates:
            for logical_id, resource in self.template(stack)["Resources"].items():
                yield stack, logical_id, resource


@pytest.fixture(scope="session")
def synth(runtime_layer_stand_in: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """Every stack, every option on (search domain, MLflow tracking server), cdk-nag's AwsSolutions checks on."""
    import aws_cdk as cdk

    from infra_cdk.config import InfraConfig, cdk_json_context
    from infra_cdk.stacks import build_stacks

    out = tmp_path_factory.mktemp("cdk.out")
    core = tmp_path_factory.mktemp("layers") / "core"
    context = {
        **cdk_json_context(),
        "runtime_layer_dir": str(runtime_layer_stand_in),
        "core_layer_dir": str(core),
        "mlflow_tracking_server": True,
        "search": True,
    }
    app = cdk.App(context=context, outdir=str(out))
    stacks = build_stacks(app, InfraConfig.from_context(app.node.try_get_context))
    try:
        app.synth()
    except RuntimeError as exc:  # cdk-nag's findings fail synth; the report says which
        report = out / "validation-report.json"
        detail = report.read_text() if report.exists() else str(exc)
        return Synth({}, stacks, core, error=detail)
    templates = {name: json.loads((out / f"{name}.template.json").read_text()) for name in STACKS}
    return Synth(templates, stacks, core)
