"""`train(config) -> TrainResult`: fit the two towers, evaluate them under both protocols next to
the baselines, export ONNX and write the model folder. The job entry point is training/job.py."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from tqdm import tqdm

from rtrec.data.movielens import MovieLens, load_movielens
from rtrec.domain.catalog import catalog_columns
from rtrec.domain.encoder import FeatureEncoder
from rtrec.domain.models import HISTORY_LENGTH
from training import artifacts
from training.baselines import mf_peer_scorer
from training.data import Split, make_split
from training.evaluate import evaluate_full_ranking, popularity_scorer, selection_score
from training.export import export_towers
from training.item_to_item import fit_item_to_item
from training.model import ItemTower, UserTower, build_towers, sampled_softmax_loss

Progress = Callable[[str], None]


PositiveInt = Annotated[int, Field(ge=1)]
Share = Annotated[float, Field(ge=0.0, lt=1.0)]


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters and paths of one training run (validated when parsed from a job's strings)."""

    dataset: Literal["ml-1m", "ml-100k"] = "ml-1m"
    data_cache_dir: Path = Path.home() / ".cache" / "rtrec"
    output_dir: Path = Path(".rtrec/jobs/local/model")
    protocols: tuple[Literal["recbole", "temporal"], ...] = ("recbole", "temporal")  # the first trains the export
    seed: int = 2020
    split_seed: int = 2020
    epochs: PositiveInt = 40
    patience: PositiveInt = 4
    batch_size: Annotated[int, Field(ge=2)] = 1024
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 2e-3
    temperature: Annotated[float, Field(gt=0.0, le=10.0)] = 0.1
    dim: PositiveInt = 64
    hidden: PositiveInt = 256
    user_hash_buckets: PositiveInt = 16_384
    history_length: PositiveInt = HISTORY_LENGTH
    id_dropout: Share = 0.05  # share of examples trained without the user / item id, for cold start
    logq_correction: bool = True
    mask_own_positives: bool = True
    baselines: bool = True
    # The item-to-item model (EASE pruned to top-k neighbours, tuned on valid) beside the towers: item_to_item.npz.
    item_to_item: bool = True
    max_minutes: Annotated[float, Field(gt=0.0)] | None = None  # a budget for each protocol's training loop
    threads: PositiveInt = 2
    onnx_opset: Annotated[int, Field(ge=13, le=21)] = 17
    # The offline store's stream events (JSON lines of UserEvent records) to learn from beside the data set.
    extra_events: Path | None = None

    def params(self) -> dict[str, Any]:
        values = asdict(self)
        values["data_cache_dir"] = str(self.data_cache_dir)
        values["output_dir"] = str(self.output_dir)
        values["extra_events"] = str(self.extra_events) if self.extra_events else None
        values["protocols"] = ",".join(self.protocols)
        return values


def build_encoder(dataset: MovieLens, config: TrainConfig) -> FeatureEncoder:
    """Vocabularies from the catalog and user base (not the split): ids the model can meet in serving."""
    genres = sorted({g for gs in dataset.items["genres"] for g in gs})
    occupations = sorted(dataset.users["occupation"].dropna().unique().tolist())
    zips = sorted(dataset.users["zip_prefix"].dropna().unique().tolist())
    return FeatureEncoder(
        item_ids=tuple(dataset.items["item_id"].tolist()),
        genres=tuple(genres),
        occupations=tuple(occupations),
        zip_prefixes=tuple(zips),
        user_hash_buckets=config.user_hash_buckets,
        history_length=config.history_length,
    )


def history_matrix(n_users: int, frames: list[pd.DataFrame], length: int) -> np.ndarray:
    """Each user's `length` most recent items (by time) as embedding rows (index + 1), 0-padded."""
    frame = pd.concat(frames).sort_values(["user_index", "timestamp", "item_index"], kind="stable")
    recent = frame.groupby("user_index", sort=False).tail(length)
    out = np.zeros((n_users, length), dtype=np.int64)
    position = recent.groupby("user_index").cumcount().to_numpy()
    out[recent["user_index"].to_numpy(), position] = recent["item_index"].to_numpy() + 1
    return out


@dataclass
class _Tensors:
    """Everything a training loop reads, as tensors indexed by user / item index."""

    users: dict[str, torch.Tensor]
    items: dict[str, torch.Tensor]
    train_history: torch.Tensor
    eval_history: torch.Tensor  # train + valid, for the test ranking
    log_q: torch.Tensor
    positives: torch.Tensor  # [n_users, n_items] bool, training interactions


@dataclass
class ProtocolResult:
    user_tower: UserTower
    item_tower: ItemTower
    metrics: dict[str, float]
    item_vectors: np.ndarray  # of the best state, every catalog item, row = item index
    history: list[dict[str, float]] = field(default_factory=list)
    epochs: int = 0
    seconds_per_epoch: float = 0.0


def _tensors(dataset: MovieLens, split: Split, encoder: FeatureEncoder) -> _Tensors:
    n_users, n_items = dataset.n_users, dataset.n_items
    counts = np.bincount(split.train["item_index"].to_numpy(), minlength=n_items)
    user_inputs = encoder.encode_users(dataset.user_profiles())
    user_inputs.pop("history")
    # Popularity buckets come from the counts in the data the model learns from.
    item_inputs = encoder.encode_items(dataset.item_features(counts))
    # Items never trained on keep id 0: serving embeds them from their features, as new items.
    item_inputs["item"] = np.where(counts > 0, item_inputs["item"], 0)
    positives = torch.zeros(n_users, n_items, dtype=torch.bool)
    positives[
        torch.from_numpy(split.train["user_index"].to_numpy().copy()),
        torch.from_numpy(split.train["item_index"].to_numpy().copy()),
    ] = True
    q = counts / max(counts.sum(), 1)
    return _Tensors(
        users={k: torch.from_numpy(v) for k, v in user_inputs.items()},
        items={k: torch.from_numpy(v) for k, v in item_inputs.items()},
        train_history=torch.from_numpy(history_matrix(n_users, [split.train], encoder.history_length)),
        eval_history=torch.from_numpy(history_matrix(n_users, [split.train, split.valid], encoder.history_length)),
        log_q=torch.from_numpy(np.log(np.maximum(q, 1e-12))).float(),
        positives=positives,
    )


@torch.no_grad()
def embed(
    user_tower: UserTower, item_tower: ItemTower, t: _Tensors, history: torch.Tensor, batch: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    user_tower.eval()
    n_users = history.shape[0]
    users = torch.cat(
        [
            user_tower(**{k: v[s : s + batch] for k, v in t.users.items()}, history=history[s : s + batch])
            for s in range(0, n_users, batch)
        ]
    )
    user_tower.train()
    return users.numpy(), embed_items(item_tower, t)


@torch.no_grad()
def embed_items(item_tower: ItemTower, t: _Tensors) -> np.ndarray:
    item_tower.eval()
    vectors = item_tower(**t.items).numpy()
    item_tower.train()
    return vectors


def _embedding_scorer(users: np.ndarray, items: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda batch: users[batch] @ items.T


def train_protocol(
    dataset: MovieLens, split: Split, encoder: FeatureEncoder, config: TrainConfig, progress: Progress
) -> ProtocolResult:
    """Fit on split.train, early-stop on split.valid (Recall@10 + NDCG@10), report split.test."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    t = _tensors(dataset, split, encoder)
    user_tower, item_tower = build_towers(encoder, dim=config.dim, hidden=config.hidden)
    optimizer = torch.optim.Adam([*user_tower.parameters(), *item_tower.parameters()], lr=config.learning_rate)
    train_users = torch.from_numpy(split.train["user_index"].to_numpy().copy())
    train_items = torch.from_numpy(split.train["item_index"].to_numpy().copy())
    n_train = len(train_users)
    n_batches = math.ceil(n_train / config.batch_size)
    best_score, best_state, stale, history, epoch_seconds = -1.0, None, 0, [], []
    started = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.monotonic()
        order = torch.randperm(n_train, generator=generator)
        total = 0.0
        bar = tqdm(
            range(n_batches), desc=f"{split.protocol} epoch {epoch}", unit="batch", leave=False, mininterval=5.0, disable=None
        )
        for step in bar:
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            users, items = train_users[index], train_items[index]
            recent = t.train_history[users]
            recent = torch.where(recent == (items + 1).unsqueeze(1), 0, recent)  # the target is no input
            user_inputs = {k: v[users] for k, v in t.users.items()}
            item_inputs = {k: v[items] for k, v in t.items.items()}
            if config.id_dropout > 0:
                drop_user = torch.rand(len(users), generator=generator) < config.id_dropout
                drop_item = torch.rand(len(items), generator=generator) < config.id_dropout
                user_inputs["user_hash"] = user_inputs["user_hash"].masked_fill(drop_user, 0)
                item_inputs["item"] = item_inputs["item"].masked_fill(drop_item, 0)
            user_vectors = user_tower(**user_inputs, history=recent)
            item_vectors = item_tower(**item_inputs)
            false_negatives = items.unsqueeze(0) == items.unsqueeze(1)
            if config.mask_own_positives:
                false_negatives |= t.positives[users][:, items]
            false_negatives.fill_diagonal_(False)
            log_q = t.log_q[items] if config.logq_correction else torch.zeros(len(items))
            loss = sampled_softmax_loss(user_vectors, item_vectors, log_q, config.temperature, false_negatives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{total / (step + 1):.3f}")
        bar.close()
        epoch_seconds.append(time.monotonic() - epoch_start)
        user_vectors_np, item_vectors_np = embed(user_tower, item_tower, t, t.train_history)
        valid = evaluate_full_ranking(
            _embedding_scorer(user_vectors_np, item_vectors_np), split.valid, [split.train], dataset.n_items
        )
        score = selection_score(valid)
        history.append(
            {
                "epoch": epoch,
                "loss": total / n_batches,
                "seconds": epoch_seconds[-1],
                **{f"valid.{k}": v for k, v in valid.items()},
            }
        )
        improved = score > best_score
        if improved:
            best_score, stale = score, 0
            best_state = (
                {k: v.clone() for k, v in user_tower.state_dict().items()},
                {k: v.clone() for k, v in item_tower.state_dict().items()},
            )
        else:
            stale += 1
        elapsed = time.monotonic() - started
        remaining = config.epochs - epoch
        progress(
            f"{split.protocol} epoch {epoch}/{config.epochs}: loss {total / n_batches:.4f}, "
            f"valid recall@10 {valid['recall@10']:.4f} ndcg@10 {valid['ndcg@10']:.4f}{' *' if improved else ''}, "
            f"{n_train / epoch_seconds[-1]:,.0f} examples/s, {epoch_seconds[-1]:.0f}s/epoch, "
            f"ETA <= {remaining * elapsed / epoch / 60:.1f} min"
        )
        if stale >= config.patience:
            progress(f"{split.protocol}: early stop after {epoch} epochs (no gain for {config.patience})")
            break
        if config.max_minutes is not None and elapsed / 60 >= config.max_minutes:
            progress(f"{split.protocol}: time budget of {config.max_minutes} min reached")
            break
    assert best_state is not None
    user_tower.load_state_dict(best_state[0])
    item_tower.load_state_dict(best_state[1])
    users_np, items_np = embed(user_tower, item_tower, t, t.eval_history)
    test = evaluate_full_ranking(_embedding_scorer(users_np, items_np), split.test, [split.train, split.valid], dataset.n_items)
    best = max(history, key=lambda h: selection_score(h, "valid."))
    metrics = {f"test.{k}": v for k, v in test.items()}
    metrics.update({k: v for k, v in best.items() if k.startswith("valid.")})
    metrics["best_epoch"] = float(best["epoch"])
    return ProtocolResult(
        user_tower, item_tower, metrics, items_np, history, epochs=len(history), seconds_per_epoch=float(np.mean(epoch_seconds))
    )


def baseline_metrics(split: Split, n_items: int, seed: int, progress: Progress) -> dict[str, float]:
    """Popularity and the MF peer on the same split, test part."""
    out: dict[str, float] = {}
    seen = [split.train, split.valid]
    for name, scorer in (
        ("pop", popularity_scorer(split.train, n_items)),
        ("als", mf_peer_scorer(split.train, split.n_users, n_items, seed, progress)),
    ):
        if scorer is None:
            continue
        metrics = evaluate_full_ranking(scorer, split.test, seen, n_items)
        out.update({f"{name}.test.{k}": v for k, v in metrics.items() if k != "users"})
        progress(f"{split.protocol} {name}: test recall@10 {metrics['recall@10']:.4f} ndcg@10 {metrics['ndcg@10']:.4f}")
    return out


def read_stream_events(raw: bytes) -> pd.DataFrame:
    """The offline store's events (JSON lines of UserEvent records), ids as strings and timestamps as unix seconds
    (pandas would read a column named `timestamp` as dates, in nanoseconds, unless told not to)."""
    if not raw.strip():
        return pd.DataFrame()
    return pd.read_json(io.BytesIO(raw), lines=True, convert_dates=False, dtype={"user_id": str, "item_id": str})


def train(config: TrainConfig, progress: Progress = print) -> artifacts.TrainResult:
    """Train, evaluate and export; the model folder holds everything training/artifacts.py lists."""
    started = time.monotonic()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    dataset = load_movielens(config.dataset, config.data_cache_dir)
    progress(dataset.summary())
    data_sha256 = dataset.source_sha256
    stream_counts: dict[str, int] = {}
    stream = dataset.interactions.iloc[:0]
    if config.extra_events is not None:
        raw = Path(config.extra_events).read_bytes()
        frame = read_stream_events(raw)
        stream, stream_counts = dataset.stream_interactions(frame)
        data_sha256 = hashlib.sha256(dataset.source_sha256.encode() + raw).hexdigest()
        progress(
            f"offline store: {stream_counts['events']:,} stream events, {stream_counts['added']:,} new "
            f"interactions added ({stream_counts['duplicate']:,} already known, {stream_counts['unknown']:,} of "
            f"unknown users or items, {stream_counts['not_positive']:,} not positive)"
        )
    encoder = build_encoder(dataset, config)
    metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    exported: ProtocolResult | None = None
    exported_split: Split | None = None
    for protocol in config.protocols:
        split = make_split(dataset, protocol, seed=config.split_seed)
        if len(stream):
            # The stream's interactions only train: the held-out parts stay the data set's, so the offline metrics
            # of a retrained model and of the model in production are measured on the same interactions.
            train_part = pd.concat([split.train, stream[split.train.columns]], ignore_index=True)
            split = dataclasses.replace(split, train=train_part)
        progress(split.describe())
        result = train_protocol(dataset, split, encoder, config, progress)
        metrics.update({f"{protocol}.{k}": v for k, v in result.metrics.items()})
        metrics[f"{protocol}.seconds_per_epoch"] = result.seconds_per_epoch
        history.extend(
            {"epoch": h["epoch"], **{f"{protocol}.{k}": v for k, v in h.items() if k != "epoch"}} for h in result.history
        )
        progress(
            f"{protocol} two-tower: test recall@10 {result.metrics['test.recall@10']:.4f} "
            f"ndcg@10 {result.metrics['test.ndcg@10']:.4f} (best epoch {int(result.metrics['best_epoch'])})"
        )
        if config.baselines:
            metrics.update(
                {f"{protocol}.{k}": v for k, v in baseline_metrics(split, dataset.n_items, config.seed, progress).items()}
            )
        if exported is None:
            exported, exported_split = result, split
    assert exported is not None
    assert exported_split is not None
    model_dir = Path(config.output_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    np.save(model_dir / artifacts.ITEM_EMBEDDINGS, exported.item_vectors.astype(np.float32))
    artifacts.write_json(model_dir, artifacts.ITEM_IDS, list(encoder.item_ids))
    (model_dir / artifacts.ENCODER).write_text(encoder.to_json())
    served = dataset.with_events(frame)[0] if len(stream) else dataset  # popularity as the stream made it
    # Any: numpy's stub cannot tell the column names in **columns from its own keyword allow_pickle (a bool)
    columns: dict[str, Any] = catalog_columns(served.catalog(), encoder.genres)
    np.savez(model_dir / artifacts.ITEM_CATALOG, **columns)
    parity = export_towers(exported.user_tower, exported.item_tower, encoder, model_dir, opset=config.onnx_opset)
    metrics["onnx.max_abs_diff"] = parity
    if config.item_to_item:
        # Fitted on the exported towers' split (stream interactions included), evaluated on its valid and test parts.
        fit_started = time.monotonic()
        fit = fit_item_to_item(exported_split, encoder.item_ids, progress)
        fit.model.save(model_dir / artifacts.ITEM_TO_ITEM)
        metrics.update({f"{exported_split.protocol}.i2i.{k}": v for k, v in fit.metrics.items()})
        metrics["i2i.seconds"] = time.monotonic() - fit_started
    seconds = time.monotonic() - started
    metrics["train.seconds"] = seconds
    artifacts.write_json(model_dir, artifacts.METRICS, metrics)
    artifacts.write_json(model_dir, artifacts.PARAMS, config.params())
    snapshot = {
        "dataset": dataset.name,
        "sha256": data_sha256,
        "source_sha256": dataset.source_sha256,
        "interactions": len(dataset.interactions),
        "users": dataset.n_users,
        "items": dataset.n_items,
        "stream_events": stream_counts,
    }
    artifacts.write_json(model_dir, artifacts.DATA_SNAPSHOT, snapshot)
    (model_dir / "history.json").write_text(json.dumps(history, indent=1))
    return artifacts.TrainResult(
        model_dir=model_dir,
        params=config.params(),
        metrics=metrics,
        data_sha256=data_sha256,
        epochs=exported.epochs,
        seconds=seconds,
        history=history,
    )
