"""Monitoring: the CloudWatch dashboard and alarms.

The project's own metrics (EMF lines from Powertools) come from the metric catalog, `rtrec.monitoring.catalog`:
one dashboard widget per `PANELS` entry and one alarm per `ALARMS` entry, so the dashboard, the alarms, the
handlers' metric names and the Grafana dashboard cannot drift apart. Beside them, the AWS service metrics that only
AWS sees (API Gateway 5xx, Lambda errors and throttles, the dead-letter queue, Kinesis throttling) get a row of
widgets and their own alarms. Every alarm notifies one SNS topic.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra_cdk.config import InfraConfig, rest_api_name
from infra_cdk.stacks.refs import Refs
from rtrec.monitoring.catalog import ALARMS, PANELS, AlarmSpec, Panel, Query, dimensions_of, metric, search_expression
from rtrec.resources import EVENTS_DLQ, EVENTS_STREAM

COMPARISON = {
    "GreaterThanThreshold": cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
    "GreaterThanOrEqualToThreshold": cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
}
MISSING = {
    "notBreaching": cw.TreatMissingData.NOT_BREACHING,
    "breaching": cw.TreatMissingData.BREACHING,
    "ignore": cw.TreatMissingData.IGNORE,
    "missing": cw.TreatMissingData.MISSING,
}
WIDGET_WIDTH = 8  # three widgets a row (the dashboard grid is 24 wide)


def catalog_metric(namespace: str, query: Query, period_s: int) -> cw.IMetric:
    """One catalog query as a CloudWatch metric (a SEARCH expression when a dimension is "*")."""
    period = Duration.seconds(period_s)
    if query.is_search:
        return cw.MathExpression(
            expression=search_expression(namespace, query, period_s), label=query.label or " ", period=period
        )
    spec = metric(query.metric)
    return cw.Metric(
        namespace=namespace,
        metric_name=spec.name,
        dimensions_map=dimensions_of(spec, query.dimensions),
        statistic=query.stat,
        period=period,
        label=query.label or None,
    )


def panel_metrics(namespace: str, panel: Panel) -> list[cw.IMetric]:
    """The drawn lines of a panel: plain queries, and expressions over the hidden ones (by their ids)."""
    inputs = {q.id: catalog_metric(namespace, q, panel.period_s) for q in panel.queries if not q.expression}
    lines: list[cw.IMetric] = []
    for q in panel.queries:
        if q.expression:
            used = {i: m for i, m in inputs.items() if i in q.expression}
            lines.append(
                cw.MathExpression(
                    expression=q.expression, using_metrics=used, label=q.label, period=Duration.seconds(panel.period_s)
                )
            )
        elif not q.hidden:
            lines.append(inputs[q.id])
    return lines


def catalog_alarm_metric(namespace: str, spec: AlarmSpec) -> cw.Metric:
    m = metric(spec.metric)
    return cw.Metric(
        namespace=namespace,
        metric_name=m.name,
        dimensions_map=dimensions_of(m, spec.dimensions),
        statistic=spec.stat,
        period=Duration.seconds(spec.period_s),
    )


class MonitoringStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        refs = Refs(self, "Refs", config=config)
        namespace = config.names.metrics_namespace
        self.topic = sns.Topic(
            self,
            "Alarms",
            topic_name=f"{config.prefix}-alarms",
            display_name="rtrec alarms",
            master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"),
            enforce_ssl=True,
        )
        if config.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        action = cw_actions.SnsAction(self.topic)

        self.alarms: list[cw.Alarm] = []
        self.alarm_names: list[str] = []

        def alarm(
            alarm_id: str,
            name: str,
            metric_: cw.IMetric,
            threshold: float,
            description: str,
            *,
            comparison: cw.ComparisonOperator = cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods: int = 1,
            datapoints: int = 1,
            missing: cw.TreatMissingData = cw.TreatMissingData.NOT_BREACHING,
        ) -> None:
            made = cw.Alarm(
                self,
                alarm_id,
                alarm_name=f"{config.prefix}-{name}",
                metric=metric_,
                threshold=threshold,
                comparison_operator=comparison,
                evaluation_periods=evaluation_periods,
                datapoints_to_alarm=datapoints,
                treat_missing_data=missing,
                alarm_description=description,
            )
            made.add_alarm_action(action)
            self.alarms.append(made)
            self.alarm_names.append(f"{config.prefix}-{name}")

        # The catalog's alarms, on the project's own metrics.
        for spec in ALARMS:
            alarm(
                f"Catalog{_camel(spec.name)}",
                spec.name,
                catalog_alarm_metric(namespace, spec),
                spec.threshold,
                spec.description,
                comparison=COMPARISON[spec.comparison],
                evaluation_periods=spec.evaluation_periods,
                datapoints=spec.datapoints_to_alarm,
                missing=MISSING[spec.treat_missing_data],
            )

        # What only AWS sees.
        five_min = Duration.minutes(5)
        api = ApiMetrics(rest_api_name(config))
        functions = {name: refs.function(name) for name in ("api", "stream-consumer", "drift-check")}
        dlq, stream = refs.queue(EVENTS_DLQ), refs.stream(EVENTS_STREAM)
        alarm(
            "Api5xx",
            "api-gateway-5xx",
            api.metric("5XXError", period=five_min, statistic="Sum"),
            5,
            "API Gateway answered 5xx (the app's own error metric misses crashes, timeouts and throttles)",
        )
        alarm(
            "DlqMessages",
            "dlq-messages",
            dlq.metric_approximate_number_of_messages_visible(period=five_min, statistic="Maximum"),
            1,
            "records reached the dead-letter queue: `rtrec dlq show`, fix, `rtrec dlq redrive`",
        )
        # The consumer's lag as the Lambda service sees it: AWS/Lambda IteratorAge is reported for every invocation of
        # the event source mapping, failed and retried ones included, so a stuck shard (the handler raising on a
        # systemic failure, or bisecting a poison record) moves it where the handler's own IteratorAge stays silent.
        consumer_fn = functions["stream-consumer"]
        alarm(
            "StreamConsumerIteratorAge",
            "stream-consumer-lambda-iterator-age",
            consumer_fn.metric("IteratorAge", period=Duration.minutes(1), statistic="Maximum"),
            60_000,
            "the stream consumer's event source mapping is more than a minute behind (Lambda's IteratorAge, failed "
            "batches included): a stuck or lagging shard; see `rtrec dlq show` and the consumer's errors",
            comparison=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=5,
            datapoints=3,
        )
        alarm(
            "StreamWriteThrottles",
            "stream-write-throttles",
            stream.metric_put_records_throttled_records(period=five_min, statistic="Sum"),
            1,
            "Kinesis refused records for lack of shard capacity: add shards",
        )
        for name, fn in functions.items():
            alarm(
                f"{_camel(name)}Errors",
                f"{name}-errors",
                fn.metric_errors(period=five_min, statistic="Sum"),
                1,
                f"the {name} Lambda raised (invocation errors)",
                evaluation_periods=3,
                datapoints=2,
            )
            alarm(
                f"{_camel(name)}Throttles",
                f"{name}-throttles",
                fn.metric_throttles(period=five_min, statistic="Sum"),
                1,
                f"the {name} Lambda was throttled (concurrency)",
                evaluation_periods=3,
                datapoints=2,
            )

        dashboard = cw.Dashboard(
            self, "Dashboard", dashboard_name=f"{config.prefix}-overview", default_interval=Duration.hours(3)
        )
        catalog_widgets = [cw.GraphWidget(title=p.title, left=panel_metrics(namespace, p), width=WIDGET_WIDTH) for p in PANELS]
        aws_widgets = [
            cw.GraphWidget(
                title="API Gateway requests and errors",
                width=WIDGET_WIDTH,
                left=[
                    api.metric(name, period=Duration.minutes(1), statistic="Sum") for name in ("Count", "4XXError", "5XXError")
                ],
            ),
            cw.GraphWidget(
                title="API Gateway latency (p99)",
                width=WIDGET_WIDTH,
                left=[api.metric(name, statistic="p99") for name in ("Latency", "IntegrationLatency")],
            ),
            cw.GraphWidget(
                title="Lambda errors and throttles",
                width=WIDGET_WIDTH,
                left=[fn.metric_errors(label=f"{n} errors") for n, fn in functions.items()]
                + [fn.metric_throttles(label=f"{n} throttles") for n, fn in functions.items()],
            ),
            cw.GraphWidget(
                title="Lambda duration (p99)",
                width=WIDGET_WIDTH,
                left=[fn.metric_duration(statistic="p99", label=n) for n, fn in functions.items()],
            ),
            cw.GraphWidget(
                title="Kinesis: incoming records, iterator age",
                width=WIDGET_WIDTH,
                left=[stream.metric_incoming_records()],
                right=[
                    stream.metric_get_records_iterator_age_milliseconds(statistic="Maximum"),
                    functions["stream-consumer"].metric(
                        "IteratorAge", statistic="Maximum", label="consumer Lambda IteratorAge"
                    ),
                ],
            ),
            cw.GraphWidget(
                title="Dead-letter queue depth",
                width=WIDGET_WIDTH,
                left=[dlq.metric_approximate_number_of_messages_visible(statistic="Maximum")],
            ),
        ]
        dashboard.add_widgets(
            cw.TextWidget(markdown=f"# {config.prefix}: serving, stream, drift (metric catalog)", width=24, height=1)
        )
        for row in _rows(catalog_widgets):
            dashboard.add_widgets(*row)
        dashboard.add_widgets(cw.TextWidget(markdown="# AWS services", width=24, height=1))
        for row in _rows(aws_widgets):
            dashboard.add_widgets(*row)
        # By name, not by reference: the widget then needs no Fn::GetAtt of the alarms (which moto cannot create).
        by_name = [cw.Alarm.from_alarm_name(self, f"Status{i}", name) for i, name in enumerate(self.alarm_names)]
        dashboard.add_widgets(cw.AlarmStatusWidget(alarms=by_name, title="Alarms", width=24))
        self.dashboard = dashboard


class ApiMetrics:
    """API Gateway's metrics of the REST API named `api_name` (the `ApiName` dimension, as RestApi.metric_* use)."""

    def __init__(self, api_name: str) -> None:
        self.api_name = api_name

    def metric(self, name: str, *, statistic: str, period: Duration = Duration.minutes(5)) -> cw.Metric:
        return cw.Metric(
            namespace="AWS/ApiGateway",
            metric_name=name,
            dimensions_map={"ApiName": self.api_name},
            statistic=statistic,
            period=period,
        )


def _rows(widgets: list[cw.IWidget], per_row: int = 24 // WIDGET_WIDTH) -> list[list[cw.IWidget]]:
    return [widgets[i : i + per_row] for i in range(0, len(widgets), per_row)]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))
