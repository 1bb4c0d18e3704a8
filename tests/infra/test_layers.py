"""The Lambda layers: how the runtime layer is built, and the built one (`make layers`) against Lambda's 250 MB
unzipped budget, without torch, and importable by the handlers on Lambda's Python (3.12)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from infra_cdk.layers import (
    DEFAULT_BUILD_DIR,
    FORBIDDEN_PACKAGES,
    LAMBDA_PYTHON,
    LAMBDA_UNZIPPED_LIMIT,
    RUNTIME_PROVIDED,
    RUNTIME_REQUIREMENTS,
    build_core_layer,
    forbidden_packages,
    function_bundle_size,
    lambda_core_modules,
    runtime_layer_command,
)

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = DEFAULT_BUILD_DIR / "runtime"
built = pytest.mark.skipif(not (RUNTIME / "python").is_dir(), reason="the runtime layer is not built: `make layers`")


def requirements() -> list[str]:
    return [
        line.split("==")[0].strip()
        for line in RUNTIME_REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_runtime_layer_is_built_from_linux_wheels_for_lambdas_python(tmp_path):
    command = runtime_layer_command(tmp_path, architecture="arm64")
    assert command[command.index("--python-version") + 1] == LAMBDA_PYTHON == "3.12"
    assert "--only-binary=:all:" in command
    assert str(RUNTIME_REQUIREMENTS) in command
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    # numpy 2.4 and onnxruntime 1.32 are manylinux_2_27/2_28 wheels; Amazon Linux 2023 has glibc 2.34.
    assert {"manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"} <= set(platforms)
    assert not any("2_35" in p for p in platforms)


def test_no_requirement_of_the_runtime_layer_is_torch_or_mlflow():
    assert requirements()
    assert not set(requirements()) & {"torch", "mlflow", "onnx", "onnxscript"}


def test_core_layer_build_replaces_stale_files(tmp_path):
    stale = tmp_path / "python" / "rtrec" / "gone.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("x = 1\n")
    build_core_layer(tmp_path)
    assert not stale.exists()
    assert (tmp_path / "python" / "rtrec" / "resources.py").is_file()


# Tooling no Lambda imports, within rtrec: the data-set loaders, the report, the unit tests' fakes, the MLflow and
# Prometheus adapters. The CLI and the embedded cloud are a package of their own (rtrec_local), never shipped.
NOT_FOR_LAMBDA = (
    "data",
    "monitoring/report.py",
    "adapters/memory",
    "adapters/mlflow",
    "adapters/prometheus",
    "monitoring/grafana",
)
NOT_IN_THE_LAYER = {"rtrec_local", "cli", "cli.py", "local", "training", "functions"}  # at any depth


def test_the_core_layer_holds_what_the_lambdas_import_and_no_tooling(tmp_path):
    layer = build_core_layer(tmp_path) / "python"
    root = layer / "rtrec"
    shipped = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    held = sorted(name for name in NOT_FOR_LAMBDA if (root / name).exists())
    assert held == [], f"the core layer ships tooling: {held}"
    assert sorted(p.name for p in layer.iterdir()) == ["rtrec"]
    tooling = sorted(p.relative_to(layer).as_posix() for p in layer.rglob("*") if p.name in NOT_IN_THE_LAYER)
    assert tooling == [], f"the core layer ships the CLI, the local cloud or training: {tooling}"
    # What each handler's module needs is there: its package, the services it wires, the adapters it builds.
    for needed in (
        "__init__.py",
        "settings.py",
        "services/recommend.py",
        "services/stream.py",
        "services/drift.py",
        "adapters/aws/dynamo.py",
        "adapters/aws/kinesis_producer.py",
        "adapters/model/onnx_towers.py",
        "adapters/search/faiss_index.py",
        "domain/__init__.py",
        "adapters/__init__.py",
    ):
        assert needed in shipped, needed
    assert shipped == {p.as_posix() for p in lambda_core_modules()}


def test_a_module_only_a_lambda_imports_lazily_is_shipped_and_an_unused_one_is_not(tmp_path):
    core = tmp_path / "rtrec"
    for name, body in {
        "__init__.py": "",
        "used.py": "from rtrec.sub import leaf\n",
        "sub/__init__.py": "",
        "sub/leaf.py": "import rtrec.deep.inner\n",
        "deep/__init__.py": "",
        "deep/inner.py": "",
        "tool.py": "import rtrec.used\n",
    }.items():
        (core / name).parent.mkdir(parents=True, exist_ok=True)
        (core / name).write_text(body)
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "handler.py").write_text("def handle():\n    from rtrec import used\n    return used\n")
    assert [p.as_posix() for p in lambda_core_modules(functions, core)] == [
        "__init__.py",
        "deep/__init__.py",
        "deep/inner.py",
        "sub/__init__.py",
        "sub/leaf.py",
        "used.py",
    ]


@built
def test_built_layers_fit_lambdas_unzipped_budget_without_torch(tmp_path):
    core = build_core_layer(tmp_path / "core")  # not the shared build folder: another run may be rebuilding it
    sizes = function_bundle_size(core, RUNTIME)
    total = sum(sizes.values())
    print(
        f"unzipped: code {sizes['code'] / 1e6:.1f} MB, core {sizes['core'] / 1e6:.1f} MB, "
        f"runtime {sizes['runtime'] / 1e6:.1f} MB, total {total / 1e6:.1f} MB of {LAMBDA_UNZIPPED_LIMIT / 1e6:.0f} MB"
    )
    assert total < LAMBDA_UNZIPPED_LIMIT
    assert forbidden_packages(RUNTIME) == []
    assert forbidden_packages(core) == []
    assert not (RUNTIME / "python" / "torch").exists()
    assert FORBIDDEN_PACKAGES[0] == "torch"


@built
def test_built_runtime_layer_holds_every_requirement_and_not_the_sdk():
    installed = {re.sub(r"[-_.]+", "-", p.name.split("-")[0]).lower() for p in (RUNTIME / "python").glob("*.dist-info")}
    missing = {r for r in requirements() if re.sub(r"[-_.]+", "-", r).lower() not in installed}
    assert missing == set(), f"rebuild with `make layers`: {missing}"
    assert not any((RUNTIME / "python" / name).exists() for name in RUNTIME_PROVIDED)


def _lambda_python() -> str | None:
    """A CPython 3.12: RTREC_LAMBDA_PYTHON, python3.12 on PATH, or a pyenv-installed one."""
    candidates = [
        os.environ.get("RTREC_LAMBDA_PYTHON"),
        shutil.which(f"python{LAMBDA_PYTHON}"),
        *sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{LAMBDA_PYTHON}.*/bin/python{LAMBDA_PYTHON}")),
    ]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 12)":
            return candidate
    return None


def _run_on_lambda_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`code` under Python 3.12 with what Lambda puts on sys.path: the function code, both layers, and the AWS SDK
    the runtime provides (here the venv's boto3/botocore/s3transfer, pure Python)."""
    python = _lambda_python()
    if python is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"needs python{LAMBDA_PYTHON} on an x86_64 machine (the layer is built for x86_64)")
    sdk = tmp_path / "runtime-sdk"
    sdk.mkdir()
    site = Path(__import__("botocore").__file__).resolve().parents[1]
    for name in RUNTIME_PROVIDED:
        (sdk / name).symlink_to(site / name)
    core = build_core_layer(tmp_path / "core")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "AWS_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": "rtrec-smoke",  # Powertools then traces, as in Lambda (aws_xray_sdk)
        "PYTHONPATH": os.pathsep.join(str(p) for p in (RUNTIME / "python", core / "python", sdk)),
        "PYTHONNOUSERSITE": "1",
    }
    return subprocess.run([python, "-c", code], cwd=ROOT / "functions", env=env, capture_output=True, text=True, timeout=300)


@built
def test_the_handlers_cold_start_on_lambdas_python_with_the_built_layers(tmp_path):
    code = (
        "import sys\n"
        "import api.handler, stream_consumer.handler, drift_check.handler\n"
        "assert 'aws_xray_sdk' in sys.modules\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'training') if m in sys.modules))\n"
    )
    result = _run_on_lambda_python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


@built
def test_the_api_can_load_a_models_item_index_in_lambda(tmp_path):
    result = _run_on_lambda_python("import rtrec.adapters.search.faiss_index", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
