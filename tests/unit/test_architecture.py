"""House rules that code review alone would let slip."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "layers" / "core" / "rtrec"
SDK_MODULES = {"boto3", "botocore", "faiss", "onnxruntime", "opensearchpy", "torch", "mlflow"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_domain_and_services_import_no_sdk():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & SDK_MODULES)
        for folder in ("domain", "services")
        for path in (CORE / folder).rglob("*.py")
        if imported_roots(path) & SDK_MODULES
    }
    assert offenders == {}


ENTRY_POINTS = {"settings.py"}  # the only core module that may read the environment (the CLI lives in rtrec_local)


def test_core_never_reads_the_environment_outside_entry_points():
    offenders = [
        str(path.relative_to(ROOT))
        for path in CORE.rglob("*.py")
        if path.name not in ENTRY_POINTS and ("os.environ" in path.read_text() or "getenv" in path.read_text())
    ]
    assert offenders == []


# Who may import whom: the runtime (core, Lambda handlers) and training never import the tooling (the CLI and the
# embedded cloud, `rtrec_local`), and the core imports neither the handlers nor training.
RUNTIME_FOLDERS = (CORE, ROOT / "functions", ROOT / "training")
TOOLING = {"rtrec_local"}
ABOVE_THE_CORE = {"functions", "training", *TOOLING}


def importers(folders: tuple[Path, ...], forbidden: set[str]) -> dict[str, list[str]]:
    """Each module under `folders` that imports (at any depth, lazily too) a package in `forbidden`, with what."""
    return {
        str(path.relative_to(folder.parent)): sorted(imported_roots(path) & forbidden)
        for folder in folders
        for path in sorted(folder.rglob("*.py"))
        if imported_roots(path) & forbidden
    }


def test_the_runtime_and_training_never_import_the_tooling():
    assert importers(RUNTIME_FOLDERS, TOOLING) == {}


def test_the_core_imports_neither_the_handlers_nor_training():
    assert importers((CORE,), ABOVE_THE_CORE) == {}


def test_the_import_rules_catch_an_offender(tmp_path):
    """The two rules above fail on a module that breaks them, at module scope or inside a function."""
    core = tmp_path / "rtrec"
    (core / "services").mkdir(parents=True)
    (core / "services" / "fine.py").write_text("from rtrec.domain import models\nimport numpy\n")
    (core / "services" / "eager.py").write_text("from training.registry import promote\n")
    (core / "lazy.py").write_text("def f():\n    import rtrec_local.cloud\n    from functions.api import app\n")
    assert importers((core,), TOOLING) == {"rtrec/lazy.py": ["rtrec_local"]}
    assert importers((core,), ABOVE_THE_CORE) == {
        "rtrec/lazy.py": ["functions", "rtrec_local"],
        "rtrec/services/eager.py": ["training"],
    }


def test_runtime_layer_pins_match_pyproject_and_carry_no_training_stack():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = set(project["dependencies"]) | set(project["optional-dependencies"]["serving"])
    layer = [
        line.strip()
        for line in (ROOT / "layers" / "runtime" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert layer, set(layer) - pinned
    assert all(requirement in pinned for requirement in layer), set(layer) - pinned
    assert not any(r.split("==")[0] in {"torch", "mlflow"} for r in layer)


def test_serving_imports_neither_torch_nor_mlflow():
    import subprocess
    import sys

    code = (
        "import sys; import functions.api.app, rtrec.adapters.model.onnx_towers, rtrec.services.model_watcher, "
        "rtrec.adapters.search.faiss_index, rtrec.adapters.aws.model_store; "
        "print(sorted(m for m in ('torch', 'mlflow', 'training') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
