"""Another stack's resources, addressed by their deterministic names (`rtrec.resources` and `infra_cdk.config`).

No stack imports another's outputs: a grant names `arn:...:table/rtrec-user-features`, not an `Fn::ImportValue`.
CloudFormation exports lock the producing resource while a consumer imports it (a replaced table or layer could
not be deployed), and every name here is known before deployment anyway, since the embedded cloud uses the same
ones. The stacks still deploy in order: `build_stacks` adds the dependencies.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra_cdk.config import InfraConfig, function_name
from rtrec.resources import BucketSpec, QueueSpec, StreamSpec, TableSpec


class Refs(Construct):
    """References (no resources) to the data, streaming and compute stacks' resources, made once per stack."""

    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.names = config.names
        self._made: dict[str, object] = {}

    def _once(self, key: str, make):
        if key not in self._made:
            self._made[key] = make()
        return self._made[key]

    def table(self, spec: TableSpec) -> dynamodb.ITable:
        name = self.names.table(spec)
        return self._once(f"table:{name}", lambda: dynamodb.Table.from_table_name(self, f"Table-{name}", name))

    def bucket(self, spec: BucketSpec) -> s3.IBucket:
        name = self.names.bucket(spec)
        return self._once(f"bucket:{name}", lambda: s3.Bucket.from_bucket_name(self, f"Bucket-{name}", name))

    def queue(self, spec: QueueSpec) -> sqs.IQueue:
        name = self.names.queue(spec)
        arn = Stack.of(self).format_arn(service="sqs", resource=name, arn_format=ArnFormat.NO_RESOURCE_NAME)
        return self._once(f"queue:{name}", lambda: sqs.Queue.from_queue_arn(self, f"Queue-{name}", arn))

    def stream(self, spec: StreamSpec) -> kinesis.IStream:
        name = self.names.stream(spec)
        arn = Stack.of(self).format_arn(service="kinesis", resource="stream", resource_name=name)
        return self._once(f"stream:{name}", lambda: kinesis.Stream.from_stream_arn(self, f"Stream-{name}", arn))

    def function(self, name: str) -> lambda_.IFunction:
        physical = function_name(self.config, name)
        return self._once(
            f"function:{physical}", lambda: lambda_.Function.from_function_name(self, f"Function-{physical}", physical)
        )

    def arn(self, service: str, resource: str, resource_name: str) -> str:
        return Stack.of(self).format_arn(service=service, resource=resource, resource_name=resource_name)
