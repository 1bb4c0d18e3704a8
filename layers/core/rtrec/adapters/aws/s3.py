"""S3 adapters: the popular-items snapshot, and plain JSON objects."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors
from rtrec.domain.models import PopularItems, ScoredItem
from rtrec.errors import DependencyError

POPULARITY_KEY = "popularity/current.json"


class S3PopularityStore:
    """PopularityStore as one JSON object in the models bucket."""

    def __init__(self, bucket: str, key: str = POPULARITY_KEY, client: Any = None, *,
                 endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        self.bucket = bucket
        self.key = key
        self._client = client if client is not None else aws_client("s3", endpoint_url, region)

    def load(self) -> PopularItems | None:
        with translate_aws_errors(f"reading s3://{self.bucket}/{self.key}"):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=self.key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
        try:
            body = json.loads(response["Body"].read())
            return PopularItems(
                items=tuple(ScoredItem(str(i["item_id"]), float(i["score"])) for i in body["items"]),
                generated_at=int(body["generated_at"]),
                half_life_days=float(body["half_life_days"]),
                source=str(body.get("source", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DependencyError(f"s3://{self.bucket}/{self.key} is not a valid popularity snapshot: {exc}") from exc

    def save(self, popular: PopularItems) -> None:
        body = {
            "generated_at": popular.generated_at,
            "half_life_days": popular.half_life_days,
            "source": popular.source,
            "items": [{"item_id": i.item_id, "score": i.score} for i in popular.items],
        }
        with translate_aws_errors(f"writing s3://{self.bucket}/{self.key}"):
            self._client.put_object(
                Bucket=self.bucket, Key=self.key, Body=json.dumps(body).encode(), ContentType="application/json"
            )
