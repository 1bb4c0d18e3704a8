"""DynamoLock: named locks with expiry in the `locks` table, taken by one conditional write.

The drift check's retraining cool-down is one: whoever writes `retrain` first holds it until it expires, and
a second trigger inside the cool-down finds the condition false. Expired locks are taken over by the same
conditional write (DynamoDB's TTL removes them later, within a day or two, so expiry is never left to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


@dataclass(frozen=True)
class LockHolder:
    name: str
    owner: str
    acquired_at: float
    expires_at: float
    note: str = ""


class DynamoLock:
    def __init__(self, table: str, client: Any = None, *, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        self.table = table
        self._client = client if client is not None else aws_client("dynamodb", endpoint_url, region)

    def acquire(self, name: str, owner: str, now: float, ttl_seconds: float, note: str = "") -> bool:
        """Take `name` for `ttl_seconds` unless someone holds it unexpired; True when this call took it."""
        item = {
            "lock_name": {"S": name},
            "owner": {"S": owner},
            "acquired_at": {"N": repr(float(now))},
            "expires_at": {"N": str(int(now + ttl_seconds))},
            "note": {"S": note or "-"},
        }
        with translate_aws_errors(f"taking lock {name!r}"):
            try:
                self._client.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(lock_name) OR expires_at <= :now",
                    ExpressionAttributeValues={":now": {"N": str(int(now))}},
                )
            except ClientError as exc:
                if _condition_failed(exc):
                    return False
                raise
        return True

    def holder(self, name: str) -> LockHolder | None:
        with translate_aws_errors(f"reading lock {name!r}"):
            item = self._client.get_item(TableName=self.table, Key={"lock_name": {"S": name}}, ConsistentRead=True).get("Item")
        if item is None:
            return None
        return LockHolder(
            name,
            item["owner"]["S"],
            float(item["acquired_at"]["N"]),
            float(item["expires_at"]["N"]),
            item.get("note", {}).get("S", ""),
        )

    def release(self, name: str, owner: str) -> bool:
        """Give `name` back if `owner` still holds it (an operator resetting a cool-down)."""
        with translate_aws_errors(f"releasing lock {name!r}"):
            try:
                self._client.delete_item(
                    TableName=self.table,
                    Key={"lock_name": {"S": name}},
                    ConditionExpression="#o = :owner",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":owner": {"S": owner}},
                )
            except ClientError as exc:
                if _condition_failed(exc):
                    return False
                raise
        return True
