"""The MLflow registry side of training: log a trained model folder as a run, register it as a model
version (alias `staging`), and promote a version through the gate to alias `production`.

Uses registry aliases only (never the deprecated stages) and an explicit MlflowClient per call, so
nothing depends on MLflow's process-global tracking URI. Serving never imports this module: it
follows the production pointer that `promote` writes to the model store.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from rtrec.domain.promotion import (
    DEFAULT_TOLERANCE,
    SHADOW_POINTER,
    Gate,
    GateDecision,
    ProductionPointer,
    offline_gate,
    override,
)
from rtrec.errors import NotFoundError
from rtrec.ports import ModelStore
from training.artifacts import METRICS, PRIMARY_METRICS, TrainResult, missing_files, read_json

log = logging.getLogger(__name__)

STAGING = "staging"
PRODUCTION = "production"
MODEL_ARTIFACT_PATH = "model"  # the run artifact folder that holds the model folder's files
DATA_SHA256_TAG = "data_sha256"
GATE_TAG_PREFIX = "gate."

# MLflow allows alphanumerics, "_", "-", ".", " " and "/" in metric, param and tag names (and ":"
# except on Windows, left out here), and rejects names that a path normalisation would change.
_ALLOWED = re.compile(r"^[\w./\- ]+$")
_AT = "_at_"
_LOG_BATCH_PARAMS = 100
_LOG_BATCH_METRICS = 1000


def mlflow_key(name: str) -> str:
    """The MLflow name for a metric/param/tag name: "@" becomes "_at_" ("recall@10" -> "recall_at_10").

    Reversible by `from_mlflow_key`; names it could not map reversibly raise ValueError.
    """
    key = name.replace("@", _AT)
    normalised = posixpath.normpath(key)
    if _AT in name or not _ALLOWED.match(key) or normalised != key or normalised == "." or key.startswith(("..", "/")):
        raise ValueError(
            f"{name!r} cannot be an MLflow name: use letters, digits, '_', '-', '.', ' ', '/', '@' "
            f"(no {_AT!r}, no empty or relative path segments)"
        )
    return key


def from_mlflow_key(key: str) -> str:
    return key.replace(_AT, "@")


@dataclass(frozen=True)
class RegistryConfig:
    """Where the registry lives. `artifact_location` is used when the experiment is created; left
    out with a SQLite store, it is the `artifacts` folder beside the database (MLflow's own default
    would be ./mlruns of whatever the current directory is)."""

    tracking_uri: str
    model_name: str = "rtrec-two-tower"
    experiment: str = "rtrec"
    artifact_location: str | None = None

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @property
    def experiment_artifact_location(self) -> str | None:
        """Where a newly created experiment keeps its artifacts (None: the tracking server decides)."""
        if self.artifact_location is not None:
            return self.artifact_location
        if self.tracking_uri.startswith("sqlite:///"):
            database = self.tracking_uri[len("sqlite:///") :].split("?", 1)[0]
            if database and database != ":memory:":
                return (Path(database).resolve().parent / "artifacts").as_uri()
        return None


# The off-policy half of the gate: (candidate version, production version) -> decision, from logged traffic.
PolicyGate = Callable[[str, str], GateDecision]


@dataclass(frozen=True)
class RegisteredVersion:
    version: str
    run_id: str
    model_name: str


@dataclass(frozen=True)
class PromotionOutcome:
    decision: GateDecision
    version: str
    pointer: ProductionPointer | None  # None: rejected, nothing changed but the version's tags

    @property
    def promoted(self) -> bool:
        return self.pointer is not None


def _error_code(exc: MlflowException) -> str:
    return str(getattr(exc, "error_code", ""))


def _experiment_id(client: MlflowClient, config: RegistryConfig) -> str:
    experiment = client.get_experiment_by_name(config.experiment)
    wanted = config.experiment_artifact_location
    if experiment is None:
        if wanted is None and config.tracking_uri.startswith("sqlite:"):
            raise ValueError(
                f"RegistryConfig.artifact_location must be set to create experiment {config.experiment!r} in "
                f"{config.tracking_uri} (MLflow would otherwise write artifacts to ./mlruns)"
            )
        try:
            return client.create_experiment(config.experiment, artifact_location=wanted)
        except MlflowException as exc:  # created meanwhile by another process
            if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(config.experiment)
            assert experiment is not None
    if wanted is not None and experiment.artifact_location.rstrip("/") != wanted.rstrip("/"):
        raise ValueError(
            f"experiment {config.experiment!r} stores artifacts at {experiment.artifact_location}, "
            f"not at the configured {wanted}"
        )
    return experiment.experiment_id


def _param_value(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(name, description="rtrec two-tower retrieval model (ONNX towers)")
        except MlflowException as again:
            if _error_code(again) != "RESOURCE_ALREADY_EXISTS":
                raise


def log_and_register(result: TrainResult, config: RegistryConfig, tags: Mapping[str, str] | None = None) -> RegisteredVersion:
    """Log `result` as one MLflow run (params, metrics with "@" mapped, per-epoch history, the data
    hash, every file of the model folder under `model/`), register a model version from that folder
    and point alias `staging` at it.

    The model folder must be complete (training.artifacts.REQUIRED) and its metrics.json must equal
    `result.metrics`: the gate reads metrics.json, so the two records must not disagree.
    """
    model_dir = Path(result.model_dir)
    missing = missing_files(model_dir)
    if missing:
        raise ValueError(f"{model_dir} is not a complete model folder: missing {missing}")
    folder_metrics = {str(k): float(v) for k, v in read_json(model_dir, METRICS).items()}
    if folder_metrics != {k: float(v) for k, v in result.metrics.items()}:
        raise ValueError(f"{model_dir / METRICS} differs from the TrainResult's metrics")

    client = config.client()
    experiment_id = _experiment_id(client, config)
    run_tags = {mlflow_key(k): str(v) for k, v in (tags or {}).items()}
    run_tags.update({DATA_SHA256_TAG: result.data_sha256, "rtrec.model_name": config.model_name})
    run = client.create_run(experiment_id, tags=run_tags, run_name=f"{config.model_name}-{result.data_sha256[:12]}")
    run_id = run.info.run_id
    try:
        params = [Param(mlflow_key(k), _param_value(v)) for k, v in sorted(result.params.items())]
        if "data_sha256" not in result.params:
            params.append(Param("data_sha256", result.data_sha256))
        now_ms = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), float(v), now_ms, 0) for k, v in sorted(result.metrics.items())]
        metrics += [
            Metric("train.epochs", float(result.epochs), now_ms, 0),
            Metric("train.seconds", float(result.seconds), now_ms, 0),
        ]
        for position, figures in enumerate(result.history):
            step = int(figures.get("epoch", position))
            metrics += [
                Metric(mlflow_key(f"history.{k}"), float(v), now_ms, step) for k, v in sorted(figures.items()) if k != "epoch"
            ]
        for start in range(0, len(params), _LOG_BATCH_PARAMS):
            client.log_batch(run_id, params=params[start : start + _LOG_BATCH_PARAMS])
        for start in range(0, len(metrics), _LOG_BATCH_METRICS):
            client.log_batch(run_id, metrics=metrics[start : start + _LOG_BATCH_METRICS])
        client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")

    _ensure_registered_model(client, config.model_name)
    # MLflow 3 registers any artifact folder as a version: no flavor / MLmodel file is needed.
    source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}"
    model_version = client.create_model_version(
        config.model_name, source=source, run_id=run_id, tags={DATA_SHA256_TAG: result.data_sha256}
    )
    version = str(model_version.version)
    client.set_registered_model_alias(config.model_name, STAGING, version)
    log.info("registered %s version %s (run %s), alias %s", config.model_name, version, run_id, STAGING)
    return RegisteredVersion(version=version, run_id=run_id, model_name=config.model_name)


def default_gate(tolerance: float = DEFAULT_TOLERANCE) -> Gate:
    """The offline gate on training.artifacts.PRIMARY_METRICS."""
    return partial(offline_gate, metrics=PRIMARY_METRICS, tolerance=tolerance)


def _version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    # Looked up through the registered model's alias map: a missing alias makes
    # get_model_version_by_alias raise INVALID_PARAMETER_VALUE, indistinguishable from bad input.
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (registered.aliases or {}).get(alias)
    return client.get_model_version(name, str(version)) if version is not None else None


def _download(config: RegistryConfig, uri: str, target: Path) -> Path:
    return Path(
        download_artifacts(
            artifact_uri=uri, dst_path=str(target), tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri
        )
    )


def _source(model_version: ModelVersion) -> str:
    """Where the version's files are (MLflow types it optional; every version this registry creates has one)."""
    if not model_version.source:
        raise NotFoundError(f"model version {model_version.version} of {model_version.name!r} has no source")
    return model_version.source


def _folder_metrics(config: RegistryConfig, model_version: ModelVersion, target: Path) -> dict[str, float]:
    path = _download(config, f"{_source(model_version).rstrip('/')}/{METRICS}", target)
    return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}


def _record_decision(
    client: MlflowClient,
    config: RegistryConfig,
    model_version: ModelVersion,
    decision: GateDecision,
    production: ModelVersion | None,
) -> None:
    """Replace the version's gate.* tags with this decision (an earlier decision's figures may differ)."""
    name, version = config.model_name, str(model_version.version)
    for key in model_version.tags or {}:
        if key.startswith(GATE_TAG_PREFIX):
            client.delete_model_version_tag(name, version, key)
    tags = {
        "gate.approved": str(decision.approved).lower(),
        "gate.overridden": str(decision.overridden).lower(),
        "gate.reason": decision.reason,
        "gate.production_version": str(production.version) if production is not None else "none",
        "gate.decided_at": str(int(time.time())),
    }
    tags.update({mlflow_key(f"{GATE_TAG_PREFIX}{k}"): repr(float(v)) for k, v in decision.figures.items()})
    tags["promotion.status"] = "publishing" if decision.approved else "rejected"
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def _candidate(client: MlflowClient, name: str, version: str | None) -> ModelVersion:
    """The version to act on: `version`, or the one with alias `staging`."""
    if version is None:
        candidate = _version_by_alias(client, name, STAGING)
        if candidate is None:
            raise NotFoundError(f"registered model {name!r} has no {STAGING!r} version")
        return candidate
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise NotFoundError(f"registered model {name!r} has no version {version}") from exc
        raise


def _publish(
    config: RegistryConfig,
    client: MlflowClient,
    store: ModelStore,
    candidate: ModelVersion,
    work: Path,
    index_builder: Callable[[Path], object] | None,
) -> str:
    """Download the version's files, build what serving needs beside them (the item index, also kept with the
    run's artifacts) and publish them to the model store; returns the key prefix."""
    model_dir = _download(config, _source(candidate), work / "candidate")
    if index_builder is not None:
        before = {p.name for p in model_dir.iterdir()}
        index_builder(model_dir)
        added = [p for p in model_dir.iterdir() if p.name not in before]
        for path in added:
            if path.is_dir():
                client.log_artifacts(str(candidate.run_id), str(path), f"{MODEL_ARTIFACT_PATH}/{path.name}")
            else:
                client.log_artifact(str(candidate.run_id), str(path), MODEL_ARTIFACT_PATH)
    return store.publish(str(candidate.version), model_dir)


def publish_shadow(
    config: RegistryConfig,
    store: ModelStore,
    version: str | None = None,
    index_builder: Callable[[Path], object] | None = None,
) -> ProductionPointer:
    """Make a registered version (default: alias `staging`) the shadow candidate: publish its files and write the
    shadow pointer. Serving then scores it beside production on every request and logs its policy's
    probabilities, which is what the promotion gate's off-policy check reads. Nothing users see changes."""
    client = config.client()
    candidate = _candidate(client, config.model_name, version)
    with tempfile.TemporaryDirectory(prefix="rtrec-shadow-") as tmp:
        work = Path(tmp)
        metrics = _folder_metrics(config, candidate, work / "metrics")
        s3_prefix = _publish(config, client, store, candidate, work, index_builder)
    pointer = ProductionPointer(
        model_name=config.model_name,
        version=str(candidate.version),
        run_id=str(candidate.run_id),
        s3_prefix=s3_prefix,
        promoted_at=int(time.time()),
        metrics=metrics,
        gate_reason="shadow candidate",
    )
    store.write_pointer(pointer, SHADOW_POINTER)
    client.set_model_version_tag(config.model_name, str(candidate.version), "shadow.published_at", str(pointer.promoted_at))
    log.info("published %s version %s as the shadow candidate", config.model_name, candidate.version)
    return pointer


def _merge(offline: GateDecision, policy: GateDecision) -> GateDecision:
    figures = {**offline.figures, **policy.figures}
    if not policy.approved:
        return GateDecision(False, f"{policy.reason} (offline: {offline.reason})", figures)
    return GateDecision(True, f"{offline.reason}; {policy.reason}", figures)


def promote(
    config: RegistryConfig,
    store: ModelStore,
    gate: Gate,
    version: str | None = None,
    override_reason: str | None = None,
    index_builder: Callable[[Path], object] | None = None,
    policy_gate: PolicyGate | None = None,
) -> PromotionOutcome:
    """Gate a registered version (default: alias `staging`) against alias `production`; on approval,
    or on a rejection overridden with a non-empty `override_reason`, make it production.

    Steps, in this order: gate the candidate's metrics.json against production's, then, when
    `policy_gate` is given and a version is in production, its off-policy estimate on the traffic
    production served (rtrec.services.ope.OffPolicyGate); record the decision as gate.* tags on the
    version (in every case); a rejection stops here. Otherwise download the version's files, run
    `index_builder(folder)` (builds the item index into it) and publish the folder (skipped when
    the version is the shadow candidate: published already), write the production pointer, remove
    the shadow pointer if it named this version, set alias `production`, tag the version
    `promotion.status=promoted`.

    What serving (which follows only the pointer) sees if the process dies between steps:
    - before or during publish: the old pointer, the old model; a partly uploaded
      versions/<v>/ folder is unreferenced and a re-run overwrites it.
    - after publish, before the pointer: the same; the new files sit unused.
    - after the pointer, before the alias: the new model serves while the registry still names the
      old version `production` (and the version is tagged `promotion.status=publishing`). Running
      `promote` again for the same version repairs it: the gate compares against the same old
      production, so it decides the same way (an overridden version needs the override again).
    The pointer is written only after every file is uploaded, so it never names a partial folder;
    it goes before the alias because the pointer is what actually serves. Two concurrent
    promotions are not serialised here: the caller holds the promotion lock.
    """
    if override_reason is not None and not override_reason.strip():
        raise ValueError("override_reason must be a non-empty reason (or None)")
    client = config.client()
    name = config.model_name
    candidate = _candidate(client, name, version)
    candidate_version = str(candidate.version)
    production = _version_by_alias(client, name, PRODUCTION)

    with tempfile.TemporaryDirectory(prefix="rtrec-promote-") as tmp:
        work = Path(tmp)
        candidate_metrics = _folder_metrics(config, candidate, work / "candidate-metrics")
        production_metrics = (
            _folder_metrics(config, production, work / "production-metrics") if production is not None else None
        )
        decision = gate(candidate_metrics, production_metrics)
        if decision.approved and policy_gate is not None and production is not None:
            decision = _merge(decision, policy_gate(candidate_version, str(production.version)))
        if not decision.approved and override_reason is not None:
            decision = override(decision, override_reason)
        _record_decision(client, config, candidate, decision, production)
        if not decision.approved:
            log.info("gate rejected %s version %s: %s", name, candidate_version, decision.reason)
            return PromotionOutcome(decision, candidate_version, None)

        shadow = store.read_pointer(SHADOW_POINTER)
        if shadow is not None and shadow.version == candidate_version:
            s3_prefix = shadow.s3_prefix  # published (with its index) when it became the shadow candidate
        else:
            s3_prefix = _publish(config, client, store, candidate, work, index_builder)

    pointer = ProductionPointer(
        model_name=name,
        version=candidate_version,
        run_id=str(candidate.run_id),
        s3_prefix=s3_prefix,
        promoted_at=int(time.time()),
        metrics=candidate_metrics,
        gate_reason=decision.reason,
    )
    store.write_pointer(pointer)
    if shadow is not None and shadow.version == candidate_version:
        store.delete_pointer(SHADOW_POINTER)  # it serves now; nothing left to score beside it
    client.set_registered_model_alias(name, PRODUCTION, candidate_version)
    client.set_model_version_tag(name, candidate_version, "promotion.status", "promoted")
    client.set_model_version_tag(name, candidate_version, "promotion.promoted_at", str(pointer.promoted_at))
    client.set_model_version_tag(name, candidate_version, "promotion.s3_prefix", s3_prefix)
    log.info(
        "promoted %s version %s (%s): %s",
        name,
        candidate_version,
        "overridden" if decision.overridden else "approved",
        decision.reason,
    )
    return PromotionOutcome(decision, candidate_version, pointer)
