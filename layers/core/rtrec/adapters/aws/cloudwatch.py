"""CloudWatchMetrics: the Metrics port over PutMetricData, for processes that are not Lambdas
(inside Lambda, Powertools' embedded metric format is cheaper)."""

from __future__ import annotations

from typing import Any

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors


class CloudWatchMetrics:
    def __init__(
        self, namespace: str, client: Any = None, *, endpoint_url: str | None = None, region: str = "us-east-1"
    ) -> None:
        self.namespace = namespace
        self._client = client if client is not None else aws_client("cloudwatch", endpoint_url, region)

    def put(self, name: str, value: float, unit: str = "Count", dimensions: dict[str, str] | None = None) -> None:
        datum: dict[str, Any] = {"MetricName": name, "Value": float(value), "Unit": unit}
        if dimensions:
            datum["Dimensions"] = [{"Name": k, "Value": v} for k, v in sorted(dimensions.items())]
        with translate_aws_errors(f"putting metric {name}"):
            self._client.put_metric_data(Namespace=self.namespace, MetricData=[datum])
