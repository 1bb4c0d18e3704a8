"""The metric catalog: every metric rtrec emits, and the dashboard panels and alarms built on them.

One definition for all of its readers, so that none can drift from the others:
- the Lambda handlers emit these names through Powertools' embedded metric format (`Telemetry` over `EmfMetrics`);
- the local API's `/metrics` exports them in Prometheus format (`PrometheusMetrics`, the `prometheus` names);
- the CDK monitoring stack builds its CloudWatch dashboard (`cloudwatch_dashboard_body`) and alarms (`ALARMS`) from here;
- the Grafana dashboard JSON in `monitoring/grafana/` is generated from `PANELS` (a test keeps it in step).

CloudWatch dimensions: every metric carries `service` (Powertools' service name of the deployable that emits it)
plus the names in `MetricSpec.dimensions`. Ratios are emitted as 0/1 values per unit of work, so a rate is the
`Average` statistic (error rate = Average of `Errors`, cold-user rate = Average of `ColdUsers`), which an alarm can
use without metric math. Pure data: no SDK is imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from rtrec.resources import METRICS_NAMESPACE

Unit = Literal["Count", "Milliseconds", "Seconds", "None", "Percent"]
Kind = Literal["counter", "histogram", "gauge"]

# Powertools service names: the `service` dimension of every metric a deployable emits (and its logger's service).
API_SERVICE = "rtrec-api"
CONSUMER_SERVICE = "rtrec-stream-consumer"
DRIFT_SERVICE = "rtrec-drift-check"
LOCAL_SERVICE = "rtrec-local"  # the embedded cloud's own machinery (the local event source mapping); never in AWS
ANY_LAMBDA = "*"  # emitted by every Lambda handler (Powertools' cold-start metric)

SERVICE = "service"
ROUTE = "Route"
STRATEGY = "Strategy"
FEATURE = "Feature"
FUNCTION_NAME = "function_name"  # Powertools' cold-start metric carries the function's name

RECOMMEND_ROUTE = "/recommend/{user_id}"
EVENTS_ROUTE = "/events"
STRATEGIES: tuple[str, ...] = ("two_tower", "cold_user_features", "popular_fallback", "popular")


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its CloudWatch name, unit and dimensions, and its name in the local Prometheus registry."""

    name: str
    unit: Unit
    kind: Kind  # how Prometheus keeps it; CloudWatch keeps every value (so percentiles work for all)
    service: str
    description: str
    dimensions: tuple[str, ...] = ()  # beyond `service`
    prometheus: str = ""  # "" = not exported locally; counters get Prometheus' `_total` suffix
    emitted_by: Literal["rtrec", "powertools", "local"] = "rtrec"

    @property
    def cloudwatch_dimensions(self) -> tuple[str, ...]:
        return (FUNCTION_NAME, SERVICE) if self.emitted_by == "powertools" else (SERVICE, *self.dimensions)

    @property
    def in_cloudwatch(self) -> bool:
        return self.emitted_by != "local"


METRICS: tuple[MetricSpec, ...] = (
    # -- the api Lambda (and the local API) ----------------------------------------------------------------------
    MetricSpec(
        "Latency",
        "Milliseconds",
        "histogram",
        API_SERVICE,
        "time from a request reaching the app to its last response byte (background tasks excluded), "
        "per route template; p50/p90/p99",
        (ROUTE,),
        "rtrec_request_latency_seconds",
    ),
    MetricSpec("Requests", "Count", "counter", API_SERVICE, "requests answered (throughput)", (), "rtrec_requests"),
    MetricSpec(
        "Errors",
        "Count",
        "counter",
        API_SERVICE,
        "1 per request answered with a 5xx, 0 otherwise: Average = server error rate",
        (),
        "rtrec_request_errors",
    ),
    MetricSpec(
        "ClientErrors",
        "Count",
        "counter",
        API_SERVICE,
        "1 per request answered with a 4xx, 0 otherwise: Average = client error rate",
        (),
        "rtrec_request_client_errors",
    ),
    MetricSpec(
        "Recommendations",
        "Count",
        "counter",
        API_SERVICE,
        "slates served, per strategy (the strategy mix)",
        (STRATEGY,),
        "rtrec_recommendations",
    ),
    MetricSpec(
        "ColdUsers",
        "Count",
        "counter",
        API_SERVICE,
        "1 per slate served to a user without history (a cold start), 0 otherwise: Average = cold-user rate",
        (),
        "rtrec_cold_users",
    ),
    MetricSpec(
        "RankedOnline",
        "Count",
        "counter",
        API_SERVICE,
        "1 per slate the online ranker's score took part in, 0 otherwise",
        (),
        "rtrec_ranked_online",
    ),
    MetricSpec(
        "ServingModelVersion",
        "None",
        "gauge",
        API_SERVICE,
        "the production model version that served the slate (none while popular items are served)",
        (),
        "rtrec_serving_model_version",
    ),
    MetricSpec(
        "ImpressionsDropped",
        "Count",
        "counter",
        API_SERVICE,
        "impressions never put on the stream: the producer's buffer was full (a long Kinesis outage or "
        "throttling), or they were still unsent when it shut down; alarmed",
        (),
        "rtrec_impressions_dropped",
    ),
    MetricSpec(
        "ImpressionQueueDepth",
        "Count",
        "gauge",
        API_SERVICE,
        "impressions buffered by the producer, not yet on the stream (after each send; in Lambda, after the "
        "end-of-invocation flush)",
        (),
        "rtrec_impression_queue_depth",
    ),
    # -- every Lambda: Powertools' log_metrics(capture_cold_start_metric=True) ----------------------------------
    MetricSpec(
        "ColdStart",
        "Count",
        "counter",
        ANY_LAMBDA,
        "1 per Lambda cold start (Powertools); divided by AWS/Lambda Invocations: the cold-start rate",
        emitted_by="powertools",
    ),
    # -- the stream_consumer Lambda (and the local event source mapping's handler) ------------------------------
    MetricSpec(
        "ConsumerBatches", "Count", "counter", CONSUMER_SERVICE, "Kinesis batches handled", (), "rtrec_consumer_batches"
    ),
    MetricSpec(
        "ConsumerRecords",
        "Count",
        "counter",
        CONSUMER_SERVICE,
        "stream records handled (throughput)",
        (),
        "rtrec_consumer_records",
    ),
    MetricSpec(
        "ConsumerFailedBatches",
        "Count",
        "counter",
        CONSUMER_SERVICE,
        "1 per batch reported for re-delivery, 0 otherwise: Average = batch failure rate",
        (),
        "rtrec_consumer_failed_batches",
    ),
    MetricSpec(
        "DeadLettered",
        "Count",
        "counter",
        CONSUMER_SERVICE,
        "records sent to the dead-letter queue (malformed, or could not be applied)",
        (),
        "rtrec_consumer_dead_lettered",
    ),
    MetricSpec(
        "IteratorAge",
        "Milliseconds",
        "gauge",
        CONSUMER_SERVICE,
        "age of the batch's oldest record when the handler took it (consumer lag; Lambda's IteratorAge)",
        (),
        "rtrec_consumer_iterator_age_seconds",
    ),
    MetricSpec(
        "SlatesResolved",
        "Count",
        "counter",
        CONSUMER_SERVICE,
        "served slates joined with their outcome (rewarded, or replaced unchosen)",
        (),
        "rtrec_slates_resolved",
    ),
    MetricSpec(
        "Rewards",
        "Count",
        "counter",
        CONSUMER_SERVICE,
        "rewards of resolved slates (chosen items): Rewards / SlatesResolved = the stream's CTR",
        (),
        "rtrec_slate_rewards",
    ),
    MetricSpec(
        "OnlineRankerExamples",
        "Count",
        "counter",
        CONSUMER_SERVICE,
        "examples the online ranker learned",
        (),
        "rtrec_online_ranker_examples",
    ),
    # -- the drift_check Lambda --------------------------------------------------------------------------------
    MetricSpec("DriftChecks", "Count", "counter", DRIFT_SERVICE, "drift checks run", (), "rtrec_drift_checks"),
    MetricSpec(
        "DriftDetected",
        "Count",
        "gauge",
        DRIFT_SERVICE,
        "1 when the latest check found drift, 0 when not: Maximum >= 1 alarms",
        (),
        "rtrec_drift_detected",
    ),
    MetricSpec(
        "DriftedFeatures",
        "Count",
        "gauge",
        DRIFT_SERVICE,
        "features over their threshold in the latest check",
        (),
        "rtrec_drifted_features",
    ),
    MetricSpec(
        "DriftScore",
        "None",
        "gauge",
        DRIFT_SERVICE,
        "each feature's drift statistic (PSI, Jensen-Shannon, MMD, ...) in the latest check",
        (FEATURE,),
        "rtrec_drift_score",
    ),
    MetricSpec("RetrainingRuns", "Count", "counter", DRIFT_SERVICE, "retraining jobs started", (), "rtrec_retraining_runs"),
    # -- the embedded cloud only -------------------------------------------------------------------------------
    MetricSpec(
        "ConsumerMillisBehindLatest",
        "Milliseconds",
        "gauge",
        LOCAL_SERVICE,
        "the local event source mapping's lag behind the stream's tip, max over shards: Kinesis' "
        "MillisBehindLatest or, when larger, the iterator age (kinesalite answers MillisBehindLatest 0 but "
        "for closed shards); NaN before the first read",
        (),
        "rtrec_consumer_behind_latest_seconds",
        emitted_by="local",
    ),
    MetricSpec(
        "MappingIteratorAge",
        "Milliseconds",
        "gauge",
        LOCAL_SERVICE,
        "the local event source mapping's iterator age: age of the oldest record of the batch last delivered, "
        "max over shards, growing while a batch keeps failing (what Lambda's own IteratorAge shows in AWS); "
        "0 once caught up",
        (),
        "rtrec_mapping_iterator_age_seconds",
        emitted_by="local",
    ),
    MetricSpec(
        "MappingStalledShards",
        "Count",
        "gauge",
        LOCAL_SERVICE,
        "shards of the local event source mapping that are not moving (a dependency down, or a record being "
        "isolated and retried)",
        (),
        "rtrec_mapping_stalled_shards",
        emitted_by="local",
    ),
    MetricSpec(
        "MappingFailedBatches",
        "Count",
        "counter",
        LOCAL_SERVICE,
        "deliveries the local event source mapping saw fail (handler raised or reported a failure), systemic "
        "ones included (the handler's own ConsumerFailedBatches misses a batch it raised on)",
        (),
        "rtrec_mapping_failed_batches",
        emitted_by="local",
    ),
)

CATALOG: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}


def metric(name: str) -> MetricSpec:
    """The spec of `name`; a KeyError names the catalog, so a typo cannot emit an undeclared metric."""
    try:
        return CATALOG[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the metric catalog (rtrec.monitoring.catalog.METRICS)") from None


def namespace(prefix: str = "rtrec") -> str:
    """The CloudWatch namespace of a deployment (as `ResourceNames.metrics_namespace`)."""
    return METRICS_NAMESPACE if prefix == "rtrec" else f"{METRICS_NAMESPACE}/{prefix}"


# -- dashboards ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One line of a panel: a catalog metric with a statistic (dimension value "*" = every value, via SEARCH), or a
    metric-math expression over the other lines' ids."""

    id: str
    label: str
    metric: str = ""
    stat: str = "Sum"
    dimensions: Mapping[str, str] = field(default_factory=dict)  # beyond `service`
    expression: str = ""
    hidden: bool = False  # an input of an expression, not drawn

    @property
    def is_search(self) -> bool:
        return any(v == "*" for v in self.dimensions.values())


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"  # Grafana's unit id: ms, short, percentunit, none
    period_s: int = 60
    description: str = ""


def _latency(route: str) -> tuple[Query, ...]:
    return tuple(Query(p, p, "Latency", p, {ROUTE: route}) for p in ("p50", "p90", "p99"))


PANELS: tuple[Panel, ...] = (
    Panel(
        f"Latency {RECOMMEND_ROUTE}", _latency(RECOMMEND_ROUTE), "ms", description="app latency of GET /recommend, p50/p90/p99"
    ),
    Panel(f"Latency {EVENTS_ROUTE}", _latency(EVENTS_ROUTE), "ms", description="app latency of POST /events"),
    Panel("Throughput (requests per minute)", (Query("requests", "requests", "Requests", "Sum"),)),
    Panel(
        "Error rate",
        (Query("errors", "5xx", "Errors", "Average"), Query("client", "4xx", "ClientErrors", "Average")),
        "percentunit",
        description="share of requests answered with a 5xx (alarmed) and a 4xx",
    ),
    Panel("Strategy mix (slates per minute)", tuple(Query(s, s, "Recommendations", "Sum", {STRATEGY: s}) for s in STRATEGIES)),
    Panel(
        "Cold-start rate",
        (
            Query("cold", "users served cold", "ColdUsers", "Average"),
            Query("online", "slates ranked online", "RankedOnline", "Average"),
        ),
        "percentunit",
    ),
    Panel(
        "Lambda cold starts",
        (Query("coldstart", "cold starts", "ColdStart", "Sum", {FUNCTION_NAME: "*"}),),
        description="Powertools' ColdStart metric of every function",
    ),
    Panel("Serving model version", (Query("version", "model version", "ServingModelVersion", "Maximum"),), "none"),
    Panel(
        "Impression producer",
        (
            Query("dropped", "impressions dropped", "ImpressionsDropped", "Sum"),
            Query("depth", "buffered (max)", "ImpressionQueueDepth", "Maximum"),
        ),
        description="impressions dropped before reaching the stream, and the producer's buffer depth",
    ),
    Panel(
        "Stream CTR (rewarded / resolved slates)",
        (
            Query("rewards", "rewards", "Rewards", "Sum", hidden=True),
            Query("slates", "slates", "SlatesResolved", "Sum", hidden=True),
            Query("ctr", "CTR", expression="rewards / slates"),
        ),
        "percentunit",
        300,
    ),
    Panel(
        "Consumer throughput",
        (
            Query("records", "records", "ConsumerRecords", "Sum"),
            Query("dlq", "dead-lettered", "DeadLettered", "Sum"),
            Query("failed", "failed batches", "ConsumerFailedBatches", "Sum"),
        ),
    ),
    Panel("Consumer lag (iterator age)", (Query("age", "iterator age (max)", "IteratorAge", "Maximum"),), "ms"),
    Panel("Online ranker examples learned", (Query("examples", "examples", "OnlineRankerExamples", "Sum"),)),
    Panel(
        "Drift scores",
        (
            Query("score", "", "DriftScore", "Maximum", {FEATURE: "*"}),
            Query("detected", "drift detected", "DriftDetected", "Maximum"),
        ),
        "none",
        3600,
    ),
    Panel("Retraining runs", (Query("runs", "runs started", "RetrainingRuns", "Sum"),), "short", 3600),
)


# -- alarms --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmSpec:
    """A CloudWatch alarm on one catalog metric (the CDK monitoring stack creates one per spec)."""

    name: str  # suffix of the alarm name: `<prefix>-<name>`
    metric: str
    stat: str
    threshold: float
    comparison: Literal["GreaterThanThreshold", "GreaterThanOrEqualToThreshold"]
    description: str
    dimensions: Mapping[str, str] = field(default_factory=dict)  # beyond `service`
    period_s: int = 60
    evaluation_periods: int = 5
    datapoints_to_alarm: int = 3
    treat_missing_data: Literal["notBreaching", "breaching", "ignore", "missing"] = "notBreaching"


ALARMS: tuple[AlarmSpec, ...] = (
    AlarmSpec(
        "recommend-latency-p99",
        "Latency",
        "p99",
        250.0,
        "GreaterThanThreshold",
        "GET /recommend p99 latency above 250 ms in 3 of 5 minutes",
        {ROUTE: RECOMMEND_ROUTE},
    ),
    AlarmSpec(
        "api-error-rate",
        "Errors",
        "Average",
        0.01,
        "GreaterThanThreshold",
        "more than 1% of API requests answered with a 5xx in 3 of 5 minutes",
    ),
    AlarmSpec(
        "impressions-dropped",
        "ImpressionsDropped",
        "Sum",
        0.0,
        "GreaterThanThreshold",
        "the API dropped impressions (its producer's buffer overflowed, or it shut down with some unsent): "
        "the counterfactual log and the online ranker miss them",
        evaluation_periods=1,
        datapoints_to_alarm=1,
    ),
    # The handler's own IteratorAge: emitted per batch it handles. A stuck shard (the handler raising on a systemic
    # failure) emits none, so the monitoring stack adds the same alarm on Lambda's IteratorAge (AWS/Lambda), which
    # the Lambda service reports for every invocation, failed ones included (`stream-consumer-lambda-iterator-age`).
    AlarmSpec(
        "consumer-iterator-age",
        "IteratorAge",
        "Maximum",
        60_000.0,
        "GreaterThanThreshold",
        "the stream consumer is more than a minute behind in 3 of 5 minutes",
    ),
    AlarmSpec(
        "drift-detected",
        "DriftDetected",
        "Maximum",
        1.0,
        "GreaterThanOrEqualToThreshold",
        "the latest drift check found drift (retraining is started by the check itself)",
        period_s=3600,
        evaluation_periods=1,
        datapoints_to_alarm=1,
    ),
)


def dimensions_of(spec: MetricSpec, extra: Mapping[str, str]) -> dict[str, str]:
    """The full CloudWatch dimensions of one line: `service` first, then `extra` (which may hold "*")."""
    if spec.emitted_by == "powertools":
        return dict(extra)
    return {SERVICE: spec.service, **extra}


def search_expression(namespace_: str, query: Query, period_s: int) -> str:
    """A CloudWatch SEARCH over every value of the query's "*" dimensions (e.g. DriftScore per feature)."""
    spec = metric(query.metric)
    dims = dimensions_of(spec, query.dimensions)
    schema = ",".join([f'"{namespace_}"' if "/" in namespace_ else namespace_, *spec.cloudwatch_dimensions])
    terms = " ".join([f'MetricName="{spec.name}"', *(f'{k}="{v}"' for k, v in dims.items() if v != "*")])
    return f"SEARCH('{{{schema}}} {terms}', '{query.stat}', {period_s})"
