"""Monitoring against the embedded cloud: the consumer Lambda module writes EMF, and `rtrec report` renders a page from
the counterfactual log and the drift reports in S3 and from a running API's /metrics over HTTP."""

from __future__ import annotations

import importlib
import json
import re
import sys
import threading
import time
import uuid

import pytest
from typer.testing import CliRunner

from functions.api.app import Services, create_app
from rtrec.adapters.aws.json_reports import DRIFT_REPORTS_PREFIX, S3JsonReports
from rtrec.adapters.prometheus import PrometheusMetrics
from rtrec.domain.events import Impression, UserEvent
from rtrec.monitoring.catalog import CONSUMER_SERVICE
from rtrec.monitoring.telemetry import Telemetry
from rtrec.resources import MODELS_BUCKET
from rtrec_local.cloud import free_port
from tests.integration.test_stream_consumer import Context, encoded, kinesis_event
from tests.unit.serving_world import make_world
from tests.unit.test_report import drift_reports

pytestmark = pytest.mark.integration


@pytest.fixture
def consumer_module(cloud, names, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", cloud.endpoint_url)
    monkeypatch.setenv("RTREC_PREFIX", names.prefix)
    sys.modules.pop("functions.stream_consumer.handler", None)
    module = importlib.import_module("functions.stream_consumer.handler")
    yield module
    sys.modules.pop("functions.stream_consumer.handler", None)


def slates_and_clicks(n: int, now: float) -> list:
    """`n` served slates, and a click naming every other one (on an item of it, or on another item)."""
    messages: list = []
    for i in range(n):
        user, request = f"m-{uuid.uuid4().hex[:8]}", f"req-{uuid.uuid4().hex}"
        messages.append(Impression(request, user, "7", "two_tower", ("1", "2", "3"), (0.5, 0.5, 1.0), (3, 2, 1), now + 60 * i))
        if i % 2 == 0:
            item = "2" if i % 4 == 0 else "9"
            messages.append(UserEvent(f"{request}-click", user, item, "click", now + 60 * i + 5, request_id=request))
    return messages


def test_the_consumer_lambda_writes_its_batch_metrics_as_emf(consumer_module, capsys, names):
    capsys.readouterr()
    batch = kinesis_event(encoded(*slates_and_clicks(4, time.time())))
    assert consumer_module.handler(batch, Context()) == {"batchItemFailures": []}
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith('{"_aws"')]
    values = {m["Name"]: line[m["Name"]] for line in lines for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    namespaces = {d["Namespace"] for line in lines for d in line["_aws"]["CloudWatchMetrics"]}
    assert namespaces == {names.metrics_namespace}
    assert values["ConsumerRecords"] in (6, [6.0], 6.0)
    assert "IteratorAge" in values
    assert "ConsumerBatches" in values
    assert all(line["service"] == CONSUMER_SERVICE for line in lines)


@pytest.fixture
def api_url():
    """A real API server (uvicorn, HTTP) with a Prometheus registry, over the in-memory serving world."""
    import uvicorn

    world = make_world()
    app = create_app(
        Services(world.recommender(), catalog=None),  # type: ignore[arg-type]
        telemetry=Telemetry(PrometheusMetrics()),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_rtrec_report_renders_the_cloud_s_log_and_drift_reports_and_the_api_s_latency(
    cloud, names, consumer_module, monkeypatch, tmp_path, api_url
):
    from rtrec.adapters.aws.clients import aws_client
    from rtrec_local.cli import app

    now = time.time()
    batch = kinesis_event(encoded(*slates_and_clicks(20, now - 3600)))  # the joins resolve as the slates go
    assert consumer_module.handler(batch, Context()) == {"batchItemFailures": []}
    s3 = aws_client("s3", cloud.endpoint_url)
    bucket = names.bucket(MODELS_BUCKET)
    for report in drift_reports(4, start=now - 4 * 3600):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(report["generated_at"]))
        s3.put_object(Bucket=bucket, Key=f"{DRIFT_REPORTS_PREFIX}{stamp}.json", Body=json.dumps(report).encode())
    s3.put_object(Bucket=bucket, Key=f"{DRIFT_REPORTS_PREFIX}99999999T999999Z.json", Body=b"not json")
    reports, skipped = S3JsonReports(bucket, endpoint_url=cloud.endpoint_url).read_all()
    assert len(reports) >= 4
    assert skipped == [f"{DRIFT_REPORTS_PREFIX}99999999T999999Z.json"]

    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["report", "--endpoint-url", cloud.endpoint_url, "--api-url", api_url, "--out", str(out), "--probe", "30"]
    )
    assert result.exit_code == 0, result.output
    assert "report written: file://" in result.output
    assert "not JSON objects" in result.output
    page = (out / "index.html").read_text()
    assert re.findall(r'<img src="([^"]+)"', page) == ["img/latency.png", "img/rates.png", "img/versions.png", "img/drift.png"]
    for image in out.glob("img/*.png"):
        assert image.stat().st_size > 15_000, image
    assert "30 of 30 GET /recommend calls" in page
    assert "server latency /recommend/{user_id}" in page
    assert "stream CTR" in page
    assert "online hit rate" in page
    assert "latest drift check" in page
