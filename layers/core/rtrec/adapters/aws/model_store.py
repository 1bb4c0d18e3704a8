"""S3ModelStore: promoted model folders and the production pointer in the models bucket.

Layout (under `prefix`, "models" by default):
    <prefix>/versions/<version>/<file>   every file of a promoted model folder
    <prefix>/production.json             the ProductionPointer serving follows
    <prefix>/shadow.json                 the candidate serving scores beside production (off-policy evaluation)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors
from rtrec.adapters.aws.s3 import list_objects, read_json_as, read_object
from rtrec.domain.promotion import POINTER_ROLES, PRODUCTION_POINTER, ProductionPointer
from rtrec.errors import DependencyError, InvalidInputError, NotFoundError

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK = 1024 * 1024


def _check_version(version: str) -> str:
    version = str(version)
    if not _VERSION.match(version):
        raise InvalidInputError(f"model version {version!r} is not a safe path segment ([A-Za-z0-9._-], no leading dot)")
    return version


class S3ModelStore:
    """ModelStore over S3. The pointer is one small object replaced by a single PUT, so a reader
    sees either the old or the new pointer (S3 is strongly consistent for reads after writes)."""

    def __init__(
        self,
        bucket: str,
        client: Any = None,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        prefix: str = "models",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client if client is not None else aws_client("s3", endpoint_url, region)

    @property
    def pointer_key(self) -> str:
        return self.pointer_key_for(PRODUCTION_POINTER)

    def pointer_key_for(self, role: str) -> str:
        if role not in POINTER_ROLES:
            raise InvalidInputError(f"pointer role must be one of {', '.join(POINTER_ROLES)}, got {role!r}")
        return f"{self.prefix}/{role}.json"

    def version_prefix(self, version: str) -> str:
        return f"{self.prefix}/versions/{_check_version(version)}/"

    def publish(self, version: str, model_dir: Path) -> str:
        """Upload every file of `model_dir` (sub-folders kept) and delete objects of an earlier
        publish of the same version that the folder no longer holds. Returns the key prefix."""
        prefix = self.version_prefix(version)
        model_dir = Path(model_dir)
        files = sorted(p for p in model_dir.rglob("*") if p.is_file())
        if not files:
            raise InvalidInputError(f"{model_dir} holds no files to publish")
        keys = set()
        for path in files:
            key = prefix + path.relative_to(model_dir).as_posix()
            keys.add(key)
            with translate_aws_errors(f"uploading s3://{self.bucket}/{key}"), path.open("rb") as body:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=body)
        stale = [key for key in self._list(prefix) if key not in keys]
        for key in stale:
            with translate_aws_errors(f"deleting s3://{self.bucket}/{key}"):
                self._client.delete_object(Bucket=self.bucket, Key=key)
        return prefix

    def write_pointer(self, pointer: ProductionPointer, role: str = PRODUCTION_POINTER) -> None:
        key = self.pointer_key_for(role)
        body = json.dumps(pointer.to_dict(), indent=2, sort_keys=True).encode()
        with translate_aws_errors(f"writing s3://{self.bucket}/{key}"):
            self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                CacheControl="no-cache",
            )

    def read_pointer(self, role: str = PRODUCTION_POINTER) -> ProductionPointer | None:
        return read_json_as(
            self._client, self.bucket, self.pointer_key_for(role), ProductionPointer.from_dict, f"{role} pointer"
        )

    def delete_pointer(self, role: str) -> None:
        key = self.pointer_key_for(role)
        with translate_aws_errors(f"deleting s3://{self.bucket}/{key}"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def read_file(self, version: str, name: str) -> bytes | None:
        """One file of a published version (None when it has no such file)."""
        return read_object(self._client, self.bucket, self.version_prefix(version) + name)

    def download(self, version: str, target_dir: Path) -> Path:
        """Fetch every file of a published version into `target_dir` (created if missing); each file
        is written to a temporary name first, so a failed download leaves no half-written file."""
        prefix = self.version_prefix(version)
        keys = self._list(prefix)
        if not keys:
            raise NotFoundError(f"model version {version!r} is not published under s3://{self.bucket}/{prefix}")
        target_dir = Path(target_dir)
        root = target_dir.resolve()
        for key in keys:
            target = target_dir / key[len(prefix) :]
            if not target.resolve().is_relative_to(root):
                raise DependencyError(f"s3://{self.bucket}/{key} would be written outside {target_dir}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            try:
                with translate_aws_errors(f"downloading s3://{self.bucket}/{key}"):
                    body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
                    with tmp.open("wb") as out:
                        for chunk in body.iter_chunks(_CHUNK):
                            out.write(chunk)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        return target_dir

    def _list(self, prefix: str) -> list[str]:
        return [obj["Key"] for obj in list_objects(self._client, self.bucket, prefix)]
