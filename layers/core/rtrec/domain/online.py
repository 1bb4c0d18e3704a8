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
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FtrlProximal:
    """Logistic regression over dense feature vectors, learned by FTRL-Proximal."""

    n_features: int
    alpha: float = 0.1
    beta: float = 1.0
    l1: float = 0.01
    l2: float = 1.0
    z: np.ndarray = field(default=None)  # type: ignore[assignment]
    n: np.ndarray = field(default=None)  # type: ignore[assignment]
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
        return -shrunk / ((self.beta + np.sqrt(self.n)) / self.alpha + self.l2)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Click probability for each row of `features` ([n, n_features] or one vector)."""
        logits = np.asarray(features, dtype=np.float64) @ self.weights
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -35.0, 35.0)))

    def update(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Learn from examples in order (one FTRL step each); returns their mean log loss before the steps."""
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        y = np.atleast_1d(np.asarray(labels, dtype=np.float64))
        if x.shape != (len(y), self.n_features):
            raise ValueError(f"expected features of shape ({len(y)}, {self.n_features}), got {x.shape}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("labels must be 0 or 1")
        loss = 0.0
        for row, label in zip(x, y):
            p = float(self.predict(row))
            loss -= math.log(max(p if label else 1.0 - p, 1e-15))
            gradient = (p - label) * row
            sigma = (np.sqrt(self.n + gradient**2) - np.sqrt(self.n)) / self.alpha
            self.z += gradient - sigma * self.weights
            self.n += gradient**2
            self.examples += 1
        return loss / len(y)

    def to_dict(self) -> dict:
        return {"n_features": self.n_features, "alpha": self.alpha, "beta": self.beta, "l1": self.l1, "l2": self.l2,
                "z": self.z.tolist(), "n": self.n.tolist(), "examples": self.examples}

    @classmethod
    def from_dict(cls, body: dict) -> FtrlProximal:
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
        return a / (a + b)

    def sample(self, item_ids: list[str], rng: np.random.Generator) -> np.ndarray:
        """One Thompson draw per item: wide for items seldom shown, narrow for well-known ones."""
        a, b = self._ab(item_ids)
        return rng.beta(a, b)
