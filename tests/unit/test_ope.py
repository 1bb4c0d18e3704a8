"""Off-policy estimators on small synthetic problems whose true value is known exactly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from rtrec.domain.ope import (
    LoggedBandit,
    LoggedSlates,
    bootstrap_ci,
    dm,
    dr,
    estimates,
    independent_ips,
    independent_ips_by_position,
    ips,
    self_normalized_independent_ips,
    sndr,
    snips,
    switch_dr,
)

# Three contexts (drawn uniformly), four actions.
MEAN_REWARD = np.array([[0.10, 0.30, 0.50, 0.70], [0.60, 0.20, 0.40, 0.10], [0.30, 0.30, 0.80, 0.20]])
LOGGING = np.array([[0.40, 0.30, 0.20, 0.10], [0.25, 0.25, 0.25, 0.25], [0.10, 0.60, 0.10, 0.20]])
TARGET = np.array([[0.05, 0.15, 0.30, 0.50], [0.70, 0.10, 0.10, 0.10], [0.10, 0.10, 0.70, 0.10]])
TRUE_VALUE = float(np.mean(np.sum(TARGET * MEAN_REWARD, axis=1)))  # 0.5217
LOGGING_VALUE = float(np.mean(np.sum(LOGGING * MEAN_REWARD, axis=1)))  # 0.3667: what a naive mean would find


@dataclass(frozen=True)
class Simulated:
    data: LoggedBandit
    contexts: np.ndarray
    actions: np.ndarray


def simulate(
    n: int,
    rng: np.random.Generator,
    *,
    target: np.ndarray = TARGET,
    model: np.ndarray | None = None,
    deterministic_rewards: bool = False,
) -> Simulated:
    """n rows logged by LOGGING; `model` (contexts x actions) is the reward model handed to DM/DR (None: none)."""
    contexts = rng.integers(0, len(LOGGING), size=n)
    cdf = np.cumsum(LOGGING[contexts], axis=1)
    actions = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), LOGGING.shape[1] - 1)
    means = MEAN_REWARD[contexts, actions]
    rewards = means if deterministic_rewards else (rng.random(n) < means).astype(float)
    q_logged = q_target = None
    if model is not None:
        q_logged = model[contexts, actions]
        q_target = np.sum(target[contexts] * model[contexts], axis=1)
    data = LoggedBandit(rewards, LOGGING[contexts, actions], target[contexts, actions], q_logged, q_target)
    return Simulated(data, contexts, actions)


def repeated(estimator, n_datasets: int, n: int, seed: int, **kwargs) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([estimator(simulate(n, rng, **kwargs).data) for _ in range(n_datasets)])


BIASED_MODEL = np.clip(
    MEAN_REWARD + np.array([[0.2, -0.1, 0.15, -0.2], [0.1, 0.1, -0.2, 0.3], [-0.2, 0.1, -0.3, 0.1]]), 0.0, 1.0
)


def test_ips_is_unbiased_over_many_draws():
    values = repeated(ips, n_datasets=3000, n=100, seed=1)
    standard_error = values.std(ddof=1) / np.sqrt(len(values))
    assert standard_error < 0.005  # the check below can tell the true value from anything 0.02 away
    assert abs(values.mean() - TRUE_VALUE) < 4 * standard_error
    assert abs(TRUE_VALUE - LOGGING_VALUE) > 0.1  # a plain mean of rewards would be far off


def test_self_normalised_and_doubly_robust_estimates_are_close_on_a_large_sample():
    data = simulate(40_000, np.random.default_rng(2), model=BIASED_MODEL).data
    for estimator in (ips, snips, dr, sndr, lambda d: switch_dr(d, threshold=10.0)):
        assert estimator(data) == pytest.approx(TRUE_VALUE, abs=0.015)
    # The biased model alone misses by much more than that: DR's correction is what brings it back.
    model_value = float(np.mean(np.sum(TARGET * BIASED_MODEL, axis=1)))
    assert dm(data) == pytest.approx(model_value, abs=0.01)
    assert abs(dm(data) - TRUE_VALUE) > 0.04


def test_doubly_robust_with_a_perfect_model_and_noiseless_rewards_has_no_variance_left_but_the_contexts():
    rng = np.random.default_rng(3)
    for _ in range(50):
        simulated = simulate(200, rng, model=MEAN_REWARD, deterministic_rewards=True)
        per_context_value = np.sum(TARGET * MEAN_REWARD, axis=1)[simulated.contexts].mean()
        assert dr(simulated.data) == pytest.approx(per_context_value, abs=1e-12)
        assert dm(simulated.data) == pytest.approx(per_context_value, abs=1e-12)
    ips_values = repeated(ips, 50, 200, seed=3, model=MEAN_REWARD, deterministic_rewards=True)
    assert ips_values.std() > 0.02


def test_doubly_robust_with_a_perfect_model_has_far_less_variance_than_ips_on_clicks():
    ips_values = repeated(ips, 400, 200, seed=4, model=MEAN_REWARD)
    dr_values = repeated(dr, 400, 200, seed=4, model=MEAN_REWARD)
    assert dr_values.var() < 0.6 * ips_values.var()
    assert abs(dr_values.mean() - TRUE_VALUE) < 4 * dr_values.std() / np.sqrt(len(dr_values))


def test_direct_method_with_the_true_model_is_exact_given_the_contexts():
    simulated = simulate(5_000, np.random.default_rng(5), model=MEAN_REWARD)
    counts = np.bincount(simulated.contexts, minlength=len(MEAN_REWARD)) / len(simulated.contexts)
    assert dm(simulated.data) == pytest.approx(float(counts @ np.sum(TARGET * MEAN_REWARD, axis=1)), rel=1e-12)


def test_on_policy_ips_is_the_mean_reward_exactly():
    data = simulate(1_000, np.random.default_rng(6), target=LOGGING).data
    assert ips(data) == float(np.mean(data.rewards))
    assert snips(data) == float(np.mean(data.rewards))


def test_weights_are_capped_only_when_asked():
    data = LoggedBandit(rewards=[1.0, 1.0, 0.0], propensities=[0.001, 0.5, 0.5], target_probs=[1.0, 0.5, 0.5])
    assert ips(data) == pytest.approx((1000.0 + 1.0) / 3)
    assert ips(data, clip=10.0) == pytest.approx((10.0 + 1.0) / 3)
    assert snips(data, clip=10.0) == pytest.approx(11.0 / 12.0)


def test_switch_dr_falls_back_to_the_model_for_large_weights():
    data = LoggedBandit(
        rewards=[1.0, 0.0], propensities=[0.01, 0.5], target_probs=[0.5, 0.5], q_logged=[0.2, 0.4], q_target=[0.3, 0.3]
    )
    assert switch_dr(data, threshold=5.0) == pytest.approx(0.3 + (0.0 + 1.0 * (0.0 - 0.4)) / 2)
    assert switch_dr(data, threshold=100.0) == pytest.approx(dr(data))


def test_estimates_names_what_the_data_allows():
    plain = simulate(100, np.random.default_rng(7)).data
    modelled = simulate(100, np.random.default_rng(7), model=BIASED_MODEL).data
    assert set(estimates(plain)) == {"IPS", "SNIPS"}
    assert set(estimates(modelled)) == {"IPS", "SNIPS", "DM", "DR", "SNDR"}


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_data():
    small = simulate(400, np.random.default_rng(8), model=BIASED_MODEL).data
    large = simulate(4_000, np.random.default_rng(9), model=BIASED_MODEL).data
    estimate, low, high = bootstrap_ci(dr, small, n_boot=200, alpha=0.05, rng=np.random.default_rng(10))
    assert estimate == dr(small)
    assert low < estimate < high
    assert low < TRUE_VALUE < high
    _, large_low, large_high = bootstrap_ci(dr, large, n_boot=200, alpha=0.05, rng=11)
    assert large_high - large_low < 0.5 * (high - low)
    assert bootstrap_ci(snips, small, n_boot=50, rng=12) == bootstrap_ci(snips, small, n_boot=50, rng=12)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"propensities": [0.5, 0.0]}, r"propensities must lie in \(0.0, 1.0\]"),
        ({"propensities": [0.5, 1.5]}, r"propensities must lie in \(0.0, 1.0\]"),
        ({"target_probs": [-0.1, 0.5]}, r"target_probs must lie in \[0.0, 1.0\]"),
        ({"rewards": [1.0, 0.0, 1.0]}, "same shape"),
        ({"q_logged": [0.1]}, "same shape"),
        ({"rewards": [np.nan, 1.0]}, "rewards must be finite"),
        ({"rewards": [[1.0, 0.0]]}, "rewards must be a 1-D array"),
        ({"rewards": [], "propensities": [], "target_probs": []}, "rewards is empty"),
    ],
)
def test_invalid_logged_data_is_refused_with_a_clear_message(fields, message):
    valid = {"rewards": [1.0, 0.0], "propensities": [0.5, 0.5], "target_probs": [0.2, 0.8]}
    with pytest.raises(ValueError, match=message):
        LoggedBandit(**(valid | fields))


def test_estimators_refuse_what_they_cannot_compute():
    data = LoggedBandit([1.0, 0.0], [0.5, 0.5], [0.2, 0.8], q_target=[0.3, 0.3])
    assert dm(data) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="DR needs a reward model's predictions: pass q_logged and q_target"):
        dr(data)
    with pytest.raises(ValueError, match="DM needs"):
        dm(LoggedBandit([1.0], [0.5], [0.5]))
    with pytest.raises(ValueError, match="clip must be a positive"):
        ips(data, clip=0.0)
    with pytest.raises(ValueError, match="switch threshold must be a positive"):
        switch_dr(LoggedBandit([1.0], [0.5], [0.5], [0.1], [0.1]), threshold=-1.0)
    with pytest.raises(ValueError, match="SNIPS is undefined"):
        snips(LoggedBandit([1.0, 0.0], [0.5, 0.5], [0.0, 0.0]))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(ips, data, n_boot=1)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(ips, data, n_boot=10, alpha=1.0)


# Slates of two slots; each slot's item is drawn independently, so the per-slot marginals are exact.
SLOT_LOGGING = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
SLOT_TARGET = np.array([[0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
RELEVANCE = np.array([0.2, 0.5, 0.9])
EXAMINATION = np.array([1.0, 0.5])  # position-based click model: P(click) = examination[slot] * relevance[item]
TRUE_SLATE_VALUE = float(sum(EXAMINATION[k] * SLOT_TARGET[k] @ RELEVANCE for k in range(2)))


def simulate_slates(n: int, rng: np.random.Generator, target: np.ndarray = SLOT_TARGET) -> LoggedSlates:
    cdf = np.cumsum(SLOT_LOGGING, axis=1)
    items = np.minimum((rng.random((n, 2, 1)) > cdf[None]).sum(axis=2), 2)
    slots = np.arange(2)
    clicks = (rng.random((n, 2)) < EXAMINATION[slots] * RELEVANCE[items]).astype(float)
    return LoggedSlates(clicks, SLOT_LOGGING[slots, items], target[slots, items])


def test_independent_ips_is_unbiased_for_a_position_based_click_model():
    rng = np.random.default_rng(13)
    values = np.array([independent_ips(simulate_slates(100, rng)) for _ in range(2000)])
    standard_error = values.std(ddof=1) / np.sqrt(len(values))
    assert standard_error < 0.01
    assert abs(values.mean() - TRUE_SLATE_VALUE) < 4 * standard_error
    large = simulate_slates(40_000, rng)
    assert self_normalized_independent_ips(large) == pytest.approx(TRUE_SLATE_VALUE, abs=0.02)
    per_slot = independent_ips_by_position(large)
    assert per_slot.shape == (2,)
    assert per_slot == pytest.approx(EXAMINATION * (SLOT_TARGET @ RELEVANCE), abs=0.02)


def test_independent_ips_on_policy_is_the_mean_total_reward():
    slates = simulate_slates(500, np.random.default_rng(14), target=SLOT_LOGGING)
    assert independent_ips(slates) == pytest.approx(float(slates.rewards.sum(axis=1).mean()), rel=1e-12)
    assert self_normalized_independent_ips(slates) == pytest.approx(independent_ips(slates), rel=1e-12)
    estimate, low, high = bootstrap_ci(independent_ips, slates, n_boot=100, rng=15)
    assert low < estimate < high


def test_slates_are_validated():
    with pytest.raises(ValueError, match="same shape"):
        LoggedSlates(np.zeros((3, 2)), np.full((3, 3), 0.5), np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="must be a 2-D array"):
        LoggedSlates(np.zeros(3), np.full(3, 0.5), np.full(3, 0.5))
    with pytest.raises(ValueError, match="propensities must lie"):
        LoggedSlates(np.zeros((1, 2)), np.array([[0.5, 0.0]]), np.full((1, 2), 0.5))


# -- cascade estimators over per-pick (conditional) probabilities --------------------------------------------------

from itertools import permutations  # noqa: E402

from rtrec.domain.ope import (  # noqa: E402
    LoggedCascade,
    cascade_dr,
    cascade_dr_by_slate,
    cascade_ips,
    cascade_snips,
    effective_sample_size,
)

CASCADE_ATTRACTION = np.array([0.30, 0.25, 0.20, 0.10, 0.05, 0.02])  # click probability of each item at the top slot
CASCADE_EXAMINATION = np.array([1.0, 0.6, 0.3])  # position bias of the three slots
LOGGING_SCORES = np.array([0.0, 0.5, 1.0, 1.5, 0.2, 0.1])
TARGET_SCORES = np.array([2.0, 1.5, 1.0, 0.0, -0.5, 0.0])


def _pick_probabilities(scores: np.ndarray, taken: list[int]) -> np.ndarray:
    weights = np.exp(scores)
    weights[taken] = 0.0
    return weights / weights.sum()


def _slate_probability(scores: np.ndarray, slate: tuple[int, ...]) -> float:
    return float(np.prod([_pick_probabilities(scores, list(slate[:k]))[a] for k, a in enumerate(slate)]))


def _true_value(scores: np.ndarray) -> float:
    return sum(
        _slate_probability(scores, s) * float(CASCADE_ATTRACTION[list(s)] @ CASCADE_EXAMINATION)
        for s in permutations(range(6), 3)
    )


def _log_cascade(n: int, seed: int, q_model: np.ndarray, noiseless: bool = False) -> LoggedCascade:
    """Slates drawn by the logging Plackett-Luce policy, with per-pick probabilities of both policies and a reward
    model q_model[item, slot]; `noiseless` logs each click's probability as its reward."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        taken: list[int] = []
        columns: list[list[float]] = [[], [], [], [], []]
        for slot in range(3):
            logging, target = _pick_probabilities(LOGGING_SCORES, taken), _pick_probabilities(TARGET_SCORES, taken)
            item = int(rng.choice(6, p=logging))
            click = CASCADE_ATTRACTION[item] * CASCADE_EXAMINATION[slot]
            reward = click if noiseless else float(rng.random() < click)
            for column, value in zip(
                columns, (reward, logging[item], target[item], q_model[item, slot], float(target @ q_model[:, slot]))
            ):
                column.append(value)
            taken.append(item)
        rows.append(tuple(columns))
    return LoggedCascade.from_ragged(rows)


TRUE_Q = np.outer(CASCADE_ATTRACTION, CASCADE_EXAMINATION)


def test_cascade_ips_and_dr_recover_the_target_policys_value_under_a_position_based_click_model():
    truth = _true_value(TARGET_SCORES)
    data = _log_cascade(20_000, seed=7, q_model=np.full((6, 3), 0.1))  # a poor reward model: DR must not care
    assert data.logged_value() == pytest.approx(_true_value(LOGGING_SCORES), abs=0.01)
    for estimator in (cascade_ips, cascade_dr, cascade_snips):
        _, low, high = bootstrap_ci(estimator, data, n_boot=200, alpha=0.01, rng=0)
        assert low <= truth <= high
        assert high - low < 0.08
    assert abs(_true_value(LOGGING_SCORES) - truth) > 0.1  # the policies do differ


def test_cascade_dr_with_the_true_reward_model_is_much_tighter_than_ips_when_rewards_are_not_noise():
    data = _log_cascade(3_000, seed=5, q_model=TRUE_Q, noiseless=True)
    _, ips_low, ips_high = bootstrap_ci(cascade_ips, data, n_boot=200, rng=1)
    _, dr_low, dr_high = bootstrap_ci(cascade_dr, data, n_boot=200, rng=1)
    assert (dr_high - dr_low) < 0.6 * (ips_high - ips_low)
    assert dr_low <= _true_value(TARGET_SCORES) <= dr_high


def test_on_policy_cascade_weights_are_one_and_dr_is_the_logged_value_plus_a_zero_mean_correction():
    rows = [([1, 0], [0.5, 0.25], [0.5, 0.25], [0.2, 0.1], [0.3, 0.1])]
    data = LoggedCascade.from_ragged(rows)
    assert np.all(data.weights() == 1.0)
    assert cascade_ips(data) == data.logged_value() == 1.0
    assert cascade_dr_by_slate(data)[0] == pytest.approx((1 - 0.2) + 0.3 + (0 - 0.1) + 0.1)


def test_cascade_weights_multiply_down_the_slate_and_ragged_slates_are_padded():
    data = LoggedCascade.from_ragged(
        [([0, 0, 1], [0.5, 0.5, 0.5], [1.0, 0.25, 1.0], [0] * 3, [0] * 3), ([1], [0.2], [0.4], [0.0], [0.0])]
    )
    assert data.weights().tolist() == [[2.0, 1.0, 2.0], [2.0, 2.0, 2.0]]
    assert data.rewards.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert data.weights(clip=1.5).max() == 1.5
    assert cascade_ips(data) == pytest.approx((2.0 + 2.0) / 2)
    assert LoggedCascade.from_ragged([([0, 1], [0.5, 0.5], [0.5, 0.5], [0, 0], [0, 0])], slots=1).rewards.shape == (1, 1)
    assert effective_sample_size(np.ones(7)) == pytest.approx(7.0)
    assert effective_sample_size(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)


def test_cascade_data_is_validated():
    with pytest.raises(ValueError, match="no logged slates"):
        LoggedCascade.from_ragged([])
    with pytest.raises(ValueError, match="differ in length"):
        LoggedCascade.from_ragged([([0, 1], [0.5], [0.5, 0.5], [0, 0], [0, 0])])
    with pytest.raises(ValueError, match="propensities"):
        LoggedCascade.from_ragged([([0], [0.0], [0.5], [0], [0])])
