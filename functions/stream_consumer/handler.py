"""The `stream_consumer` Lambda entry point (Kinesis event source mapping, ReportBatchItemFailures).

Observability (Powertools): JSON logs with the Lambda request id, per-batch metrics as CloudWatch EMF (records,
failures, dead-lettered records, iterator age, resolved slates and rewards, online-ranker examples) plus the
ColdStart metric, and an X-Ray segment per invocation.
"""

from __future__ import annotations

from rtrec.adapters.aws.powertools import lambda_observability
from rtrec.monitoring.catalog import CONSUMER_SERVICE
from rtrec.settings import ConsumerSettings

from .app import build_handler

# Module scope: settings validated and clients built once per container (the Lambda cold start).
settings = ConsumerSettings()
observability = lambda_observability(CONSUMER_SERVICE, settings.names.metrics_namespace)
consumer = build_handler(settings, telemetry=observability.telemetry)
handler = observability.wrap(consumer)
