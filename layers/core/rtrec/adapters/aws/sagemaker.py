"""SageMakerTrainingJobs: the TrainingJobs port over SageMaker's CreateTrainingJob.

The job runs the same entry point as the local runner (`python -m training.job` in the training image), with
the offline store as its `train` channel; the environment carries the registry URI and the run tags, as the
local runner passes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors


@dataclass(frozen=True)
class SageMakerJobConfig:
    role_arn: str
    image_uri: str
    train_s3_uri: str  # the offline store prefix (stream logs + the original data's wheel)
    output_s3_uri: str
    instance_type: str = "ml.m5.xlarge"
    max_runtime_seconds: int = 3 * 3600
    environment: Mapping[str, str] = field(default_factory=dict)  # MLFLOW_TRACKING_URI, AWS endpoint, ...


class SageMakerTrainingJobs:
    def __init__(
        self, config: SageMakerJobConfig, client: Any = None, *, endpoint_url: str | None = None, region: str = "us-east-1"
    ) -> None:
        self.config = config
        self._client = client if client is not None else aws_client("sagemaker", endpoint_url, region)

    def start(self, name: str, hyperparameters: Mapping[str, str], tags: Mapping[str, str]) -> str:
        c = self.config
        request = {
            "TrainingJobName": name,
            "HyperParameters": {k: str(v) for k, v in hyperparameters.items()},
            "AlgorithmSpecification": {"TrainingImage": c.image_uri, "TrainingInputMode": "File"},
            "RoleArn": c.role_arn,
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": c.train_s3_uri,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                }
            ],
            "OutputDataConfig": {"S3OutputPath": c.output_s3_uri},
            "ResourceConfig": {"InstanceType": c.instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": c.max_runtime_seconds},
            "Environment": {**c.environment, "RTREC_RUN_TAGS": json.dumps(dict(tags))},
            "Tags": [{"Key": k, "Value": str(v)[:256]} for k, v in tags.items()],
        }
        with translate_aws_errors(f"starting training job {name}"):
            return str(self._client.create_training_job(**request)["TrainingJobArn"])

    def in_progress(self, prefix: str) -> list[str]:
        names: list[str] = []
        with translate_aws_errors("listing training jobs"):
            paginator = self._client.get_paginator("list_training_jobs")
            for page in paginator.paginate(NameContains=prefix, StatusEquals="InProgress"):
                names += [
                    j["TrainingJobName"]
                    for j in page.get("TrainingJobSummaries", [])
                    if j["TrainingJobName"].startswith(prefix)
                ]
        return names
