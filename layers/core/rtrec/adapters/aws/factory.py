"""AwsAdapters: the one place that builds the AWS adapters of a deployment from its settings.

Every adapter gets its physical name from the deployment's `ResourceNames`, and the endpoint and region from
the settings; the adapters of one service share one boto3 client (clients are thread-safe, and each one built
costs a Lambda cold start some milliseconds). A wiring asks for what it needs:

    aws = AwsAdapters.from_settings(settings)
    features = aws.feature_store()
    recommender = Recommender(features, aws.popularity_store(), ...)

Building an adapter calls no AWS API: the clients connect on their first request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.cloudwatch import CloudWatchMetrics
from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.json_reports import S3JsonReports
from rtrec.adapters.aws.kinesis import KinesisEventStream
from rtrec.adapters.aws.kinesis_producer import KinesisImpressionProducer
from rtrec.adapters.aws.locks import DynamoLock
from rtrec.adapters.aws.model_store import S3ModelStore
from rtrec.adapters.aws.s3 import (
    S3CatalogAdditions,
    S3CounterfactualLog,
    S3DriftSources,
    S3DriftStore,
    S3PopularityStore,
    S3RankerStateStore,
)
from rtrec.adapters.aws.sagemaker import SageMakerJobConfig, SageMakerTrainingJobs
from rtrec.adapters.aws.sqs import SqsDeadLetterQueue
from rtrec.resources import (
    COUNTERFACTUAL_BUCKET,
    EVENTS_STREAM,
    ITEM_FEATURES,
    LOCKS,
    MODELS_BUCKET,
    OFFLINE_STORE_BUCKET,
    USER_FEATURES,
    ResourceNames,
)

if TYPE_CHECKING:
    from rtrec.settings import AwsSettings


class AwsAdapters:
    """The AWS adapters of one deployment (`names`), at `endpoint_url` (None: real AWS) in `region`.

    `clients` replaces the client of a service (`{"dynamodb": client}`), as a test does to inject failures;
    the others are built on first use, once per service."""

    def __init__(
        self,
        names: ResourceNames,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        self.names = names
        self.endpoint_url = endpoint_url
        self.region = region
        self._clients: dict[str, Any] = dict(clients or {})
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: AwsSettings, *, clients: Mapping[str, Any] | None = None) -> AwsAdapters:
        """The adapters of the deployment `settings` name (any deployable's settings: they all extend AwsSettings)."""
        return cls(settings.names, endpoint_url=settings.endpoint_url, region=settings.region, clients=clients)

    def client(self, service: str) -> Any:
        """The one boto3 client of `service` these adapters share."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = aws_client(service, self.endpoint_url, self.region)
            return self._clients[service]

    # -- DynamoDB --------------------------------------------------------------------------------------------------

    def feature_store(self, *, consistent_profile_reads: bool = False) -> DynamoFeatureStore:
        """User and item features; `consistent_profile_reads` for a read-modify-write of profiles (the consumer)."""
        return DynamoFeatureStore(
            self.names.table(USER_FEATURES),
            self.names.table(ITEM_FEATURES),
            client=self.client("dynamodb"),
            consistent_profile_reads=consistent_profile_reads,
        )

    def lock(self) -> DynamoLock:
        """The locks table (the retraining cool-down)."""
        return DynamoLock(self.names.table(LOCKS), client=self.client("dynamodb"))

    # -- S3 --------------------------------------------------------------------------------------------------------

    def model_store(self) -> S3ModelStore:
        return S3ModelStore(self.names.bucket(MODELS_BUCKET), client=self.client("s3"))

    def popularity_store(self) -> S3PopularityStore:
        return S3PopularityStore(self.names.bucket(MODELS_BUCKET), client=self.client("s3"))

    def catalog_additions(self) -> S3CatalogAdditions:
        return S3CatalogAdditions(self.names.bucket(MODELS_BUCKET), client=self.client("s3"))

    def ranker_state_store(self) -> S3RankerStateStore:
        return S3RankerStateStore(self.names.bucket(MODELS_BUCKET), client=self.client("s3"))

    def counterfactual_log(self) -> S3CounterfactualLog:
        return S3CounterfactualLog(self.names.bucket(COUNTERFACTUAL_BUCKET), client=self.client("s3"))

    def drift_sources(self) -> S3DriftSources:
        """What arrived in the counterfactual log since the drift check's cursor."""
        return S3DriftSources(self.names.bucket(COUNTERFACTUAL_BUCKET), client=self.client("s3"))

    def drift_store(self) -> S3DriftStore:
        """The drift check's state and reports."""
        return S3DriftStore(self.names.bucket(MODELS_BUCKET), client=self.client("s3"))

    def drift_reports(self) -> S3JsonReports:
        """The drift reports as JSON objects (read by `rtrec report`)."""
        return S3JsonReports(self.names.bucket(MODELS_BUCKET), client=self.client("s3"))

    # -- Kinesis, SQS ----------------------------------------------------------------------------------------------

    def event_stream(self) -> KinesisEventStream:
        return KinesisEventStream(self.names.stream(EVENTS_STREAM), client=self.client("kinesis"))

    def impression_producer(self, stream: KinesisEventStream | None = None, **options: Any) -> KinesisImpressionProducer:
        """Impressions batched onto `stream` (default: a new handle on the events stream); `options` are
        KinesisImpressionProducer's (buffer bounds, linger, overflow, background sender, telemetry)."""
        return KinesisImpressionProducer(stream if stream is not None else self.event_stream(), **options)

    def dead_letter_queue(self) -> SqsDeadLetterQueue:
        """The events DLQ, with its bucket for the letters SQS cannot hold."""
        return SqsDeadLetterQueue.for_names(
            self.names,
            endpoint_url=self.endpoint_url,
            region=self.region,
            client=self.client("sqs"),
            s3_client=self.client("s3"),
        )

    # -- CloudWatch, SageMaker -------------------------------------------------------------------------------------

    def metrics(self, namespace: str | None = None) -> CloudWatchMetrics:
        """CloudWatch metrics under `namespace` (default: the deployment's)."""
        return CloudWatchMetrics(namespace or self.names.metrics_namespace, client=self.client("cloudwatch"))

    def training_jobs(
        self,
        *,
        role_arn: str,
        image_uri: str,
        instance_type: str = "ml.m5.xlarge",
        environment: Mapping[str, str] | None = None,
    ) -> SageMakerTrainingJobs:
        """SageMaker training jobs reading the offline store and writing under the models bucket's `jobs/`."""
        config = SageMakerJobConfig(
            role_arn=role_arn,
            image_uri=image_uri,
            train_s3_uri=f"s3://{self.names.bucket(OFFLINE_STORE_BUCKET)}/train/",
            output_s3_uri=f"s3://{self.names.bucket(MODELS_BUCKET)}/jobs/",
            instance_type=instance_type,
            environment=dict(environment or {}),
        )
        return SageMakerTrainingJobs(config, client=self.client("sagemaker"))
