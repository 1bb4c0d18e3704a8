"""The retraining adapters against the embedded cloud: the cool-down lock (DynamoDB conditional writes) and
SageMaker's CreateTrainingJob / ListTrainingJobs."""

from __future__ import annotations

import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from rtrec.adapters.aws.locks import DynamoLock
from rtrec.adapters.aws.sagemaker import SageMakerJobConfig, SageMakerTrainingJobs
from rtrec.resources import LOCKS
from rtrec_local.jobs import LocalJobRunner, LocalTrainingJobs

pytestmark = pytest.mark.integration


def test_only_one_of_many_concurrent_takers_gets_the_lock_until_it_expires(cloud, names):
    lock = DynamoLock(names.table(LOCKS), endpoint_url=cloud.endpoint_url, region=cloud.region)
    name = f"retrain-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda i: lock.acquire(name, f"owner-{i}", now=1_000.0, ttl_seconds=100), range(8)))
    assert won.count(True) == 1
    holder = lock.holder(name)
    assert holder is not None
    assert holder.owner == f"owner-{won.index(True)}"
    assert holder.expires_at == 1_100
    assert not lock.acquire(name, "late", now=1_099.0, ttl_seconds=100)
    assert not lock.release(name, "late")  # only the holder releases
    assert lock.acquire(name, "after-expiry", now=1_100.0, ttl_seconds=100, note="drift/reports/x.json")
    assert lock.holder(name).note == "drift/reports/x.json"
    assert lock.release(name, "after-expiry")
    assert lock.holder(name) is None


def test_sagemaker_jobs_are_created_with_the_contract_and_listed_while_in_progress(cloud, client):
    config = SageMakerJobConfig(
        role_arn="arn:aws:iam::123456789012:role/rtrec-training",
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/rtrec-training:latest",
        train_s3_uri="s3://rtrec-offline-store/train/",
        output_s3_uri="s3://rtrec-models/jobs/",
        environment={"MLFLOW_TRACKING_URI": "https://mlflow.example"},
    )
    jobs = SageMakerTrainingJobs(config, endpoint_url=cloud.endpoint_url, region=cloud.region)
    prefix = f"rtrec-retrain-{uuid.uuid4().hex[:6]}"
    arn = jobs.start(f"{prefix}-1", {"epochs": "3"}, {"trigger": "drift", "drift_report": "drift/reports/a.json"})
    assert arn.endswith(f"{prefix}-1")
    described = client("sagemaker").describe_training_job(TrainingJobName=f"{prefix}-1")
    assert described["HyperParameters"] == {"epochs": "3"}
    assert described["InputDataConfig"][0]["ChannelName"] == "train"
    tags = {t["Key"]: t["Value"] for t in client("sagemaker").list_tags(ResourceArn=arn)["Tags"]}
    assert tags == {"trigger": "drift", "drift_report": "drift/reports/a.json"}
    assert isinstance(jobs.in_progress(prefix), list)  # moto reports its own status; the call shape is what counts


def test_local_jobs_are_in_progress_while_their_process_lives(tmp_path):
    script = tmp_path / "slow_job.py"
    script.write_text("import time\ntime.sleep(30)\n")
    runner = LocalJobRunner(tmp_path / "jobs", python=sys.executable, module="slow_job")
    jobs = LocalTrainingJobs(runner, channels={}, env={"PYTHONPATH": str(tmp_path)})
    jobs.start("rtrec-retrain-a", {"epochs": "1"}, {"trigger": "drift"})
    try:
        assert jobs.in_progress("rtrec-retrain") == ["rtrec-retrain-a"]
        # Another process (a restarted `rtrec run`) sees it through the pid the job folder records.
        assert LocalTrainingJobs(runner, {}, {}).in_progress("rtrec-retrain") == ["rtrec-retrain-a"]
    finally:
        jobs.job("rtrec-retrain-a").process.kill()
        jobs.job("rtrec-retrain-a").process.wait()
    assert jobs.in_progress("rtrec-retrain") == []
    assert LocalTrainingJobs(runner, {}, {}).in_progress("rtrec-retrain") == []
