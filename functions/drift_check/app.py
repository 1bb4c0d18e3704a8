"""The `drift_check` Lambda: on a schedule, compare live traffic with the production model's training snapshot,
watch the reward, store the report, publish metrics, and start retraining when something drifted.

The handler parses the scheduled event, runs one DriftMonitor pass and maps its outcome; the wiring below picks
the training backend: SageMaker when a role and an image are configured, or whatever TrainingJobs the caller
passes (the local job runner in the embedded cloud).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from rtrec.ports import Metrics, TrainingJobs
from rtrec.services.drift import DriftMonitor, DriftRunLog, ProductionSnapshot
from rtrec.services.retrain import RetrainTrigger
from rtrec.settings import DriftSettings

logger = Logger(service="rtrec-drift-check")


@dataclass
class DriftCheckHandler:
    monitor: DriftMonitor

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("detail-type") not in (None, "Scheduled Event"):
            logger.warning("not a scheduled event; running the check anyway", extra={"detail_type": event.get("detail-type")})
        outcome = self.monitor.run()
        report = outcome.report
        summary: dict[str, Any] = {
            "report": outcome.report_key,
            "drifted": report["drifted"],
            "reasons": report["reasons"],
            "model_version": report["model_version"],
            "window": report["window"],
        }
        if outcome.trigger is not None:
            summary["retraining"] = {
                "started": outcome.trigger.started,
                "job": outcome.trigger.job_name,
                "reason": outcome.trigger.reason,
            }
        logger.info("drift check", extra=summary)
        return summary


def build_handler(
    settings: DriftSettings,
    jobs: TrainingJobs | None = None,
    metrics: Metrics | None = None,
    run_log: DriftRunLog | None = None,
) -> DriftCheckHandler:
    """Wire the AWS adapters named by `settings`; `jobs` (the local job runner) beats SageMaker, `metrics` (EMF in
    Lambda) and `run_log` (MLflow locally) are optional."""
    from rtrec.adapters.aws.factory import AwsAdapters  # here: the handler's tests load no SDK

    aws = AwsAdapters.from_settings(settings)
    if jobs is None and settings.sagemaker_role_arn and settings.sagemaker_image_uri:
        env = {"MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri} if settings.mlflow_tracking_uri else {}
        jobs = aws.training_jobs(
            role_arn=settings.sagemaker_role_arn,
            image_uri=settings.sagemaker_image_uri,
            instance_type=settings.sagemaker_instance_type,
            environment=env,
        )
    trigger = None
    if jobs is not None:
        trigger = RetrainTrigger(
            aws.lock(),
            jobs,
            cooldown_seconds=settings.retrain_cooldown_seconds,
            hyperparameters=settings.retrain_hyperparameters,
        )
    else:
        logger.warning(
            "no training backend configured (RTREC_SAGEMAKER_ROLE_ARN and RTREC_SAGEMAKER_IMAGE_URI): "
            "drift is reported, retraining is not started"
        )
    monitor = DriftMonitor(
        aws.drift_sources(),
        aws.drift_store(),
        ProductionSnapshot(aws.model_store()),
        trigger,
        metrics,
        window_events=settings.drift_window_events,
        run_log=run_log,
    )
    return DriftCheckHandler(monitor)
