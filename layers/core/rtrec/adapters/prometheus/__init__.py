"""PrometheusMetrics: the Metrics port as a Prometheus registry, exported by the local API at `/metrics`.

Every catalog metric with a `prometheus` name gets one collector, created up front with the catalog's dimensions (less
`service`) as labels: counters for counts (Prometheus adds `_total`), a histogram for latency, gauges for levels.
Milliseconds become seconds, Prometheus' base unit. The serving model version is also exported as an info-style
gauge (`rtrec_serving_model_info{version="3"} 1`). One registry per instance (not the process-global one), so tests
can build many; `rtrec run` builds one for the API and the stream consumer it runs in the same process.

Multiple processes (uvicorn `--workers N`) would each keep their own registry; locally the API runs in one process,
so no multiprocess mode is needed (see the README's Monitoring section).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import gc_collector as _gc
from prometheus_client import platform_collector as _platform
from prometheus_client import process_collector as _process

from rtrec.monitoring.catalog import METRICS, MetricSpec, metric

# Request latency buckets (seconds): fine where the API answers (1-50 ms), coarse above.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class PrometheusMetrics:
    """The Metrics port over a prometheus-client registry."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        process_metrics: bool = True,
        only: Callable[[MetricSpec], bool] | None = None,
    ) -> None:
        """`only`: the catalog metrics this registry keeps (all by default). `rtrec run` splits them: the stream
        consumer's process keeps its own, the API's process the rest and appends the consumer's text (`include`),
        so /metrics shows each family once."""
        self.registry = registry if registry is not None else CollectorRegistry()
        if process_metrics:
            _process.ProcessCollector(registry=self.registry)
            _platform.PlatformCollector(registry=self.registry)
            _gc.GCCollector(registry=self.registry)
        self._collectors: dict[str, tuple[Counter | Histogram | Gauge, bool, float]] = {}
        for spec in METRICS:
            if spec.prometheus and (only is None or only(spec)):
                self._collectors[spec.name] = self._collector(spec)
        self._model_info = (
            Gauge(
                "rtrec_serving_model_info",
                "the production model version serving (value 1)",
                ["version"],
                registry=self.registry,
            )
            if "ServingModelVersion" in self._collectors
            else None
        )
        self._model_version: str | None = None
        self._included: list[Callable[[], bytes]] = []

    def _collector(self, spec: MetricSpec) -> tuple[Counter | Histogram | Gauge, bool, float]:
        labels = [d.lower() for d in spec.dimensions]
        name, doc = spec.prometheus, f"{spec.description} [CloudWatch: {spec.name}]"
        scale = 0.001 if spec.unit == "Milliseconds" else 1.0
        collector: Counter | Histogram | Gauge
        if spec.kind == "counter":
            collector = Counter(name, doc, labels, registry=self.registry)
        elif spec.kind == "histogram":
            collector = Histogram(name, doc, labels, registry=self.registry, buckets=LATENCY_BUCKETS)
        else:
            collector = Gauge(name, doc, labels, registry=self.registry)
        return collector, bool(labels), scale

    def put(self, name: str, value: float, unit: str = "Count", dimensions: dict[str, str] | None = None) -> None:
        entry = self._collectors.get(name)
        if entry is None:
            return  # a CloudWatch-only metric
        collector, labelled, scale = entry
        child = collector.labels(*dimensions.values()) if labelled and dimensions else collector
        if isinstance(child, Counter):
            child.inc(value)
        elif isinstance(child, Histogram):
            child.observe(value * scale)
        else:
            child.set(value * scale)
            if name == "ServingModelVersion":
                self._set_model_info(str(int(value)))

    def _set_model_info(self, version: str) -> None:
        if self._model_info is not None and version != self._model_version:
            if self._model_version is not None:
                self._model_info.remove(self._model_version)
            self._model_info.labels(version).set(1)
            self._model_version = version

    def watch(self, name: str, read: Callable[[], float | None]) -> None:
        """Make the gauge `name` read its value at scrape time (e.g. the local consumer's lag); None reads as NaN."""
        spec = metric(name)
        if spec.name not in self._collectors:
            return  # left out of this registry (`only`)
        collector, _, scale = self._collectors[spec.name]
        if not isinstance(collector, Gauge):
            raise ValueError(f"{name} is a {spec.kind}, not a gauge")

        def value() -> float:
            raw = read()
            return math.nan if raw is None else float(raw) * scale

        collector.set_function(value)

    def include(self, read: Callable[[], bytes]) -> None:
        """Append another process's metrics (Prometheus text, families this registry leaves out) to `exposition`."""
        self._included.append(read)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format (and what `include` adds), and its content type."""
        return generate_latest(self.registry) + b"".join(read() for read in self._included), CONTENT_TYPE_LATEST
