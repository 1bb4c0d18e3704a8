"""Telemetry: the emit helpers the handlers call, in the catalog's terms, written through a `Metrics` port.

The port's adapters decide where the numbers go: `EmfMetrics` (Powertools' embedded metric format: CloudWatch, in
Lambda), `PrometheusMetrics` (the local API's `/metrics`), `CloudWatchMetrics` (PutMetricData, for processes that are
not Lambdas). Every name used here is checked against the catalog by a unit test, and a `Telemetry` without a sink
costs one attribute test per call, so the app and the consumer can always hold one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from rtrec.monitoring.catalog import FEATURE, ROUTE, STRATEGY
from rtrec.ports import Metrics


class Telemetry:
    """Typed emit helpers over one `Metrics` sink (None: a no-op, for tests and tools that measure nothing)."""

    def __init__(self, sink: Metrics | None = None) -> None:
        self.sink = sink

    @property
    def exposition(self) -> Callable[[], tuple[bytes, str]] | None:
        """The sink's Prometheus text exposition (body, content type), when it has one (the local API's /metrics)."""
        return getattr(self.sink, "exposition", None)

    # -- the API -----------------------------------------------------------------------------------------------

    def request(self, route: str, status: int, seconds: float) -> None:
        """One answered request: latency per route template, throughput, and the 5xx / 4xx indicators."""
        sink = self.sink
        if sink is None:
            return
        sink.put("Latency", seconds * 1000.0, "Milliseconds", {ROUTE: route})
        sink.put("Requests", 1, "Count")
        sink.put("Errors", 1 if status >= 500 else 0, "Count")
        sink.put("ClientErrors", 1 if 400 <= status < 500 else 0, "Count")

    def recommendation(self, strategy: str, cold_start: bool, model_version: str | None, ranked_online: bool) -> None:
        """One slate served: the strategy mix, the cold-user indicator, and the serving model version."""
        sink = self.sink
        if sink is None:
            return
        sink.put("Recommendations", 1, "Count", {STRATEGY: strategy})
        sink.put("ColdUsers", 1 if cold_start else 0, "Count")
        sink.put("RankedOnline", 1 if ranked_online else 0, "Count")
        if model_version is not None and model_version.isdigit():  # registry versions are integers
            sink.put("ServingModelVersion", int(model_version), "None")

    def impressions_dropped(self, count: int) -> None:
        """Impressions the producer dropped (its buffer full, or still unsent at shutdown), never sent to the stream."""
        if self.sink is not None and count:
            self.sink.put("ImpressionsDropped", count, "Count")

    def impression_queue(self, depth: int) -> None:
        """The impression producer's buffer: records waiting to be put on the stream (after a send or a flush)."""
        if self.sink is not None:
            self.sink.put("ImpressionQueueDepth", depth, "Count")

    # -- the stream consumer -----------------------------------------------------------------------------------

    def consumer_batch(
        self,
        *,
        records: int,
        failed: bool,
        dead_lettered: int = 0,
        iterator_age_ms: float | None = None,
        slates: int = 0,
        rewards: int = 0,
        examples: int = 0,
    ) -> None:
        """One Kinesis batch handled (or reported for re-delivery: `failed`)."""
        sink = self.sink
        if sink is None:
            return
        sink.put("ConsumerBatches", 1, "Count")
        sink.put("ConsumerRecords", records, "Count")
        sink.put("ConsumerFailedBatches", 1 if failed else 0, "Count")
        if dead_lettered:
            sink.put("DeadLettered", dead_lettered, "Count")
        if iterator_age_ms is not None and math.isfinite(iterator_age_ms):
            sink.put("IteratorAge", max(0.0, iterator_age_ms), "Milliseconds")
        if slates:
            sink.put("SlatesResolved", slates, "Count")
            sink.put("Rewards", rewards, "Count")
        if examples:
            sink.put("OnlineRankerExamples", examples, "Count")

    # -- drift and retraining ----------------------------------------------------------------------------------

    def drift_check(self, report: Mapping[str, Any]) -> None:
        """One drift report, as written to `drift/reports/<timestamp>.json`: whether it drifted, how many features
        did, and each feature's statistic (`features[].name`, `.value`)."""
        sink = self.sink
        if sink is None:
            return
        features = list(report.get("features") or ())
        sink.put("DriftChecks", 1, "Count")
        sink.put("DriftDetected", 1 if report.get("drifted") else 0, "Count")
        sink.put("DriftedFeatures", sum(1 for f in features if f.get("drifted")), "Count")
        for feature in features:
            value = feature.get("value")
            if isinstance(value, int | float) and math.isfinite(value):
                sink.put("DriftScore", float(value), "None", {FEATURE: str(feature.get("name"))})

    def retraining_run(self) -> None:
        """A retraining job was started (by a drift check, or on a schedule)."""
        if self.sink is not None:
            self.sink.put("RetrainingRuns", 1, "Count")


NO_TELEMETRY = Telemetry(None)
