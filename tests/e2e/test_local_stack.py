"""`rtrec run` as a user starts it (what `make run` does), called over HTTP, stopped with Ctrl-C, restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec_local.cloud import free_port

pytestmark = pytest.mark.e2e

RTREC = [sys.executable, "-m", "rtrec_local.cli"]


def start(args: list[str], state_dir: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RTREC_"))}
    env.update({"RTREC_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1"})
    return subprocess.Popen(RTREC + args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def wait_for(predicate, what: str, process: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what}: the process exited with {process.returncode}:\n{log.read_text()}")
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{what}: not ready after {timeout_s:.0f}s:\n{log.read_text()}")


def stop(process: subprocess.Popen, log: Path) -> None:
    process.send_signal(signal.SIGINT)
    try:
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()


def run_cli(args: list[str], state_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RTREC_"))}
    env.update({"RTREC_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1"})
    return subprocess.run(
        RTREC + args + ["--state-dir", str(state_dir)] if args[0] in STATEFUL else RTREC + args,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


STATEFUL = ("train", "shadow", "promote")


def model_version(base: str) -> str | None:
    return httpx.get(f"{base}/health").json()["model_version"]


def test_run_bootstraps_a_model_serves_it_and_state_survives_a_restart(tmp_path):
    state_dir = tmp_path / "state"
    cloud_port, api_port = free_port(), free_port()
    base = f"http://127.0.0.1:{api_port}"
    log = tmp_path / "run.log"
    run = [
        "run",
        "--cloud-port",
        str(cloud_port),
        "--api-port",
        str(api_port),
        "--dataset",
        "ml-100k",
        "--bootstrap-epochs",
        "2",
        "--model-poll-seconds",
        "1",
        "--drift-check-seconds",
        "5",
        "--promote-check-seconds",
        "5",
    ]
    process = start(run, state_dir, log)
    try:
        wait_for(lambda: httpx.get(f"{base}/health").status_code == 200, "rtrec run", process, log)

        # Served at once: popular items until the bootstrap model is promoted (or the model, if it already is).
        response = httpx.get(f"{base}/recommend/1")
        assert response.status_code == 200
        assert response.json()["strategy"] in ("popular", "two_tower")
        assert len(response.json()["recommendations"]) == 10
        assert httpx.get(f"{base}/recommend/1", params={"k": 500}).status_code == 422
        assert httpx.get(f"{base}/docs").status_code == 200

        wait_for(lambda: model_version(base) == "1", "the bootstrap model", process, log, timeout_s=600)
        body = httpx.get(f"{base}/recommend/1").json()
        assert body["strategy"] == "two_tower"
        assert body["model_version"] == "1"
        assert body["cold_start"] is False
        stranger = httpx.get(f"{base}/recommend/not-a-user", params={"k": 3}).json()
        assert stranger["cold_start"] is True
        assert stranger["strategy"] == "popular_fallback"
        assert len(stranger["recommendations"]) == 3
        # An event goes through Kinesis and the stream consumer into the profile: the clicked item leaves the slate.
        slate = httpx.get(f"{base}/recommend/1", params={"k": 1}).json()
        top = slate["recommendations"][0]["item_id"]
        click = {
            "event_id": "e2e-click-1",
            "user_id": "1",
            "item_id": top,
            "type": "click",
            "timestamp": time.time(),
            "request_id": slate["request_id"],
        }
        assert httpx.post(f"{base}/events", json={"events": [click]}).status_code == 202
        features = DynamoFeatureStore(
            "rtrec-user-features", "rtrec-item-features", endpoint_url=f"http://localhost:{cloud_port}"
        )
        wait_for(
            lambda: features.get_user("1").history[-1] == top, "the click to reach the profile", process, log, timeout_s=30
        )
        assert all(
            top not in [r["item_id"] for r in httpx.get(f"{base}/recommend/1").json()["recommendations"]] for _ in range(5)
        )
        assert httpx.post(f"{base}/events", json={"events": [{**click, "type": "rating"}]}).status_code == 422
        # The click named its slate: the consumer joined them, the online ranker learned it, serving reloaded it.
        wait_for(
            lambda: httpx.get(f"{base}/health").json()["online_ranker_examples"] >= 1,
            "the online ranker to learn the rewarded slate",
            process,
            log,
            timeout_s=30,
        )
        # The consumer runs in a process of its own: /health reads its lag, /metrics carries its metrics, each
        # family once beside the API's.
        assert httpx.get(f"{base}/health").json()["consumer"]["source"] == "local"
        exposition = httpx.get(f"{base}/metrics").text
        families = [f.name for f in text_string_to_metric_families(exposition)]
        assert len(families) == len(set(families))
        assert "rtrec_requests" in families
        assert any(
            line.startswith("rtrec_consumer_records_total ") and float(line.split()[-1]) >= 1
            for line in exposition.splitlines()
        )

        # A second model as the shadow candidate: serving scores it beside production and logs its probabilities;
        # `rtrec ope` estimates it; the scheduled gate waits for enough shadow-scored traffic; the drift check runs.
        endpoint = f"http://localhost:{cloud_port}"
        # The bootstrap's recipe again: its offline metrics match production's, so the gate goes on to the
        # off-policy check, which waits for more shadow-scored traffic than this test sends.
        trained = run_cli(
            [
                "train",
                "--dataset",
                "ml-100k",
                "--hp",
                "epochs=2",
                "--hp",
                "protocols=recbole",
                "--hp",
                "baselines=false",
                "--hp",
                "threads=1",
                "--hp",
                "item_to_item=false",
            ],
            state_dir,
        )
        assert "registered rtrec-two-tower version 2" in trained.stdout, trained.stdout[-2000:]
        shadow = run_cli(["shadow", "--endpoint-url", endpoint], state_dir)
        assert "version 2 is the shadow candidate" in shadow.stdout, shadow.stdout + shadow.stderr

        def shadow_scored() -> bool:
            httpx.get(f"{base}/recommend/2")
            return httpx.get(f"{base}/health").json()["shadow_version"] == "2"

        wait_for(shadow_scored, "serving to score the shadow candidate", process, log, timeout_s=30)
        for n in range(3):
            slate = httpx.get(f"{base}/recommend/3", params={"k": 5}).json()
            assert slate["model_version"] == "1"  # users still see production's slates
            chosen = slate["recommendations"][n]["item_id"]
            assert (
                httpx.post(
                    f"{base}/events",
                    json={
                        "events": [
                            {
                                "event_id": f"e2e-shadow-{n}",
                                "user_id": "3",
                                "item_id": chosen,
                                "type": "click",
                                "timestamp": time.time(),
                                "request_id": slate["request_id"],
                            }
                        ]
                    },
                ).status_code
                == 202
            )

        def estimated() -> bool:
            return "candidate: cascade DR" in run_cli(["ope", "--endpoint-url", endpoint], state_dir).stdout

        wait_for(estimated, "rtrec ope to estimate the shadow candidate", process, log, timeout_s=60)
        wait_for(
            lambda: "waiting for shadow-scored traffic" in log.read_text() and "drift check:" in log.read_text(),
            "the scheduled promotion gate and drift check",
            process,
            log,
            timeout_s=60,
        )
        assert model_version(base) == "1"

        item = {"item_id": "e2e-new", "title": "Brand New (2026)", "genres": ["Comedy"], "year": 2026}
        assert httpx.post(f"{base}/items", json=item).status_code == 401  # the admin key is required locally too
        admin_key = json.loads((state_dir / "api-keys.json").read_text())["admin"]
        assert f"  admin  {admin_key}" in log.read_text()  # printed for the person at the terminal
        assert httpx.post(f"{base}/items", json=item, headers={"X-Api-Key": admin_key}).status_code == 201
        assert httpx.get(f"{base}/items/e2e-new/similar").status_code == 200
        gone = {**item, "item_id": "e2e-gone"}
        assert httpx.post(f"{base}/items", json=gone, headers={"X-Api-Key": admin_key}).status_code == 201
        assert httpx.delete(f"{base}/items/e2e-gone").status_code == 401
        assert httpx.delete(f"{base}/items/e2e-gone", headers={"X-Api-Key": admin_key}).status_code == 204
        assert httpx.get(f"{base}/items/e2e-gone/similar").status_code == 404  # out of serving at once
        output = log.read_text()
        assert f"http://localhost:{cloud_port}" in output
        assert f"{base}/docs" in output
        assert "[bootstrap]" in output
        assert "is now `production`" in output
    finally:
        stop(process, log)

    # The durable cloud's S3 (s3rver) keeps every object in the state folder as it is written, not only on Ctrl-C.
    objects = state_dir / "cloud" / "s3" / "rtrec-models"
    saved = objects / "popularity" / "current.json._S3rver_object"
    assert saved.exists(), "the popularity snapshot should be in the state folder"
    assert (objects / "models" / "production.json._S3rver_object").exists()
    top_item = json.loads(saved.read_text())["items"][0]["item_id"]

    # Started again: the promoted model and the added item come back from the saved state, no bootstrap.
    log = tmp_path / "run-again.log"
    process = start(run, state_dir, log)
    try:
        wait_for(lambda: httpx.get(f"{base}/health").status_code == 200, "rtrec run again", process, log)
        assert model_version(base) == "1"
        assert "production model: version 1" in log.read_text()
        assert httpx.get(f"{base}/items/e2e-new/similar").status_code == 200
        assert httpx.get(f"{base}/items/e2e-gone/similar").status_code == 404  # the tombstone survives too
        assert "[bootstrap]" not in log.read_text()
    finally:
        stop(process, log)

    # The cloud alone, not re-seeded: what was saved is served from S3 again.
    log = tmp_path / "cloud.log"
    process = start(["cloud", "up", "--port", str(cloud_port), "--no-seed"], state_dir, log)
    try:
        wait_for(lambda: "press Ctrl-C" in log.read_text(), "rtrec cloud up", process, log, timeout_s=60)
        s3 = aws_client("s3", f"http://localhost:{cloud_port}")
        restored = json.loads(s3.get_object(Bucket="rtrec-models", Key="popularity/current.json")["Body"].read())
        assert restored["items"][0]["item_id"] == top_item
        assert (
            aws_client("dynamodb", f"http://localhost:{cloud_port}").describe_table(TableName="rtrec-user-features")["Table"][
                "TableStatus"
            ]
            == "ACTIVE"
        )
    finally:
        stop(process, log)
