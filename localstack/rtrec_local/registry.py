"""The embedded setup's MLflow registry: a SQLite store and its artifacts under the local state folder.

Here, not in training.registry: the layout of the state folder is the local cloud's business, and training sits
below this package (it is told where the registry is, it does not know the folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rtrec_local.state import LocalState
from training.registry import RegistryConfig


def local_tracking_uri(state_dir: Path) -> str:
    """SQLite store at `<state>/mlflow/mlflow.db` (the registry needs a database, not files)."""
    state = LocalState(Path(state_dir))
    state.mlflow_dir.mkdir(parents=True, exist_ok=True)
    return state.mlflow_tracking_uri


def local_artifact_location(state_dir: Path) -> str:
    """`<state>/mlflow/artifacts` as a file URI."""
    folder = LocalState(Path(state_dir)).mlflow_artifacts_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def local_registry_config(state_dir: Path, **overrides: Any) -> RegistryConfig:
    """The embedded setup: both the store and the artifacts under the local state folder."""
    return RegistryConfig(
        tracking_uri=local_tracking_uri(state_dir), artifact_location=local_artifact_location(state_dir), **overrides
    )
