"""Lambda observability with Powertools: structured JSON logs, CloudWatch metrics in the embedded metric format (EMF),
X-Ray traces. Only the Lambda entry points (functions/*/handler.py) import this module.

`EmfMetrics` is the `Metrics` port over Powertools: a metric without extra dimensions joins the invocation's
`Metrics` object (one EMF line per invocation, flushed by `log_metrics`); one with extra dimensions (Route, Strategy,
Feature) joins a Powertools `EphemeralMetrics` kept per dimension set (an EMF line has one dimension set), flushed at
the end of the invocation too. That is one EMF line per dimension set per invocation, and no `single_metric`, which
builds a provider per call (~35 us each, measured). EMF lines are stdout prints that CloudWatch Logs turns into
metrics: no API call on the request path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics

from rtrec.monitoring.telemetry import Telemetry

LambdaHandler = Callable[[dict[str, Any], Any], Any]


class EmfMetrics:
    """The Metrics port as CloudWatch EMF lines (Powertools)."""

    def __init__(self, metrics: Metrics, namespace: str, service: str) -> None:
        self.metrics = metrics
        self.namespace = namespace
        self.service = service
        # One buffer per dimension set (bounded: the catalog's routes, strategies and drift features).
        self._buffers: dict[tuple[tuple[str, str], ...], EphemeralMetrics] = {}

    def put(self, name: str, value: float, unit: str = "Count", dimensions: dict[str, str] | None = None) -> None:
        if not dimensions:
            self.metrics.add_metric(name=name, unit=unit, value=value)
            return
        key = tuple(dimensions.items())
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = EphemeralMetrics(
                namespace=self.namespace, service=self.service, default_dimensions={"service": self.service, **dimensions}
            )
        buffer.add_metric(name=name, unit=unit, value=value)

    def flush(self) -> None:
        """Write the buffered metrics with extra dimensions (one EMF line per dimension set that has any)."""
        for buffer in self._buffers.values():
            if buffer.metric_set:
                buffer.flush_metrics()


@dataclass
class LambdaObservability:
    """One deployable's Powertools Logger, Metrics and Tracer, and the `Telemetry` that emits through them."""

    logger: Logger
    metrics: Metrics
    tracer: Tracer
    emf: EmfMetrics
    telemetry: Telemetry

    def wrap(self, handler: LambdaHandler) -> LambdaHandler:
        """The Lambda entry point around `handler`: an X-Ray segment, the EMF flush with Powertools' ColdStart
        metric, and the Lambda context (request id, cold start) in every log line."""

        @self.tracer.capture_lambda_handler(capture_response=False)
        @self.metrics.log_metrics(capture_cold_start_metric=True)
        @self.logger.inject_lambda_context(clear_state=True)
        @functools.wraps(handler)
        def entry(event: dict[str, Any], context: Any) -> Any:
            try:
                return handler(event, context)
            finally:
                self.emf.flush()

        observed: Callable[[dict[str, Any], Any], Any] = entry  # Powertools' decorators return it untyped
        return observed


def lambda_observability(service: str, namespace: str, *, tracing: bool | None = None) -> LambdaObservability:
    """Powertools for one Lambda (`service` from the metric catalog, `namespace` from its settings). `tracing`
    None: Powertools decides (on in Lambda, off elsewhere and when POWERTOOLS_TRACE_DISABLED=true); False: off."""
    metrics = Metrics(namespace=namespace, service=service)
    tracer = Tracer(service=service, disabled=None if tracing is None else not tracing)
    emf = EmfMetrics(metrics, namespace, service)
    return LambdaObservability(Logger(service=service), metrics, tracer, emf, Telemetry(emf))
