"""The online learners: FTRL-Proximal logistic regression and per-item Beta posteriors."""

from __future__ import annotations

import numpy as np
import pytest

from rtrec.domain.online import BetaPosteriors, FtrlProximal


def synthetic(n: int, weights: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.hstack([np.ones((n, 1)), rng.standard_normal((n, len(weights) - 1))])
    p = 1 / (1 + np.exp(-(x @ weights)))
    return x, (rng.random(n) < p).astype(float)


def test_ftrl_learns_the_true_weights_and_its_loss_falls():
    true = np.array([-1.0, 2.0, -1.5, 0.0, 0.0, 0.8])
    x, y = synthetic(20_000, true)
    model = FtrlProximal(len(true), alpha=0.1, l1=0.0, l2=1.0)
    first = model.update(x[:2000], y[:2000])
    model.update(x[2000:18000], y[2000:18000])
    last = model.update(x[18000:], y[18000:])
    assert last < first
    np.testing.assert_allclose(model.weights, true, atol=0.1)


def test_ftrl_l1_sets_useless_features_to_exactly_zero():
    true = np.array([-1.0, 2.0, -1.5, 0.0, 0.0, 0.8])
    x, y = synthetic(20_000, true)
    model = FtrlProximal(len(true), alpha=0.1, l1=150.0, l2=1.0)
    model.update(x, y)
    assert model.weights[3] == 0.0
    assert model.weights[4] == 0.0
    assert model.weights[1] > 1.5
    assert model.weights[2] < -1.0


def test_ftrl_predictions_are_calibrated_on_held_out_data():
    true = np.array([-2.0, 1.0, 1.0])
    x, y = synthetic(30_000, true)
    model = FtrlProximal(3, alpha=0.2, l1=0.0, l2=0.1)
    model.update(x[:20_000], y[:20_000])
    predicted = model.predict(x[20_000:])
    assert abs(predicted.mean() - y[20_000:].mean()) < 0.02


def test_ftrl_state_round_trips_and_continues_identically():
    x, y = synthetic(500, np.array([0.5, -1.0]))
    a = FtrlProximal(2)
    a.update(x[:250], y[:250])
    b = FtrlProximal.from_dict(a.to_dict())
    a.update(x[250:], y[250:])
    b.update(x[250:], y[250:])
    np.testing.assert_array_equal(a.weights, b.weights)
    assert b.examples == 500


@pytest.mark.parametrize(
    ("features", "labels", "reason"),
    [(np.zeros((2, 3)), [0, 1], r"features of shape \(2, 2\)"), (np.zeros((2, 2)), [0, 2], "labels must be 0 or 1")],
)
def test_ftrl_rejects_bad_examples(features, labels, reason):
    with pytest.raises(ValueError, match=reason):
        FtrlProximal(2).update(features, np.array(labels))


def test_beta_posteriors_narrow_with_evidence():
    posteriors = BetaPosteriors()
    posteriors.observe("known", impressions=1000, clicks=100)
    posteriors.observe("new", impressions=2, clicks=0)
    assert posteriors.mean(["known"])[0] == pytest.approx(101 / 1002)
    assert posteriors.mean(["never"])[0] == pytest.approx(0.5)
    draws = np.array([posteriors.sample(["known", "new"], np.random.default_rng(s)) for s in range(2000)])
    assert draws[:, 0].std() < 0.02 < draws[:, 1].std()  # the new item is explored, the known one exploited
    with pytest.raises(ValueError, match="counts must not be negative"):
        posteriors.observe("x", impressions=-1)


def _reference_steps(model: FtrlProximal, x: np.ndarray, y: np.ndarray) -> float:
    """FTRL-Proximal (McMahan et al. 2013, algorithm 1) in numpy, one example at a time, as the update used to be
    written: the Python-float loop must take the same steps."""
    loss = 0.0
    for row, label in zip(x, y):
        p = float(model.predict(row))
        loss -= np.log(max(p if label else 1.0 - p, 1e-15))
        gradient = (p - label) * row
        sigma = (np.sqrt(model.n + gradient**2) - np.sqrt(model.n)) / model.alpha
        model.z += gradient - sigma * model.weights
        model.n += gradient**2
    return loss / len(y)


@pytest.mark.parametrize("l1", [0.0, 0.05, 5.0])
def test_the_update_takes_the_reference_steps(l1):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(400, 7)), (rng.random(400) < 0.2).astype(float)
    fast, reference = FtrlProximal(7, l1=l1), FtrlProximal(7, l1=l1)
    for start in range(0, 400, 10):  # slates of 10
        assert fast.update(x[start : start + 10], y[start : start + 10]) == pytest.approx(
            _reference_steps(reference, x[start : start + 10], y[start : start + 10]), rel=1e-9
        )
    np.testing.assert_allclose(fast.z, reference.z, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.n, reference.n, rtol=1e-9, atol=1e-12)
    assert fast.examples == 400
