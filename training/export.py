"""ONNX export of each tower, with a dynamic batch axis and a pinned opset, checked against torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rtrec.domain.encoder import ITEM_INPUTS, USER_INPUTS, FeatureEncoder
from rtrec.domain.models import ItemFeatures, UserProfile
from training import artifacts
from training.model import ItemTower, UserTower

ONNX_OPSET = 17


def sample_inputs(encoder: FeatureEncoder, batch: int = 8) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A varied batch: known and unknown users/items, empty and full histories, missing features."""
    rng = np.random.default_rng(0)
    ids = encoder.item_ids
    users = [
        UserProfile(
            user_id=f"user-{n}",
            age=[None, 1, 25, 56][n % 4],
            gender=[None, "F", "M"][n % 3],
            occupation=encoder.occupations[n % len(encoder.occupations)] if n % 2 and encoder.occupations else None,
            zip_prefix=encoder.zip_prefixes[n % len(encoder.zip_prefixes)] if n % 3 and encoder.zip_prefixes else None,
            history=tuple(ids[i] for i in rng.integers(0, len(ids), size=(n * 17) % (encoder.history_length + 1))),
        )
        for n in range(batch)
    ]
    items = [
        ItemFeatures(
            item_id=ids[n] if n % 2 else f"new-{n}",
            title="",
            year=[None, 1950, 1995, 2000][n % 4],
            genres=tuple(encoder.genres[(n + j) % len(encoder.genres)] for j in range(n % 4)) if encoder.genres else (),
            interaction_count=[0, 5, 500, 5000][n % 4],
        )
        for n in range(batch)
    ]
    return encoder.encode_users(users), encoder.encode_items(items)


def _export(module: torch.nn.Module, inputs: dict[str, np.ndarray], names: tuple[str, ...], path: Path, opset: int) -> None:
    tensors = tuple(torch.from_numpy(inputs[name]) for name in names)
    torch.onnx.export(
        module,
        tensors,
        str(path),
        input_names=list(names),
        output_names=["embedding"],
        dynamic_axes={**{name: {0: "batch"} for name in names}, "embedding": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )


def onnx_max_abs_diff(module: torch.nn.Module, path: Path, inputs: dict[str, np.ndarray], names: tuple[str, ...]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    module.eval()
    with torch.no_grad():
        expected = module(*(torch.from_numpy(inputs[n]) for n in names)).numpy()
    got = session.run(None, {n: inputs[n] for n in names})[0]
    return float(np.abs(expected - got).max())


def export_towers(
    user_tower: UserTower, item_tower: ItemTower, encoder: FeatureEncoder, model_dir: Path, opset: int = ONNX_OPSET
) -> float:
    """Write both towers to `model_dir` and return the worst torch-vs-onnxruntime difference."""
    user_tower.eval()
    item_tower.eval()
    user_inputs, item_inputs = sample_inputs(encoder)
    user_path, item_path = Path(model_dir) / artifacts.USER_TOWER, Path(model_dir) / artifacts.ITEM_TOWER
    _export(user_tower, user_inputs, USER_INPUTS, user_path, opset)
    _export(item_tower, item_inputs, ITEM_INPUTS, item_path, opset)
    return max(
        onnx_max_abs_diff(user_tower, user_path, user_inputs, USER_INPUTS),
        onnx_max_abs_diff(item_tower, item_path, item_inputs, ITEM_INPUTS),
    )
