"""The git-ignored state folder that makes the embedded cloud survive restarts.

moto keeps nothing on disk. Objects in persistent buckets (models, counterfactual logs, the
offline store) are written to `<state>/s3/<logical bucket name>/<key>` when the cloud stops and
uploaded again when it starts. The MLflow store lives under `<state>/mlflow`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtrec.domain.access import Role
from rtrec.resources import BUCKETS, COUNTERFACTUAL_BUCKET, ResourceNames

# Buckets of JSON-lines logs whose objects are merged per folder on restore (see LocalState.restore_buckets).
COMPACTED_BUCKETS = frozenset({COUNTERFACTUAL_BUCKET.logical_name})
API_KEY_ROLES = tuple(role.value for role in Role)  # one local key each


@dataclass(frozen=True)
class LocalState:
    root: Path

    @property
    def s3_dir(self) -> Path:
        return self.root / "s3"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        """SQLite store (the model registry needs a database); artifacts go beside it."""
        return f"sqlite:///{(self.mlflow_dir / 'mlflow.db').resolve()}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def api_keys_file(self) -> Path:
        return self.root / "api-keys.json"

    def api_keys(self) -> dict[str, str]:
        """The local API keys, one per role (`admin`, `events`, `read`): generated at the first start, kept
        (owner-only) in the state folder so restarts and scripts keep using them; a role missing from the file gets
        a new key, the others stay. `rtrec cloud reset` with the folder removes them."""
        path = self.api_keys_file
        keys: dict[str, str] = {}
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except ValueError:
                stored = {}
            if isinstance(stored, dict):
                keys = {
                    role: key
                    for role, key in stored.items()
                    if role in API_KEY_ROLES and isinstance(key, str) and len(key) >= 16
                }
        if all(role in keys for role in API_KEY_ROLES):
            return keys
        for role in API_KEY_ROLES:
            keys.setdefault(role, secrets.token_urlsafe(24))
        self.root.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(keys, indent=2) + "\n")
        partial.chmod(0o600)
        os.replace(partial, path)
        return keys

    def ensure(self) -> LocalState:
        self.s3_dir.mkdir(parents=True, exist_ok=True)
        self.mlflow_dir.mkdir(parents=True, exist_ok=True)
        gitignore = self.root / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("*\n")
        return self

    def restore_buckets(self, s3: Any, names: ResourceNames) -> int:
        """Upload every saved object into its bucket (one PutObject each, 8 at a time); returns how many.

        The counterfactual log is one small JSON-lines object per consumer batch, thousands of them after a few
        replays, and restoring them one by one made every start slower. Its objects are restored one per folder
        (partition) instead, concatenated (readers take every object under a prefix and de-duplicate by id); the
        next save mirrors the bucket, so the folder on disk then holds the one file."""
        uploads: list[tuple[str, str, bytes]] = []
        for spec in BUCKETS:
            folder = self.s3_dir / spec.logical_name
            if not spec.persistent or not folder.is_dir():
                continue
            bucket = names.bucket(spec)
            files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".part")]
            if spec.logical_name in COMPACTED_BUCKETS:
                uploads += [(bucket, key, body) for key, body in _compacted(folder, files)]
            else:
                uploads += [(bucket, p.relative_to(folder).as_posix(), p.read_bytes()) for p in files]

        def put(bucket: str, key: str, body: bytes) -> None:
            s3.put_object(Bucket=bucket, Key=key, Body=body)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(put, *upload) for upload in uploads]:
                future.result()
        return len(uploads)

    def save_buckets(self, s3: Any, names: ResourceNames) -> int:
        """Mirror every persistent bucket to disk (objects deleted in the bucket are deleted on disk); returns how
        many objects were downloaded (the ones not on disk yet, or changed), fetched by 8 threads: a replay leaves
        thousands of small log objects, which one by one took minutes."""
        downloads: list[tuple[str, str, Path]] = []
        for spec in BUCKETS:
            if not spec.persistent:
                continue
            bucket = names.bucket(spec)
            folder = self.s3_dir / spec.logical_name
            keep: set[Path] = set()
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                for obj in page.get("Contents", []):
                    target = folder / obj["Key"]
                    if not target.resolve().is_relative_to(folder.resolve()):
                        continue  # a key like ../x must never write outside the state folder
                    keep.add(target.resolve())
                    if not _same_content(target, obj):  # saved before and unchanged: it need not travel again
                        downloads.append((bucket, obj["Key"], target))
            if folder.is_dir():
                for path in folder.rglob("*"):
                    if path.is_file() and path.resolve() not in keep:
                        path.unlink()

        def fetch(bucket: str, key: str, target: Path) -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            os.replace(tmp, target)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for future in [pool.submit(fetch, *download) for download in downloads]:
                future.result()
        return len(downloads)


def _compacted(folder: Path, files: list[Path]) -> list[tuple[str, bytes]]:
    """One object per sub-folder for its JSON-lines files (named after a digest of their names, so a folder
    compacted again gets a new name and the save that follows drops the old file); other files as they are."""
    groups: dict[Path, list[Path]] = {}
    out: list[tuple[str, bytes]] = []
    for path in files:
        if path.suffix == ".jsonl":
            groups.setdefault(path.parent, []).append(path)
        else:
            out.append((path.relative_to(folder).as_posix(), path.read_bytes()))
    for parent, members in groups.items():
        if len(members) == 1:
            out.append((members[0].relative_to(folder).as_posix(), members[0].read_bytes()))
            continue
        digest = hashlib.sha1("\n".join(m.name for m in members).encode(), usedforsecurity=False).hexdigest()[:16]
        body = b"".join(data if data.endswith(b"\n") else data + b"\n" for data in (m.read_bytes() for m in members))
        out.append(((parent / f"compacted-{digest}.jsonl").relative_to(folder).as_posix(), body))
    return out


def _same_content(path: Path, obj: dict[str, Any]) -> bool:
    """Whether `path` holds the object already: same size, and its MD5 is the ETag (true of every object
    uploaded in one part, which is how the project writes them)."""
    if not path.is_file() or path.stat().st_size != obj.get("Size"):
        return False
    etag = str(obj.get("ETag", "")).strip('"')
    return "-" not in etag and hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest() == etag
