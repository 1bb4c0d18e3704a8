"""Off-policy estimators: what a target policy would earn, judged from data that another (logging) policy collected.

Logged bandit data holds, for each row i, the reward r_i of the action a_i that the logging policy pi_0 chose with
probability p_i = pi_0(a_i|x_i), and the probability pi_e(a_i|x_i) that the target policy gives that same action.
Model-based estimators also take a reward model's prediction for the logged action, q_hat(x_i, a_i), and its
expectation under the target policy, sum_a pi_e(a|x_i) q_hat(x_i, a).

Estimators: IPS (inverse propensity scoring), SNIPS (self-normalised IPS, Swaminathan & Joachims 2015), DM (direct
method), DR (doubly robust, Dudik et al. 2011), SNDR (DR with self-normalised correction) and Switch-DR (Wang et al.
2017); for slates, independent (per-position) IPS (Li et al. 2018) and its self-normalised form, and the cascade
IPS, SNIPS and DR (Kiyohara et al. 2022) over the per-pick probabilities serving logs. Each returns a point estimate;
`bootstrap_ci` puts a percentile interval around any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

import numpy as np

# Probabilities computed in floating point (a softmax, a product of picks) may exceed 1 by a rounding error.
PROBABILITY_SLACK = 1e-9


def _as_array(name: str, values: object, ndim: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: off-policy estimates need at least one logged row")
    if not np.all(np.isfinite(array)):
        bad = np.flatnonzero(~np.isfinite(array.ravel()))
        raise ValueError(f"{name} must be finite: {bad.size} non-finite values, the first at flat index {bad[0]}")
    return array


def _check_range(name: str, array: np.ndarray, low: float, high: float, *, low_open: bool) -> None:
    too_low = array <= low if low_open else array < low
    outside = too_low | (array > high + PROBABILITY_SLACK)
    if outside.any():
        first = np.flatnonzero(outside.ravel())[0]
        interval = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ValueError(
            f"{name} must lie in {interval}: {int(outside.sum())} values do not, "
            f"the first at flat index {first} is {array.ravel()[first]!r}"
        )


def _check_same_shape(shapes: dict[str, tuple[int, ...]]) -> None:
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"logged arrays must have the same shape: {described}")


def _set_checked(owner: object, arrays: dict[str, np.ndarray]) -> None:
    """Check the logged arrays of a frozen dataclass (one shape; propensities in (0, 1], target probabilities in
    [0, 1]) and store them on it as numpy arrays."""
    _check_same_shape({name: array.shape for name, array in arrays.items()})
    _check_range("propensities", arrays["propensities"], 0.0, 1.0, low_open=True)
    _check_range("target_probs", arrays["target_probs"], 0.0, 1.0, low_open=False)
    for name, array in arrays.items():
        object.__setattr__(owner, name, array)


@dataclass(frozen=True)
class LoggedBandit:
    """One row per logged decision: reward, logging propensity, target probability of the logged action, and
    optionally a reward model's prediction for that action (`q_logged`) and its expectation under the target
    policy (`q_target`)."""

    rewards: np.ndarray
    propensities: np.ndarray
    target_probs: np.ndarray
    q_logged: np.ndarray | None = None
    q_target: np.ndarray | None = None

    def __post_init__(self) -> None:
        arrays = {name: _as_array(name, getattr(self, name), 1) for name in ("rewards", "propensities", "target_probs")}
        for name in ("q_logged", "q_target"):
            if getattr(self, name) is not None:
                arrays[name] = _as_array(name, getattr(self, name), 1)
        _set_checked(self, arrays)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def take(self, rows: np.ndarray) -> LoggedBandit:
        """The rows at `rows` (with repeats, for the bootstrap)."""
        return LoggedBandit(
            rewards=self.rewards[rows],
            propensities=self.propensities[rows],
            target_probs=self.target_probs[rows],
            q_logged=None if self.q_logged is None else self.q_logged[rows],
            q_target=None if self.q_target is None else self.q_target[rows],
        )

    def weights(self, clip: float | None = None) -> np.ndarray:
        """Importance weights pi_e(a_i|x_i) / pi_0(a_i|x_i), capped at `clip` only when it is given."""
        return _clipped(self.target_probs / self.propensities, clip)


def _clipped(weights: np.ndarray, clip: float | None) -> np.ndarray:
    if clip is None:
        return weights
    if not clip > 0:
        raise ValueError(f"clip must be a positive weight cap, got {clip!r}")
    clipped: np.ndarray = np.minimum(weights, clip)
    return clipped


def _q_target(data: LoggedBandit, estimator: str) -> np.ndarray:
    if data.q_target is None:
        raise ValueError(f"{estimator} needs a reward model's predictions: pass q_target to LoggedBandit")
    return data.q_target


def _q_both(data: LoggedBandit, estimator: str) -> tuple[np.ndarray, np.ndarray]:
    if data.q_target is None or data.q_logged is None:
        raise ValueError(f"{estimator} needs a reward model's predictions: pass q_logged and q_target to LoggedBandit")
    return data.q_target, data.q_logged


def _self_normalised(numerator: np.ndarray, weights: np.ndarray, estimator: str) -> float:
    total = float(weights.sum())
    if total <= 0.0:
        raise ValueError(f"{estimator} is undefined: the target policy gives probability 0 to every logged action")
    return float(numerator.sum() / total)


def ips(data: LoggedBandit, clip: float | None = None) -> float:
    """Inverse propensity scoring: mean of w_i r_i. Unbiased when propensities are right and nothing is clipped."""
    return float(np.mean(data.weights(clip) * data.rewards))


def snips(data: LoggedBandit, clip: float | None = None) -> float:
    """Self-normalised IPS: sum w_i r_i / sum w_i. Slightly biased, much lower variance when weights are large."""
    weights = data.weights(clip)
    return _self_normalised(weights * data.rewards, weights, "SNIPS")


def dm(data: LoggedBandit) -> float:
    """Direct method: the reward model's expected reward under the target policy. Low variance, biased by the model."""
    q_target = _q_target(data, "DM")
    return float(np.mean(q_target))


def dr(data: LoggedBandit, clip: float | None = None) -> float:
    """Doubly robust: DM plus the importance-weighted residual of the model; unbiased if either part is right."""
    q_target, q_logged = _q_both(data, "DR")
    return float(np.mean(q_target + data.weights(clip) * (data.rewards - q_logged)))


def sndr(data: LoggedBandit, clip: float | None = None) -> float:
    """Self-normalised DR: DM plus the residual correction normalised by the sum of weights instead of n."""
    q_target, q_logged = _q_both(data, "SNDR")
    weights = data.weights(clip)
    return float(np.mean(q_target)) + _self_normalised(weights * (data.rewards - q_logged), weights, "SNDR")


def switch_dr(data: LoggedBandit, threshold: float) -> float:
    """Switch-DR: the DR correction only on rows whose weight is at most `threshold`; the model alone elsewhere."""
    if not threshold > 0:
        raise ValueError(f"switch threshold must be a positive weight, got {threshold!r}")
    q_target, q_logged = _q_both(data, "Switch-DR")
    weights = data.weights()
    correction = np.where(weights <= threshold, weights * (data.rewards - q_logged), 0.0)
    return float(np.mean(q_target + correction))


def estimates(data: LoggedBandit, clip: float | None = None) -> dict[str, float]:
    """IPS and SNIPS, and DM, DR and SNDR when the data carries a reward model's predictions."""
    figures = {"IPS": ips(data, clip), "SNIPS": snips(data, clip)}
    if data.q_target is not None:
        figures["DM"] = dm(data)
    if data.q_target is not None and data.q_logged is not None:
        figures["DR"] = dr(data, clip)
        figures["SNDR"] = sndr(data, clip)
    return figures


@dataclass(frozen=True)
class LoggedSlates:
    """One row per logged slate, one column per position: each slot's reward, and the marginal probabilities that
    the logging and target policies put the logged item in that slot, pi(a_ik at slot k | x_i).

    These are marginals, not the per-pick conditional probabilities a sequential sampler logs (P(pick | earlier
    picks)); the product of those conditionals is the whole slate's probability, for whole-slate IPS through
    `LoggedBandit(rewards.sum(axis=1), prod(logging picks), prod(target picks))`."""

    rewards: np.ndarray
    propensities: np.ndarray
    target_probs: np.ndarray

    def __post_init__(self) -> None:
        _set_checked(
            self, {name: _as_array(name, getattr(self, name), 2) for name in ("rewards", "propensities", "target_probs")}
        )

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def slate_size(self) -> int:
        return int(self.rewards.shape[1])

    def take(self, rows: np.ndarray) -> LoggedSlates:
        """The slates at `rows` (with repeats, for the bootstrap)."""
        return LoggedSlates(self.rewards[rows], self.propensities[rows], self.target_probs[rows])

    def weights(self, clip: float | None = None) -> np.ndarray:
        """Per-slot importance weights, shape (n, slate_size), capped at `clip` only when it is given."""
        return _clipped(self.target_probs / self.propensities, clip)


def independent_ips_by_position(slates: LoggedSlates, clip: float | None = None) -> np.ndarray:
    """Per-slot IPS estimates of the target policy's expected reward in each position, shape (slate_size,)."""
    values: np.ndarray = np.mean(slates.weights(clip) * slates.rewards, axis=0)
    return values


def independent_ips(slates: LoggedSlates, clip: float | None = None) -> float:
    """Independent (per-position) IPS: the sum over slots of each slot's IPS estimate, i.e. the expected total reward
    of a target slate. Unbiased when the reward of a slate is the sum of per-slot rewards that depend only on the
    item in that slot (no interaction between slots)."""
    return float(independent_ips_by_position(slates, clip).sum())


def self_normalized_independent_ips(slates: LoggedSlates, clip: float | None = None) -> float:
    """Independent IPS with each slot's estimate normalised by that slot's sum of weights."""
    weights = slates.weights(clip)
    return float(
        sum(
            _self_normalised(weights[:, k] * slates.rewards[:, k], weights[:, k], f"self-normalised IPS at slot {k}")
            for k in range(slates.slate_size)
        )
    )


@dataclass(frozen=True)
class LoggedCascade:
    """One row per logged slate, one column per slot, with the per-pick *conditional* probabilities a sequential
    policy logs: propensities[i, k] = pi_0(a_ik | x_i, a_i1..a_i,k-1) and target_probs[i, k] the same for the target
    policy, given the same logged items above. q_logged[i, k] is a reward model's prediction for the logged item and
    q_target[i, k] its expectation under the target's distribution for slot k given the logged items above.

    The cascade estimators (Kiyohara et al., WSDM 2022) assume a slot's reward depends on the items at and above it,
    not below: a user reads down the list. The weight of slot k is then the product of the ratios of slots 1..k.
    Slates shorter than the widest are padded with reward 0 and probability 1 (`from_ragged`)."""

    rewards: np.ndarray
    propensities: np.ndarray
    target_probs: np.ndarray
    q_logged: np.ndarray
    q_target: np.ndarray

    def __post_init__(self) -> None:
        _set_checked(
            self,
            {
                name: _as_array(name, getattr(self, name), 2)
                for name in ("rewards", "propensities", "target_probs", "q_logged", "q_target")
            },
        )

    @classmethod
    def from_ragged(
        cls,
        rows: Sequence[tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
        slots: int | None = None,
    ) -> LoggedCascade:
        """From per-slate lists (rewards, propensities, target_probs, q_logged, q_target), keeping the first `slots`
        slots of each (all when None)."""
        if not rows:
            raise ValueError("no logged slates: off-policy estimates need at least one")
        if slots is not None and slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        width = max(len(r[0]) for r in rows) if slots is None else slots
        arrays = [
            np.zeros((len(rows), width)),
            np.ones((len(rows), width)),
            np.ones((len(rows), width)),
            np.zeros((len(rows), width)),
            np.zeros((len(rows), width)),
        ]
        for i, row in enumerate(rows):
            if len({len(column) for column in row}) != 1:
                raise ValueError(f"slate {i}: its per-slot lists differ in length")
            for array, column in zip(arrays, row):
                n = min(len(column), width)
                array[i, :n] = column[:n]
        return cls(*arrays)

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    def take(self, rows: np.ndarray) -> LoggedCascade:
        """The slates at `rows` (with repeats, for the bootstrap)."""
        return LoggedCascade(
            self.rewards[rows], self.propensities[rows], self.target_probs[rows], self.q_logged[rows], self.q_target[rows]
        )

    def first(self, slots: int) -> LoggedCascade:
        """The same slates cut to their first `slots` positions (the estimators' value is then theirs alone)."""
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        return LoggedCascade(
            self.rewards[:, :slots],
            self.propensities[:, :slots],
            self.target_probs[:, :slots],
            self.q_logged[:, :slots],
            self.q_target[:, :slots],
        )

    def weights(self, clip: float | None = None) -> np.ndarray:
        """Cumulative importance weights, shape (n, slots): slot k's is the product of the ratios of slots 1..k,
        capped at `clip` only when it is given."""
        return _clipped(np.cumprod(self.target_probs / self.propensities, axis=1), clip)

    def logged_value(self) -> float:
        """The logging policy's own value: the mean total reward per slate (on-policy, no weights)."""
        return float(self.rewards.sum(axis=1).mean())


def _previous(weights: np.ndarray) -> np.ndarray:
    """Each slot's weight of the slots above it (1 for the first slot)."""
    return np.hstack([np.ones((weights.shape[0], 1)), weights[:, :-1]])


def cascade_ips(data: LoggedCascade, clip: float | None = None) -> float:
    """Mean over slates of sum_k W_k r_k (W_k the cumulative weight of slot k): unbiased under the cascade model."""
    return float(np.mean((data.weights(clip) * data.rewards).sum(axis=1)))


def cascade_snips(data: LoggedCascade, clip: float | None = None) -> float:
    """Cascade IPS with each slot's sum normalised by that slot's sum of weights instead of n."""
    weights = data.weights(clip)
    return float(
        sum(
            _self_normalised(weights[:, k] * data.rewards[:, k], weights[:, k], f"cascade SNIPS at slot {k}")
            for k in range(weights.shape[1])
        )
    )


def cascade_dr_by_slate(data: LoggedCascade, clip: float | None = None) -> np.ndarray:
    """Each slate's term of the cascade doubly robust estimate: sum_k W_k (r_k - q_k) + W_{k-1} E_target[q_k]."""
    weights = data.weights(clip)
    values: np.ndarray = (weights * (data.rewards - data.q_logged) + _previous(weights) * data.q_target).sum(axis=1)
    return values


def cascade_dr(data: LoggedCascade, clip: float | None = None) -> float:
    """Cascade doubly robust (Kiyohara et al. 2022): unbiased under the cascade model if the propensities are right,
    whatever the reward model; the closer the model, the narrower the spread."""
    return float(np.mean(cascade_dr_by_slate(data, clip)))


def effective_sample_size(weights: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many on-policy samples the weighted ones are worth (n when every weight is 1)."""
    total = float(np.sum(weights**2))
    return float(np.sum(weights)) ** 2 / total if total > 0 else 0.0


class Resamplable(Protocol):
    def __len__(self) -> int: ...

    def take(self, rows: np.ndarray) -> Self: ...


DataT = TypeVar("DataT", bound=Resamplable)


def bootstrap_ci(
    estimator: Callable[[DataT], float],
    data: DataT,
    n_boot: int = 1000,
    alpha: float = 0.05,
    rng: np.random.Generator | int | None = None,
) -> tuple[float, float, float]:
    """(estimate on all the data, low, high): the percentile interval at level 1 - alpha of the estimator over
    `n_boot` resamples of the rows with replacement."""
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    generator = np.random.default_rng(rng)
    n = len(data)
    replicates = np.array([estimator(data.take(generator.integers(0, n, size=n))) for _ in range(n_boot)])
    low, high = np.quantile(replicates, [alpha / 2, 1.0 - alpha / 2])
    return estimator(data), float(low), float(high)
