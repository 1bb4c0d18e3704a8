"""The `drift_check` Lambda entry point (an EventBridge schedule).

Observability (Powertools): JSON logs with the Lambda request id, the check's metrics as CloudWatch EMF (namespace
from the settings) plus the ColdStart metric, and an X-Ray segment per invocation.
"""

from __future__ import annotations

from rtrec.adapters.aws.powertools import lambda_observability
from rtrec.monitoring.catalog import DRIFT_SERVICE
from rtrec.settings import DriftSettings

from .app import build_handler

# Module scope: settings validated and clients built once per container (the Lambda cold start).
settings = DriftSettings()
observability = lambda_observability(DRIFT_SERVICE, settings.names.metrics_namespace)
check = build_handler(settings, metrics=observability.emf)
handler = observability.wrap(check)
