"""Online learners for the ranking layer: FTRL-Proximal logistic regression and per-item Beta posteriors.

FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches", KDD 2013) keeps, per
feature, z (the adjusted sum of gradients) and n (the sum of squared gradients); the weights follow from
them in closed form, with L1 making unused features exactly zero. It learns one example at a time, so the
stream consumer can update it per batch and serving can read the weights seconds later. The state is
plain arrays, so it is saved as JSON and merged from several consumers by summing their increments.

`BetaPosteriors` keeps a Beta(1 + clicks, 1 + impressions - clicks) per item: the click-through posterior
that Thompson sampling draws from to explore new items.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from rtrec.domain.events import Impression, decode_message, message_to_dict
from rtrec.domain.models import ItemStatsDelta


@dataclass
class FtrlProximal:
    """Logistic regression over dense feature vectors, learned by FTRL-Proximal."""

    n_features: int
    alpha: float = 0.1
    beta: float = 1.0
    l1: float = 0.01
    l2: float = 1.0
    # None (the default) starts from zeros: __post_init__ replaces it, so the attribute is always an array.
    z: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None only as the constructor's default
    n: np.ndarray = field(default=None)  # type: ignore[arg-type]  # None only as the constructor's default
    examples: int = 0

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise ValueError("n_features must be positive")
        if self.alpha <= 0 or self.beta < 0 or self.l1 < 0 or self.l2 < 0:
            raise ValueError("alpha must be positive; beta, l1 and l2 must not be negative")
        self.z = np.zeros(self.n_features) if self.z is None else np.asarray(self.z, dtype=np.float64)
        self.n = np.zeros(self.n_features) if self.n is None else np.asarray(self.n, dtype=np.float64)
        if self.z.shape != (self.n_features,) or self.n.shape != (self.n_features,):
            raise ValueError(f"z and n must have {self.n_features} entries")

    @property
    def weights(self) -> np.ndarray:
        """w_i = 0 where |z_i| <= l1, else -(z_i - sign(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)."""
        shrunk = np.sign(self.z) * np.maximum(np.abs(self.z) - self.l1, 0.0)
        weights: np.ndarray = -shrunk / ((self.beta + np.sqrt(self.n)) / self.alpha + self.l2)
        return weights

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Click probability for each row of `features` ([n, n_features] or one vector)."""
        logits = np.asarray(features, dtype=np.float64) @ self.weights
        probabilities: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(logits, -35.0, 35.0)))
        return probabilities

    def update(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Learn from examples in order (one FTRL step each); returns their mean log loss before the steps."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        y = np.atleast_1d(np.asarray(labels, dtype=np.float64))
        if x.shape != (len(y), self.n_features):
            raise ValueError(f"expected features of shape ({len(y)}, {self.n_features}), got {x.shape}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("labels must be 0 or 1")
        # In Python floats: a step is a few dozen operations on n_features (7) numbers, where each numpy call on so
        # small an array costs more than its arithmetic (this loop was a quarter of the consumer's CPU).
        alpha, beta, l1, l2 = self.alpha, self.beta, self.l1, self.l2
        z, n = self.z.tolist(), self.n.tolist()
        root_n = [math.sqrt(ni) for ni in n]  # kept in step with n: one square root per feature and step, not three
        indices = range(len(z))
        sqrt, exp, log, copysign = math.sqrt, math.exp, math.log, math.copysign
        loss = 0.0
        for row, label in zip(x.tolist(), y.tolist()):
            weights = [
                0.0 if abs(zi) <= l1 else -(zi - copysign(l1, zi)) / ((beta + ri) / alpha + l2) for zi, ri in zip(z, root_n)
            ]
            logit = sum(map(operator.mul, weights, row))
            logit = -35.0 if logit < -35.0 else 35.0 if logit > 35.0 else logit
            p = 1.0 / (1.0 + exp(-logit))
            loss -= log(max(p if label else 1.0 - p, 1e-15))
            error = p - label
            for i in indices:
                gradient = error * row[i]
                n_next = n[i] + gradient * gradient
                root_next = sqrt(n_next)
                z[i] += gradient - (root_next - root_n[i]) / alpha * weights[i]
                n[i], root_n[i] = n_next, root_next
        self.z, self.n = np.array(z), np.array(n)
        self.examples += len(y)
        return loss / len(y)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_features": self.n_features,
            "alpha": self.alpha,
            "beta": self.beta,
            "l1": self.l1,
            "l2": self.l2,
            "z": self.z.tolist(),
            "n": self.n.tolist(),
            "examples": self.examples,
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> FtrlProximal:
        return cls(**body)


@dataclass
class BetaPosteriors:
    """Click-through posteriors per item, Beta(prior_a + clicks, prior_b + impressions - clicks)."""

    prior_a: float = 1.0
    prior_b: float = 1.0
    impressions: dict[str, int] = field(default_factory=dict)
    clicks: dict[str, int] = field(default_factory=dict)

    def observe(self, item_id: str, impressions: int = 0, clicks: int = 0) -> None:
        if impressions < 0 or clicks < 0:
            raise ValueError("counts must not be negative")
        self.impressions[item_id] = self.impressions.get(item_id, 0) + impressions
        self.clicks[item_id] = self.clicks.get(item_id, 0) + clicks

    def _ab(self, item_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        shown = np.array([self.impressions.get(i, 0) for i in item_ids], dtype=np.float64)
        clicked = np.array([self.clicks.get(i, 0) for i in item_ids], dtype=np.float64)
        clicked = np.minimum(clicked, shown)  # a click without a logged impression counts as shown once
        return self.prior_a + clicked, self.prior_b + np.maximum(shown - clicked, 0.0)

    def mean(self, item_ids: list[str]) -> np.ndarray:
        a, b = self._ab(item_ids)
        means: np.ndarray = a / (a + b)
        return means

    def sample(self, item_ids: list[str], rng: np.random.Generator) -> np.ndarray:
        """One Thompson draw per item: wide for items seldom shown, narrow for well-known ones."""
        a, b = self._ab(item_ids)
        return rng.beta(a, b)


# -- the online ranker ------------------------------------------------------------------------------

# What the ranking layer knows about a candidate, in the order of the feature vector it logs with each
# impression. The first five are the terms `ranking.blend` adds up; the last two come from the stream.
RANKER_FEATURES: tuple[str, ...] = ("bias", "relevance", "popularity", "freshness", "new_item", "ctr_lift", "trend")
CTR_PRIOR_STRENGTH = 20.0  # pseudo-impressions of the global click-through rate behind each item's posterior


@dataclass(frozen=True)
class LabeledImpression:
    """A served slate joined with its reward: the counterfactual record (what was shown, with which
    propensities and features, and which item, if any, the user then chose within the reward window)."""

    slate: Impression
    rewards: tuple[int, ...]  # per shown item: 1 for the chosen one, 0 for the others
    resolved_at: float  # the event that resolved it: the reward's timestamp, or the next slate's

    def to_dict(self) -> dict[str, Any]:
        """The slate's stream record with the rewards beside it: one flat JSON object per line of the log."""
        return {**message_to_dict(self.slate), "rewards": list(self.rewards), "resolved_at": self.resolved_at}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> LabeledImpression:
        slate = decode_message({**body, "kind": "impression"})
        assert isinstance(slate, Impression)
        return cls(slate, tuple(int(r) for r in body["rewards"]), float(body["resolved_at"]))


def slate_centred(features: np.ndarray) -> np.ndarray:
    """Each feature minus its mean over the slate, the bias column left at 1.

    Relevance and popularity are positive for every shown item, so uncentred they act as a second bias: with
    clicks rare, the learner drives them negative to fit the base rate, and ranks against the model (measured on a
    replay's joined log: hit@1 among rewarded slates 0.06 uncentred vs 0.24 for relevance alone; see
    tests/bench/bench_online_ranker.py). Centred, the weights say only how items of one slate differ. Serving
    applies the weights to the raw features: per request that shifts every candidate's logit by the same amount,
    which changes no ranking."""
    centred: np.ndarray = features - features.mean(axis=0)
    centred[:, 0] = 1.0
    return centred


@dataclass
class RankerShardState:
    """What one consumer (one Kinesis shard) has learned: the FTRL learner, per-item impressions and clicks
    of resolved slates (the Beta posteriors' counts), a time-decayed count of positive events per item
    (the trend), and the item statistics of every record of the shard (`item_stats`: impressions shown,
    clicks, positive interactions, popularity mass; see `merged_item_stats`). Each shard has one writer, so the
    state is read, changed and written back once per batch without a race; `learned_through` (the last
    sequence number learned) makes a re-delivered batch a no-op. A child shard (split or merge) has a state of
    its own: every record is on one shard, so the merged statistics are the sums over the states."""

    shard_id: str
    learner: FtrlProximal = field(default_factory=lambda: FtrlProximal(len(RANKER_FEATURES)))
    learned_through: int = -1
    impressions: dict[str, int] = field(default_factory=dict)
    clicks: dict[str, int] = field(default_factory=dict)
    trend: dict[str, float] = field(default_factory=dict)  # masses relative to trend_anchor (see observe_positive)
    trend_anchor: float | None = None
    trend_reference: float | None = None  # the newest positive event seen
    trend_half_life_days: float = 7.0
    # item -> [impressions, clicks, interactions, popularity_mass]: lists, so a batch adds in place
    item_stats: dict[str, list[float]] = field(default_factory=dict)

    def count(self, item_id: str, delta: ItemStatsDelta) -> None:
        """Add one record's statistics of `item_id` (the caller counts each record once: learned_through)."""
        row = self.item_stats.get(item_id)
        if row is None:
            row = self.item_stats[item_id] = [0, 0, 0, 0.0]
        row[0] += delta.impressions
        row[1] += delta.clicks
        row[2] += delta.interactions
        row[3] += delta.popularity_mass

    def stats_of(self, item_id: str) -> ItemStatsDelta:
        row = self.item_stats.get(item_id)
        return ItemStatsDelta(int(row[0]), int(row[1]), int(row[2]), float(row[3])) if row else ItemStatsDelta()

    def observe_positive(self, item_id: str, timestamp: float) -> None:
        """Count a positive event in the trend, in O(1): masses are kept relative to `trend_anchor`, each
        event adding 2 ** ((t - anchor) / half_life); `trend_counts` decays them to the newest event."""
        if self.trend_anchor is None:
            self.trend_anchor = timestamp
        exponent = (timestamp - self.trend_anchor) / self._half_life_seconds
        if exponent > 500:  # re-anchor before the masses overflow (every ~500 half-lives)
            self.trend = {i: m * 2.0**-exponent for i, m in self.trend.items() if m * 2.0**-exponent >= 1e-6}
            self.trend_anchor, exponent = timestamp, 0.0
        self.trend[item_id] = self.trend.get(item_id, 0.0) + 2.0**exponent
        self.trend_reference = timestamp if self.trend_reference is None else max(self.trend_reference, timestamp)

    @property
    def _half_life_seconds(self) -> float:
        return self.trend_half_life_days * 86_400.0

    def trend_counts(self, at: float | None = None) -> dict[str, float]:
        """Positive events per item, decayed to `at` (default: the newest event seen)."""
        at = self.trend_reference if at is None else at
        if at is None or self.trend_anchor is None:
            return {}
        scale = 2.0 ** -((at - self.trend_anchor) / self._half_life_seconds)
        return {i: m * scale for i, m in self.trend.items()}

    def learn(self, slates: list[LabeledImpression]) -> int:
        """One FTRL step per shown item of each slate that logged features (centred within the slate, see
        `slate_centred`); counts every slate for the posteriors. Returns the number of examples learned."""
        examples = 0
        for labeled in slates:
            shown = labeled.slate
            for item, reward in zip(shown.items, labeled.rewards):
                self.impressions[item] = self.impressions.get(item, 0) + 1
                if reward:
                    self.clicks[item] = self.clicks.get(item, 0) + 1
            if shown.features and len(shown.features[0]) == self.learner.n_features:
                self.learner.update(slate_centred(np.asarray(shown.features)), np.asarray(labeled.rewards))
                examples += len(shown.items)
        return examples

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "learner": self.learner.to_dict(),
            "learned_through": str(self.learned_through),
            "impressions": self.impressions,
            "clicks": self.clicks,
            "trend": self.trend,
            "trend_anchor": self.trend_anchor,
            "trend_reference": self.trend_reference,
            "trend_half_life_days": self.trend_half_life_days,
            "features": list(RANKER_FEATURES),
            "item_stats": self.item_stats,
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> RankerShardState:
        """The state of a parsed JSON body, whose containers it takes as its own (see `_stat_rows`)."""
        if body.get("features", list(RANKER_FEATURES)) != list(RANKER_FEATURES):
            raise ValueError(f"the state was learned over features {body.get('features')}, not {list(RANKER_FEATURES)}")
        # The per-item maps are taken as parsed (JSON keys are strings, and to_dict wrote ints and floats): a
        # conversion per entry cost more than parsing the whole state (5 of 8 ms for 3,700 items), once per batch
        # in the consumer and per reload in serving.
        return cls(
            shard_id=str(body["shard_id"]),
            learner=FtrlProximal.from_dict(body["learner"]),
            learned_through=int(body["learned_through"]),
            impressions=dict(body.get("impressions", {})),
            clicks=dict(body.get("clicks", {})),
            trend=dict(body.get("trend", {})),
            trend_anchor=body.get("trend_anchor", body.get("trend_reference")),
            trend_reference=body.get("trend_reference"),
            trend_half_life_days=float(body.get("trend_half_life_days", 7.0)),
            item_stats=_stat_rows(body.get("item_stats", {})),
        )


def _stat_rows(rows: dict[str, Any]) -> dict[str, list[float]]:
    """The state's item statistics as parsed: each row a list of four numbers that the state owns (batches add in
    place), so the body must be a parser's fresh output, as a store's is. Checked, not copied: a copy per row was
    most of a reload's time in serving, which reads every shard's state every few seconds."""
    if not all(type(row) is list and len(row) == 4 for row in rows.values()):
        raise ValueError("item_stats rows must be lists [impressions, clicks, interactions, popularity_mass]")
    return rows


def merged_item_stats(states: Iterable[RankerShardState], item_ids: Iterable[str] | None = None) -> dict[str, ItemStatsDelta]:
    """Each item's statistics summed over every shard's state (all items, or those of `item_ids`)."""
    wanted = None if item_ids is None else set(item_ids)
    merged: dict[str, ItemStatsDelta] = {}
    for state in states:
        for item in state.item_stats if wanted is None else wanted & state.item_stats.keys():
            merged[item] = merged.get(item, ItemStatsDelta()) + state.stats_of(item)
    return merged


@dataclass(frozen=True)
class OnlineRanker:
    """Serving's view of every shard's state: the learners' weights averaged (weighted by examples, each
    shard having learned from its own users), the counts summed, the trends decayed to one reference."""

    weights: np.ndarray
    examples: int
    posteriors: BetaPosteriors
    trend: dict[str, float]
    shards: int

    @classmethod
    def merge(cls, states: list[RankerShardState]) -> OnlineRanker | None:
        if not states:
            return None
        examples = [s.learner.examples for s in states]
        total = sum(examples)
        weights = (
            sum(s.learner.weights * n for s, n in zip(states, examples)) / total if total else np.zeros(len(RANKER_FEATURES))
        )
        impressions: dict[str, int] = {}
        clicks: dict[str, int] = {}
        trend: dict[str, float] = {}
        references = [s.trend_reference for s in states if s.trend_reference is not None]
        newest = max(references) if references else None
        for state in states:
            for item, n in state.impressions.items():
                impressions[item] = impressions.get(item, 0) + n
            for item, n in state.clicks.items():
                clicks[item] = clicks.get(item, 0) + n
            if newest is not None:
                for item, c in state.trend_counts(at=newest).items():
                    trend[item] = trend.get(item, 0.0) + c
        shown, clicked = sum(impressions.values()), sum(clicks.values())
        ctr = (clicked + 1.0) / (shown + 100.0)  # the global click-through rate, shrunk towards 1%
        posteriors = BetaPosteriors(
            prior_a=CTR_PRIOR_STRENGTH * ctr, prior_b=CTR_PRIOR_STRENGTH * (1.0 - ctr), impressions=impressions, clicks=clicks
        )
        return cls(np.asarray(weights, dtype=np.float64), total, posteriors, trend, len(states))

    @property
    def global_ctr(self) -> float:
        p = self.posteriors
        return p.prior_a / (p.prior_a + p.prior_b)

    def item_signals(self, item_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per item: the log-lift of its posterior click-through rate over the global one (0 when never
        shown), and its trend, log-scaled to 0..1 of the most trending item."""
        ctr_lift = np.log(self.posteriors.mean(item_ids) / self.global_ctr)
        counts = np.array([self.trend.get(i, 0.0) for i in item_ids], dtype=np.float64)
        top = float(np.log1p(counts.max())) if len(counts) else 0.0
        trend = np.log1p(counts) / top if top > 0 else np.zeros(len(item_ids))
        return ctr_lift, trend

    def click_probabilities(self, features: np.ndarray) -> np.ndarray:
        """The reward model off-policy evaluation uses: each candidate's posterior click-through rate, read back
        from its ctr_lift feature (rows of RANKER_FEATURES). Per item, not per user or slot: a doubly robust
        estimate stays unbiased with any reward model; a better one only narrows its interval."""
        probabilities: np.ndarray = self.global_ctr * np.exp(features[:, RANKER_FEATURES.index("ctr_lift")])
        return probabilities

    def stream_signals(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """`item_signals` of the items the stream knows (shown or trending); every other item's are exactly 0 (its
        posterior is the prior, whose mean is the global rate), so callers need not visit the whole catalog.
        Computed once per ranker (the source that merges it computes them off the request path)."""
        return self._stream_signals

    @cached_property
    def _stream_signals(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        known = list(dict.fromkeys([*self.posteriors.impressions, *self.trend]))
        return (known, *self.item_signals(known))
