"""The layout of a trained model folder (SageMaker's SM_MODEL_DIR): what training writes, what the
registry logs, what promotion publishes to the models bucket and what serving loads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rtrec.domain.model_files import (
    DATA_SNAPSHOT,
    ENCODER,
    ITEM_CATALOG,
    ITEM_EMBEDDINGS,
    ITEM_IDS,
    ITEM_INDEX,
    ITEM_TO_ITEM,
    ITEM_TOWER,
    METRICS,
    PARAMS,
    USER_TOWER,
)

# The file names come from the core (serving reads the same folder); training code names every file as artifacts.X.
__all__ = [
    "DATA_SNAPSHOT",
    "ENCODER",
    "ITEM_CATALOG",
    "ITEM_EMBEDDINGS",
    "ITEM_IDS",
    "ITEM_INDEX",
    "ITEM_TOWER",
    "ITEM_TO_ITEM",
    "METRICS",
    "PARAMS",
    "PRIMARY_METRICS",
    "REQUIRED",
    "USER_TOWER",
    "TrainResult",
    "missing_files",
    "read_json",
    "result_to_dict",
    "write_json",
]

# Files every trained model folder must hold (the index is added at promotion; ITEM_TO_ITEM only when trained).
REQUIRED = (USER_TOWER, ITEM_TOWER, ENCODER, ITEM_EMBEDDINGS, ITEM_IDS, ITEM_CATALOG, METRICS, PARAMS, DATA_SNAPSHOT)

# The metric the promotion gate compares by default (higher is better).
PRIMARY_METRICS = ("recbole.test.recall@10", "recbole.test.ndcg@10")


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    params: dict[str, Any]
    metrics: dict[str, float]
    data_sha256: str
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch loss and validation figures


def missing_files(model_dir: Path) -> list[str]:
    return [name for name in REQUIRED if not (Path(model_dir) / name).is_file()]


def read_json(model_dir: Path, name: str) -> Any:
    return json.loads((Path(model_dir) / name).read_text())


def write_json(model_dir: Path, name: str, value: Any) -> None:
    (Path(model_dir) / name).write_text(json.dumps(value, indent=2, sort_keys=True, default=str))


def result_to_dict(result: TrainResult) -> dict[str, Any]:
    out = asdict(result)
    out["model_dir"] = str(result.model_dir)
    return out
