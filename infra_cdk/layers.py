"""Build the Lambda layers' folders without Docker, and check them against Lambda's size budget.

A Python layer must hold its packages under `python/` (Lambda mounts layers at /opt and puts /opt/python on
sys.path). Two layers:

- `core`: the modules of the `rtrec` package from layers/core that the Lambdas' code imports, directly or through
  each other (`lambda_core_modules`; pure Python; the CDK app builds it at every synth). The CLI, the embedded
  cloud, the data-set loaders, the report and the unit tests' fakes stay out: no Lambda imports them;
- `runtime`: the third-party packages of layers/runtime/requirements.txt, pip-installed from manylinux wheels
  for the Lambda runtime's Python and architecture (`--platform`, `--only-binary=:all:`): a download from the
  package index, so it is an explicit step (`make layers`), not part of synth.

Lambda's Python runtime is python3.12, not the 3.11 the project develops on: numpy 2.4.6 and onnxruntime 1.32.0
ship manylinux_2_27/2_28 wheels only, and the python3.11 runtime runs on Amazon Linux 2 (glibc 2.26), where they
cannot load; python3.12 runs on Amazon Linux 2023 (glibc 2.34). The core is plain Python that runs on both.

    python infra_cdk/layers.py core                 # infra_cdk/build/layers/core
    python infra_cdk/layers.py runtime [--arch arm64]
    python infra_cdk/layers.py size                 # unzipped sizes against the 250 MB budget
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

INFRA_DIR = Path(__file__).resolve().parent
REPO_ROOT = INFRA_DIR.parent
CORE_PACKAGE = REPO_ROOT / "layers" / "core" / "rtrec"
RUNTIME_REQUIREMENTS = REPO_ROOT / "layers" / "runtime" / "requirements.txt"
FUNCTIONS_DIR = REPO_ROOT / "functions"
DEFAULT_BUILD_DIR = INFRA_DIR / "build" / "layers"

LAMBDA_PYTHON = "3.12"
# Amazon Linux 2023's glibc: wheels tagged for any manylinux up to 2.34 load there.
MAX_GLIBC_MINOR = 34
ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}
# Lambda's quota: a function's code and all its layers, unzipped, at most 250 MB (262,144,000 bytes).
LAMBDA_UNZIPPED_LIMIT = 262_144_000
# The Lambda Python runtime provides the AWS SDK: a copy in the layer would shadow the runtime's botocore and split
# it from the runtime's boto3 (aws-xray-sdk pulls botocore in), so the build removes these.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
# Never shipped to a Lambda: the training stack stays in the training image.
FORBIDDEN_PACKAGES = ("torch", "mlflow", "training", "onnx", "onnxscript")


def _rtrec_imports(path: Path) -> set[str]:
    """The rtrec modules `path` names in any import statement (a function-local one too: a cold path is a path).
    For `from rtrec.a import b`, both `rtrec.a` and `rtrec.a.b` (b may be a submodule; a name that is not one is
    dropped when no file backs it)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "rtrec")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "rtrec":
            found.add(str(node.module))
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _module_file(name: str, core: Path) -> Path | None:
    base = core.parent.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def lambda_core_modules(functions: Path = FUNCTIONS_DIR, core: Path = CORE_PACKAGE) -> list[Path]:
    """The files of `core` (the rtrec package) that the code in `functions` needs: every rtrec module it imports,
    the modules those import, and so on, with the `__init__.py` of each package on the way. Paths relative to
    `core`, sorted."""
    pending: set[str] = set()
    for path in functions.rglob("*.py"):
        if "__pycache__" not in path.parts:
            pending |= _rtrec_imports(path)
    visited: set[str] = set()
    needed: set[Path] = set()
    while pending:
        name = pending.pop()
        if name in visited:
            continue
        visited.add(name)
        parts = name.split(".")
        pending.update(".".join(parts[:i]) for i in range(1, len(parts)))
        found = _module_file(name, core)
        if found is not None:
            needed.add(found.relative_to(core))
            pending |= _rtrec_imports(found)
    return sorted(needed)


def build_core_layer(dest: Path = DEFAULT_BUILD_DIR / "core") -> Path:
    """Copy the rtrec modules the Lambdas import (`lambda_core_modules`) to `dest/python/rtrec` (a clean copy:
    stale files of a previous build go)."""
    dest = Path(dest)
    target = dest / "python" / "rtrec"
    if target.exists():
        shutil.rmtree(target)
    for relative in lambda_core_modules():
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(CORE_PACKAGE / relative, target / relative)
    return dest


def manylinux_platforms(architecture: str) -> list[str]:
    """pip's `--platform` tags for Amazon Linux 2023 on `architecture` (pip does not widen a manylinux tag to
    older glibc versions by itself, so every one is listed)."""
    machine = ARCHITECTURES[architecture]
    return [f"manylinux2014_{machine}"] + [f"manylinux_2_{minor}_{machine}" for minor in range(17, MAX_GLIBC_MINOR + 1)]


def runtime_layer_command(
    dest: Path, requirements: Path = RUNTIME_REQUIREMENTS, architecture: str = "x86_64", python: str = sys.executable
) -> list[str]:
    command = [
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--target",
        str(Path(dest) / "python"),
        "--implementation",
        "cp",
        "--python-version",
        LAMBDA_PYTHON,
        "--only-binary=:all:",
        "--upgrade",
        "-r",
        str(requirements),
    ]
    for platform in manylinux_platforms(architecture):
        command += ["--platform", platform]
    return command


def build_runtime_layer(
    dest: Path = DEFAULT_BUILD_DIR / "runtime", requirements: Path = RUNTIME_REQUIREMENTS, architecture: str = "x86_64"
) -> Path:
    """pip-install `requirements` as Linux wheels for Lambda's Python into `dest/python` (from scratch)."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(runtime_layer_command(dest, requirements, architecture), check=True)
    root = dest / "python"
    for cache in root.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    for name in RUNTIME_PROVIDED:
        for path in [root / name, *root.glob(f"{name}-*.dist-info")]:
            if path.is_dir():
                shutil.rmtree(path)
    forbidden = forbidden_packages(dest)
    if forbidden:
        raise SystemExit(f"the runtime layer must not hold {forbidden}: check {requirements}")
    return dest


def directory_size(path: Path) -> int:
    """Bytes of every regular file under `path` (what Lambda counts as unzipped size)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file() and not f.is_symlink())


def forbidden_packages(layer_dir: Path) -> list[str]:
    """The FORBIDDEN_PACKAGES that a built layer holds (an import name directory or module under python/)."""
    root = Path(layer_dir) / "python"
    return [name for name in FORBIDDEN_PACKAGES if (root / name).is_dir() or (root / f"{name}.py").is_file()]


def function_bundle_size(core: Path, runtime: Path, code: Path = FUNCTIONS_DIR) -> dict[str, int]:
    """Unzipped bytes of what one Lambda function carries: its code asset (functions/) and both layers."""
    code_bytes = sum(
        f.stat().st_size for f in code.rglob("*") if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"
    )
    return {"code": code_bytes, "core": directory_size(core), "runtime": directory_size(runtime)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["core", "runtime", "all", "size"])
    parser.add_argument("--out", type=Path, default=DEFAULT_BUILD_DIR, help="build folder (default infra_cdk/build/layers)")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="x86_64", help="Lambda architecture")
    args = parser.parse_args(argv)
    if args.what in ("core", "all"):
        print(f"core layer: {build_core_layer(args.out / 'core')}")
    if args.what in ("runtime", "all"):
        built = build_runtime_layer(args.out / "runtime", architecture=args.arch)
        print(f"runtime layer ({args.arch}, python{LAMBDA_PYTHON}): {built}")
    if args.what in ("size", "all"):
        sizes = function_bundle_size(args.out / "core", args.out / "runtime")
        total = sum(sizes.values())
        for name, size in sizes.items():
            print(f"{name:8s} {size / 1e6:8.1f} MB")
        print(f"{'total':8s} {total / 1e6:8.1f} MB unzipped (Lambda's limit: {LAMBDA_UNZIPPED_LIMIT / 1e6:.1f} MB)")
        forbidden = forbidden_packages(args.out / "runtime") + forbidden_packages(args.out / "core")
        if total > LAMBDA_UNZIPPED_LIMIT or forbidden:
            print(f"error: over the budget or forbidden packages present: {forbidden}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
