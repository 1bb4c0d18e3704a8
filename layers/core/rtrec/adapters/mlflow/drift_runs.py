"""MlflowDriftRuns: every drift report as one MLflow run, so the registry's UI shows the drift beside the models.

One run per check in experiment `rtrec-drift`: tagged with the production version, the report's key and whether it
drifted; each feature's headline statistic and verdict as metrics; the report itself as `drift_report.json`. S3 keeps
the record of reference; this copy is best effort (a failure is reported, never raised into the check).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric

from rtrec.errors import DependencyError

EXPERIMENT = "rtrec-drift"
_UNSAFE = re.compile(r"[^\w./\- ]")


class MlflowDriftRuns:
    def __init__(
        self,
        tracking_uri: str,
        artifact_location: str | None = None,
        experiment: str = EXPERIMENT,
        client: MlflowClient | None = None,
    ) -> None:
        self.experiment = experiment
        self.artifact_location = artifact_location
        self._client = client or MlflowClient(tracking_uri=tracking_uri)
        self._experiment_id: str | None = None

    def _experiment(self) -> str:
        if self._experiment_id is None:
            found = self._client.get_experiment_by_name(self.experiment)
            self._experiment_id = (
                found.experiment_id
                if found is not None
                else self._client.create_experiment(self.experiment, artifact_location=self.artifact_location)
            )
        return self._experiment_id

    def log(self, report: dict[str, Any], key: str) -> str:
        """Log `report` (as the drift check wrote it under `key`); returns the run id."""
        try:
            run = self._client.create_run(
                self._experiment(),
                run_name=Path(key).stem,
                tags={
                    "drift_report": key,
                    "model_version": str(report.get("model_version")),
                    "drifted": str(bool(report.get("drifted"))).lower(),
                },
            )
            now = int(float(report.get("generated_at", time.time())) * 1000)
            metrics = [Metric("drifted", float(bool(report.get("drifted"))), now, 0)]
            for feature in report.get("features", []):
                name = _UNSAFE.sub("_", str(feature.get("name")))
                if isinstance(feature.get("value"), int | float):
                    metrics.append(Metric(f"{name}.{feature.get('statistic')}", float(feature["value"]), now, 0))
                metrics.append(Metric(f"{name}.drifted", float(bool(feature.get("drifted"))), now, 0))
            self._client.log_batch(run.info.run_id, metrics=metrics)
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "drift_report.json"
                path.write_text(json.dumps(report, indent=1))
                self._client.log_artifact(run.info.run_id, str(path))
            self._client.set_terminated(run.info.run_id, "FINISHED")
        except Exception as exc:  # any error: MLflow's errors are many kinds; S3 keeps the report regardless
            raise DependencyError(f"logging drift report {key} to MLflow failed: {type(exc).__name__}: {exc}") from exc
        run_id: str = run.info.run_id
        return run_id
