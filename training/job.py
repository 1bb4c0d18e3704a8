"""The training job's entry point, following SageMaker's training-container contract.

Reads hyperparameters (SM_HPS or <SM_INPUT_CONFIG_DIR>/hyperparameters.json, values as strings),
the `train` channel (SM_CHANNEL_TRAIN: a folder holding the data set's wheel), writes the model
to SM_MODEL_DIR and a summary to SM_OUTPUT_DATA_DIR/result.json. With MLFLOW_TRACKING_URI set it
logs the run and registers the model version under alias `staging`. On failure it writes the
reason to <SM_OUTPUT_DIR>/failure and exits 1, as SageMaker expects.

Run locally with `rtrec train` (LocalJobRunner), or directly: `python -m training.job`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from training.train import TrainConfig, train

LOCAL_ROOT = Path(".rtrec/jobs/direct")


def parse_hyperparameters(raw: Mapping[str, Any], **paths: Path) -> TrainConfig:
    """Turn SageMaker's string hyperparameters into a validated TrainConfig; unknown names are errors."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            with contextlib.suppress(json.JSONDecodeError):  # a plain string such as a data set name stays one
                value = json.loads(value)
        if key == "protocols" and isinstance(value, str):
            value = tuple(p.strip() for p in value.split(",") if p.strip())
        values[key] = value
    values.update(paths)
    try:
        return TypeAdapter(TrainConfig).validate_python(values)
    except ValidationError as exc:
        raise ValueError(f"invalid hyperparameters: {exc}") from exc


def _hyperparameters(env: Mapping[str, str]) -> dict[str, Any]:
    if env.get("SM_HPS"):
        return json.loads(env["SM_HPS"])
    config_file = Path(env.get("SM_INPUT_CONFIG_DIR", "/opt/ml/input/config")) / "hyperparameters.json"
    return json.loads(config_file.read_text()) if config_file.exists() else {}


def run(env: Mapping[str, str]) -> dict[str, Any]:
    model_dir = Path(env.get("SM_MODEL_DIR", LOCAL_ROOT / "model"))
    output_dir = Path(env.get("SM_OUTPUT_DATA_DIR", LOCAL_ROOT / "output" / "data"))
    data_dir = Path(env.get("SM_CHANNEL_TRAIN", Path.home() / ".cache" / "rtrec"))
    paths: dict[str, Path] = {"output_dir": model_dir, "data_cache_dir": data_dir}
    if env.get("RTREC_EVENTS_BUCKET"):
        paths["extra_events"] = _export_stream_events(env, output_dir.parent / "stream-events.jsonl")
    config = parse_hyperparameters(_hyperparameters(env), **paths)
    result = train(config, progress=lambda line: print(line, flush=True))
    summary: dict[str, Any] = {
        "model_dir": str(result.model_dir),
        "metrics": result.metrics,
        "data_sha256": result.data_sha256,
        "epochs": result.epochs,
        "seconds": result.seconds,
        "job_name": env.get("TRAINING_JOB_NAME", ""),
    }
    if env.get("MLFLOW_TRACKING_URI"):
        from training.registry import RegistryConfig, log_and_register

        tags = json.loads(env.get("RTREC_RUN_TAGS", "{}"))
        tags.setdefault("job_name", summary["job_name"])
        registry = RegistryConfig(tracking_uri=env["MLFLOW_TRACKING_URI"])
        registered = log_and_register(result, registry, tags=tags)
        summary.update({"model_name": registered.model_name, "version": registered.version, "run_id": registered.run_id})
        print(
            f"registered {registered.model_name} version {registered.version} (run {registered.run_id}) with alias staging",
            flush=True,
        )
        if env.get("RTREC_MODELS_BUCKET"):
            _after_registration(env, registry, registered.version, registered.run_id, tags, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "result.json").write_text(json.dumps(summary, indent=2))
    return summary


def _aws(env: Mapping[str, str]) -> dict[str, Any]:
    return {"endpoint_url": env.get("AWS_ENDPOINT_URL") or None, "region": env.get("AWS_DEFAULT_REGION", "us-east-1")}


def _export_stream_events(env: Mapping[str, str], target: Path) -> Path:
    """The offline store's raw events (the counterfactual-logs bucket's `events/`) as one JSON-lines file."""
    from rtrec.adapters.aws.s3 import S3CounterfactualLog
    from rtrec.domain.events import message_to_dict

    events = S3CounterfactualLog(env["RTREC_EVENTS_BUCKET"], **_aws(env)).read("events")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(message_to_dict(e)) + "\n" for e in events))
    print(f"offline store: {len(events):,} stream events exported from s3://{env['RTREC_EVENTS_BUCKET']}/events/", flush=True)
    return target


def _after_registration(
    env: Mapping[str, str], registry: Any, version: str, run_id: str, tags: Mapping[str, str], output_dir: Path
) -> None:
    """Attach the drift report that triggered the run, and make the version the shadow candidate, so the
    promotion gate can judge it on live traffic."""
    from rtrec.adapters.aws.model_store import S3ModelStore
    from training.index import build_item_index
    from training.registry import publish_shadow

    store = S3ModelStore(env["RTREC_MODELS_BUCKET"], **_aws(env))
    report_key = tags.get("drift_report")
    if report_key:
        from rtrec.adapters.aws.s3 import S3DriftStore

        raw = S3DriftStore(env["RTREC_MODELS_BUCKET"], **_aws(env)).report(report_key)
        if raw is not None:
            report = output_dir / "drift_report.json"
            output_dir.mkdir(parents=True, exist_ok=True)
            report.write_bytes(raw)
            registry.client().log_artifact(run_id, str(report), "drift")
            print(f"attached the drift report {report_key} to run {run_id}", flush=True)
    if env.get("RTREC_PUBLISH_SHADOW") == "1":
        pointer = publish_shadow(registry, store, version=version, index_builder=build_item_index)
        print(f"version {pointer.version} is the shadow candidate; the promotion gate judges it on live traffic", flush=True)


def main() -> int:
    env = dict(os.environ)
    try:
        run(env)
    except Exception as exc:  # any error: the job reports every failure the SageMaker way
        failure_dir = Path(env.get("SM_OUTPUT_DIR", LOCAL_ROOT / "output"))
        failure_dir.mkdir(parents=True, exist_ok=True)
        (failure_dir / "failure").write_text(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        print(f"training job failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
