"""Monitoring: the metric catalog is the one definition every emitter, dashboard and alarm uses; the API and the
consumer emit it (Prometheus locally, EMF in Lambda); the committed Grafana files are what the generator makes."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient
from mangum import Mangum
from prometheus_client.parser import text_string_to_metric_families

from functions.api.app import Services, create_app
from functions.api.observability import request_id
from rtrec.adapters.aws.powertools import EmfMetrics, lambda_observability
from rtrec.adapters.prometheus import PrometheusMetrics
from rtrec.errors import DependencyError
from rtrec.monitoring import dashboards
from rtrec.monitoring.catalog import (
    ALARMS,
    API_SERVICE,
    CATALOG,
    METRICS,
    PANELS,
    RECOMMEND_ROUTE,
    SERVICE,
    metric,
    namespace,
    search_expression,
)
from rtrec.monitoring.telemetry import Telemetry
from tests.unit.monitoring_world import RecordingMetrics, run_loop
from tests.unit.serving_world import behind_the_gateway, make_world
from tests.unit.test_api import LambdaContext, make_recommender


def samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


# -- the catalog -------------------------------------------------------------------------------------------------


def test_every_metric_telemetry_emits_is_in_the_catalog_with_its_unit_and_dimensions():
    sink = RecordingMetrics()
    telemetry = Telemetry(sink)
    telemetry.request("/recommend/{user_id}", 200, 0.012)
    telemetry.recommendation("two_tower", False, "3", True)
    telemetry.consumer_batch(
        records=10, failed=False, dead_lettered=1, iterator_age_ms=1500.0, slates=4, rewards=1, examples=40
    )
    telemetry.drift_check(
        {
            "generated_at": 1,
            "drifted": True,
            "features": [
                {"name": "user_age", "kind": "numeric", "statistic": "psi", "value": 0.31, "threshold": 0.2, "drifted": True}
            ],
            "reward": {},
        }
    )
    telemetry.retraining_run()
    telemetry.impressions_dropped(2)
    telemetry.impression_queue(5)
    emitted = {name for name, *_ in sink.puts}
    assert emitted == {s.name for s in METRICS if s.emitted_by == "rtrec"}  # every declared metric is emitted
    for name, _, unit, dims in sink.puts:
        spec = metric(name)
        assert unit == spec.unit, name
        assert tuple(dims) == spec.dimensions, name


def test_an_undeclared_metric_name_is_refused():
    with pytest.raises(KeyError, match="not in the metric catalog"):
        metric("Latencyy")


def test_panels_and_alarms_name_catalog_metrics_and_their_dimensions():
    for panel in PANELS:
        ids = {q.id for q in panel.queries}
        for query in panel.queries:
            if query.expression:
                assert set(query.expression.replace("/", " ").split()) <= ids, panel.title
                continue
            spec = metric(query.metric)
            assert set(query.dimensions) <= set(spec.cloudwatch_dimensions), (panel.title, query)
    for alarm in ALARMS:
        assert set(alarm.dimensions) <= set(metric(alarm.metric).cloudwatch_dimensions)
    assert {a.metric for a in ALARMS} == {"Latency", "Errors", "IteratorAge", "DriftDetected", "ImpressionsDropped"}
    assert len({s.prometheus for s in METRICS if s.prometheus}) == len([s for s in METRICS if s.prometheus])


def test_search_expressions_name_the_namespace_the_dimensions_and_the_fixed_values():
    score = next(q for p in PANELS for q in p.queries if q.metric == "DriftScore")
    assert search_expression("rtrec", score, 3600) == (
        "SEARCH('{rtrec,service,Feature} MetricName=\"DriftScore\" service=\"rtrec-drift-check\"', 'Maximum', 3600)"
    )
    assert search_expression(namespace("dev"), score, 60).startswith('SEARCH(\'{"rtrec/dev",service,Feature}')


# -- dashboards --------------------------------------------------------------------------------------------------


def test_the_committed_grafana_files_are_what_the_generator_makes():
    for relative, content in dashboards.grafana_files().items():
        path = dashboards.GRAFANA_DIR / relative
        assert path.exists(), f"{path} is missing: run .venv/bin/python -m rtrec.monitoring.dashboards"
        assert path.read_text() == content, f"{path} is stale: run .venv/bin/python -m rtrec.monitoring.dashboards"


def test_the_grafana_dashboard_queries_cloudwatch_for_every_panel():
    board = json.loads((dashboards.GRAFANA_DIR / "dashboards/rtrec.json").read_text())
    assert [p["title"] for p in board["panels"]] == [p.title for p in PANELS]
    latency = board["panels"][0]["targets"]
    assert [t["statistic"] for t in latency] == ["p50", "p90", "p99"]
    assert latency[0]["dimensions"] == {SERVICE: API_SERVICE, "Route": RECOMMEND_ROUTE}
    assert all(t["datasource"]["type"] == "cloudwatch" for p in board["panels"] for t in p["targets"])
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace", "region"}


def test_the_cloudwatch_dashboard_body_has_one_widget_per_panel():
    body = dashboards.cloudwatch_dashboard_body("rtrec", "eu-west-1")
    assert len(body["widgets"]) == len(PANELS)
    first = body["widgets"][0]["properties"]
    assert first["region"] == "eu-west-1"
    assert first["metrics"][2] == [
        "rtrec",
        "Latency",
        SERVICE,
        API_SERVICE,
        "Route",
        RECOMMEND_ROUTE,
        {"stat": "p99", "id": "p99", "visible": True, "label": "p99"},
    ]
    assert all(w["x"] + w["width"] <= 24 for w in body["widgets"])


# -- the API locally: Prometheus at /metrics ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_run():
    return run_loop(PrometheusMetrics(), requests=60)


def test_metrics_endpoint_exports_latency_per_route_errors_strategies_cold_users_and_the_model(prometheus_run):
    response = prometheus_run.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)
    strategies = {b["strategy"] for b in prometheus_run.responses}
    assert values["rtrec_request_latency_seconds_count{route=/recommend/{user_id}}"] == 61  # one of them a 422
    assert values["rtrec_request_latency_seconds_count{route=/events}"] == 60
    assert values["rtrec_requests_total{}"] == 121
    assert values["rtrec_request_client_errors_total{}"] == 1
    assert values["rtrec_request_errors_total{}"] == 0
    assert sum(values[f"rtrec_recommendations_total{{strategy={s}}}"] for s in strategies) == 60
    assert values["rtrec_cold_users_total{}"] == sum(b["cold_start"] for b in prometheus_run.responses)
    assert values["rtrec_serving_model_version{}"] == 2
    assert values["rtrec_serving_model_info{version=2}"] == 1
    assert "rtrec_serving_model_info{version=1}" not in values
    assert "process_cpu_seconds_total{}" in values
    again = samples(prometheus_run.client.get("/metrics").text)
    assert again["rtrec_requests_total{}"] == 121
    assert "rtrec_request_latency_seconds_count{route=/metrics}" not in again
    assert "/metrics" not in prometheus_run.client.get("/openapi.json").json()["paths"]


def test_each_response_carries_the_request_id_that_the_slate_is_logged_under(prometheus_run):
    assert [b["request_id"] for b in prometheus_run.responses] == prometheus_run.request_id_headers
    assert len(set(prometheus_run.request_id_headers)) == len(prometheus_run.request_id_headers)


def test_the_consumer_reports_records_resolved_slates_rewards_and_its_lag(prometheus_run):
    recorded = prometheus_run.consumer_metrics
    joined = prometheus_run.log.read_joined()
    assert recorded.total("ConsumerRecords") == 120  # 60 impressions + 60 events
    assert recorded.total("SlatesResolved") == len(joined) > 0
    assert recorded.total("Rewards") == sum(sum(j.rewards) for j in joined) > 0
    assert recorded.total("ConsumerFailedBatches") == 0
    assert recorded.total("OnlineRankerExamples") > 0
    ages = [v for name, v, *_ in recorded.puts if name == "IteratorAge"]
    assert ages
    assert all(1000 <= age < 600_000 for age in ages)


def test_an_unexpected_error_is_counted_as_a_5xx_with_its_route():
    sink = PrometheusMetrics(process_metrics=False)
    recommender = make_recommender()
    recommender.recommend = lambda *a, **k: 1 / 0  # a bug
    client = TestClient(create_app(Services(recommender), telemetry=Telemetry(sink)), raise_server_exceptions=False)
    assert client.get("/recommend/1").status_code == 500
    assert client.get("/no-such-route").status_code == 404
    values = samples(client.get("/metrics").text)
    assert values["rtrec_request_errors_total{}"] == 1
    assert values["rtrec_request_client_errors_total{}"] == 1
    assert values["rtrec_request_latency_seconds_count{route=/recommend/{user_id}}"] == 1
    assert values["rtrec_request_latency_seconds_count{route=unmatched}"] == 1


def test_the_consumer_lag_gauge_reads_its_value_at_scrape_time():
    sink = PrometheusMetrics(process_metrics=False)
    lag = [None]
    sink.watch("ConsumerMillisBehindLatest", lambda: lag[0])
    assert str(samples(sink.exposition()[0].decode())["rtrec_consumer_behind_latest_seconds{}"]) == "nan"
    lag[0] = 2500
    assert samples(sink.exposition()[0].decode())["rtrec_consumer_behind_latest_seconds{}"] == 2.5
    with pytest.raises(ValueError, match="not a gauge"):
        sink.watch("Requests", lambda: 1)


def test_without_telemetry_there_is_no_metrics_route():
    client = TestClient(create_app(Services(make_recommender())))
    assert client.get("/metrics").status_code == 404
    assert client.get("/recommend/1").headers["x-request-id"]


# -- Lambda: Powertools EMF, logs, cold start --------------------------------------------------------------------


def emf_lines(out: str) -> list[dict]:
    return [line for line in (json.loads(x) for x in out.splitlines() if x.startswith("{")) if "_aws" in line]


def test_the_api_lambda_writes_emf_with_the_catalog_names_and_the_cold_start(capsys, lambda_event):
    observability = lambda_observability(API_SERVICE, namespace("utest"))
    handler = observability.wrap(
        Mangum(create_app(behind_the_gateway(make_recommender()), telemetry=observability.telemetry), lifespan="off")
    )
    capsys.readouterr()
    response = handler(lambda_event("api_recommend_user_1.json"), LambdaContext())
    assert response["statusCode"] == 200
    lines = emf_lines(capsys.readouterr().out)
    by_metric = {m["Name"]: (line, d) for line in lines for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"Latency", "Requests", "Errors", "Recommendations", "ColdUsers"} <= set(by_metric)
    for name, (line, directive) in by_metric.items():
        assert directive["Namespace"] == "rtrec/utest"
        assert directive["Dimensions"] == [list(CATALOG[name].cloudwatch_dimensions)], name
        if name != "ColdStart":
            assert line[SERVICE] == API_SERVICE
    assert by_metric["Latency"][0]["Route"] == RECOMMEND_ROUTE
    assert by_metric["Recommendations"][0]["Strategy"] == "popular"


def test_the_api_logs_are_json_with_the_request_id_and_the_model_version(lambda_event):
    from functions.api.app import logger as api_logger

    observability = lambda_observability(API_SERVICE, "rtrec")
    recommender = make_world().recommender(request_ids=request_id)

    class StreamDown:
        def log_impression(self, result, caller=None):
            raise DependencyError("the stream is down")

    app = create_app(
        behind_the_gateway(recommender, model_version=lambda: "1", ingest=StreamDown()), telemetry=observability.telemetry
    )
    handler = observability.wrap(Mangum(app, lifespan="off"))
    event = lambda_event("api_recommend_user_1.json")
    event["path"] = event["requestContext"]["path"] = "/recommend/u1"
    event["pathParameters"] = {"user_id": "u1"}
    buffer = io.StringIO()
    capture = logging.StreamHandler(buffer)  # the app's own JSON formatter, into a buffer
    capture.setFormatter(api_logger.registered_formatter)
    logging.getLogger(API_SERVICE).addHandler(capture)
    try:
        body = json.loads(handler(event, LambdaContext())["body"])
    finally:
        logging.getLogger(API_SERVICE).removeHandler(capture)
    logs = [json.loads(line) for line in buffer.getvalue().splitlines()]
    impression = next(x for x in logs if x["message"] == "impression")
    assert body["model_version"] == "1"
    assert body["strategy"] == "two_tower"
    assert impression["request_id"] == body["request_id"]
    assert impression["model_version"] == "1"
    assert impression["function_request_id"] == LambdaContext.aws_request_id
    # a line logged without them (by the background task, after the response) carries both from the request's context
    warning = next(x for x in logs if x["message"] == "impression not logged to the stream")
    assert warning["request_id"] == body["request_id"]
    assert warning["model_version"] == "1"


def test_emf_metrics_with_extra_dimensions_are_one_line_per_dimension_set(capsys):
    from aws_lambda_powertools import Metrics

    sink = EmfMetrics(Metrics(namespace="rtrec", service=API_SERVICE), "rtrec", API_SERVICE)
    sink.put("DriftScore", 0.25, "None", {"Feature": "user_age"})
    sink.put("DriftScore", 0.5, "None", {"Feature": "genre_mix"})
    sink.put("DriftScore", 0.75, "None", {"Feature": "user_age"})
    assert emf_lines(capsys.readouterr().out) == []  # buffered until the invocation ends
    sink.flush()
    lines = {line["Feature"]: line for line in emf_lines(capsys.readouterr().out)}
    assert lines["user_age"]["DriftScore"] == [0.25, 0.75]
    assert lines["genre_mix"]["DriftScore"] == [0.5]
    assert lines["user_age"]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [[SERVICE, "Feature"]]
    assert all(line[SERVICE] == API_SERVICE for line in lines.values())
    sink.flush()
    assert emf_lines(capsys.readouterr().out) == []  # flushed once


def test_the_api_and_a_consumer_apart_expose_each_family_once():
    """`rtrec run`: the consumer's process keeps its metrics, the API's the rest and appends the consumer's text."""
    from rtrec_local.consumer_process import consumer_metric

    consumer = PrometheusMetrics(process_metrics=False, only=consumer_metric)
    api = PrometheusMetrics(only=lambda spec: not consumer_metric(spec))
    api.include(lambda: consumer.exposition()[0])
    consumer.put("ConsumerRecords", 7)
    consumer.put("Requests", 1)  # not the consumer's: left out of its registry
    api.put("Requests", 2)
    api.put("ConsumerRecords", 5)  # not the API's
    api.put("ServingModelVersion", 3, "None")
    consumer.watch("ConsumerMillisBehindLatest", lambda: 1500.0)
    api.watch("ConsumerMillisBehindLatest", lambda: 99.0)  # ignored: the consumer's process owns it
    text = api.exposition()[0].decode()
    names = [family.name for family in text_string_to_metric_families(text)]
    assert len(names) == len(set(names))
    values = samples(text)
    assert values["rtrec_consumer_records_total{}"] == 7
    assert values["rtrec_requests_total{}"] == 2
    assert values["rtrec_consumer_behind_latest_seconds{}"] == 1.5
    assert values["rtrec_serving_model_info{version=3}"] == 1
