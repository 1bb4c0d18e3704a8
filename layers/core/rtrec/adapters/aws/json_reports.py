"""S3JsonReports: the JSON objects under one prefix of a bucket, such as the drift check's
`drift/reports/<UTC timestamp>.json` in the models bucket (read by `rtrec report`)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.s3 import DRIFT_REPORTS_PREFIX, list_objects, read_object

__all__ = ["DRIFT_REPORTS_PREFIX", "S3JsonReports"]


class S3JsonReports:
    def __init__(
        self,
        bucket: str,
        prefix: str = DRIFT_REPORTS_PREFIX,
        client: Any = None,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = client if client is not None else aws_client("s3", endpoint_url, region)

    def read_all(self, limit: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
        """The reports (key order: oldest first for timestamped keys), at most the newest `limit`, and the keys
        that were not JSON objects (skipped, so one bad report does not hide the others)."""
        keys = sorted(
            obj["Key"] for obj in list_objects(self._client, self.bucket, self.prefix) if obj["Key"].endswith(".json")
        )
        if limit is not None:
            keys = keys[-limit:] if limit > 0 else []

        with ThreadPoolExecutor(max_workers=8) as pool:
            bodies = list(pool.map(lambda key: read_object(self._client, self.bucket, key), keys))
        reports: list[dict[str, Any]] = []
        skipped: list[str] = []
        for key, body in zip(keys, bodies):
            try:
                report = json.loads(body) if body is not None else None
            except ValueError:
                report = None
            if isinstance(report, dict):
                reports.append({**report, "_key": key})
            else:
                skipped.append(key)
        return reports, skipped
