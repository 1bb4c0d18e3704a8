"""The promotion gate's off-policy half: shadow-scored slates from the joined log -> estimates -> a decision."""

from __future__ import annotations

import numpy as np
import pytest

from rtrec.adapters.memory import InMemoryCounterfactualLog
from rtrec.domain.events import Impression, decode_record, encode_record
from rtrec.domain.online import LabeledImpression
from rtrec.errors import InvalidInputError, NotFoundError
from rtrec.services.ope import OffPolicyGate, OpeConfig, evaluate

SLOTS = 4


def joined(
    i: int, rng: np.random.Generator, *, served: str = "1", shadow: str | None = "2", shadow_click_ratio: float = 1.0
) -> LabeledImpression:
    """A slate production served with propensity 0.5 per pick; the shadow policy gives each shown item
    `shadow_click_ratio`/2 if it was clicked and 0.5 otherwise, so its value is the logged one scaled."""
    clicked = int(rng.integers(0, 8))  # a click in one of the 4 slots half of the time
    rewards = tuple(int(slot == clicked) for slot in range(SLOTS))
    shadow_probs = tuple(min(1.0, 0.5 * (shadow_click_ratio if r else 1.0)) for r in rewards)
    slate = Impression(
        f"r{i}",
        f"u{i % 50}",
        served,
        "two_tower",
        tuple(f"i{k}" for k in range(SLOTS)),
        (0.5,) * SLOTS,
        (1.0,) * SLOTS,
        1_000.0 + i,
        q_hat=(0.1,) * SLOTS,
        shadow_version=shadow,
        shadow_propensities=shadow_probs if shadow else (),
        shadow_expected_q=(0.1,) * SLOTS if shadow else (),
    )
    return LabeledImpression(slate, rewards, 1_001.0 + i)


def log_of(slates: list[LabeledImpression]) -> InMemoryCounterfactualLog:
    log = InMemoryCounterfactualLog()
    log.write_joined("batch", slates)
    return log


def test_shadow_fields_survive_the_stream_and_the_joined_log():
    labeled = joined(0, np.random.default_rng(0))
    assert decode_record(encode_record(labeled.slate)) == labeled.slate
    assert LabeledImpression.from_dict(labeled.to_dict()) == labeled


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shadow_propensities": [0.5]}, "one number per item"),
        ({"shadow_propensities": [0.5, 0.5, 0.5, 1.5]}, r"\[0, 1\]"),
        ({"shadow_expected_q": []}, "needs shadow_propensities and shadow_expected_q"),
        ({"q_hat": [0.1, 0.1, 0.1, float("nan")]}, "finite"),
    ],
)
def test_malformed_shadow_fields_are_poison_with_a_reason(change, message):
    body = {**joined(0, np.random.default_rng(0)).to_dict(), **change}
    with pytest.raises(InvalidInputError, match=message):
        LabeledImpression.from_dict(body)


def test_an_identical_candidate_is_estimated_at_the_logged_value_and_approved():
    rng = np.random.default_rng(1)
    gate = OffPolicyGate(log_of([joined(i, rng) for i in range(400)]), OpeConfig(n_boot=200))
    report = gate.report("2")
    assert report.slates == 400
    assert report.logging_version == "1"
    assert report.slots == SLOTS
    assert report.ips[0] == pytest.approx(report.logged[0])
    assert report.dr[0] == pytest.approx(report.logged[0])
    assert report.difference[0] == pytest.approx(0.0, abs=1e-12)
    assert report.ess_first_slot == pytest.approx(400)
    decision = gate("2", "1")
    assert decision.approved
    assert "not significantly worse" in decision.reason
    assert decision.figures["ope.slates"] == 400
    assert "ope.dr.low" in decision.figures


def test_a_candidate_that_avoids_what_users_click_is_rejected_and_a_better_one_approved():
    rng = np.random.default_rng(2)
    worse = OffPolicyGate(log_of([joined(i, rng, shadow_click_ratio=0.2) for i in range(600)]), OpeConfig(n_boot=200))
    decision = worse("2", "1")
    assert not decision.approved
    assert "significantly worse" in decision.reason
    assert decision.figures["ope.difference.high"] < 0
    better = OffPolicyGate(log_of([joined(i, rng, shadow_click_ratio=1.9) for i in range(600)]), OpeConfig(n_boot=200))
    decision = better("2", "1")
    assert decision.approved
    assert decision.reason.startswith("off-policy: better")


def test_the_gate_waits_for_enough_shadow_traffic_and_skips_when_production_never_served():
    rng = np.random.default_rng(3)
    slates = [joined(i, rng) for i in range(50)] + [joined(100 + i, rng, shadow=None) for i in range(500)]
    gate = OffPolicyGate(log_of(slates), OpeConfig(min_slates=200, n_boot=50))
    waiting = gate("2", "1")
    assert not waiting.approved
    assert "50 of the 200" in waiting.reason
    skipped = gate("2", "7")
    assert skipped.approved
    assert "no logged traffic" in skipped.reason


def test_a_version_that_was_never_shadow_scored_is_not_found_with_a_hint():
    with pytest.raises(NotFoundError, match="rtrec shadow"):
        evaluate([joined(0, np.random.default_rng(0), shadow=None)], "2", OpeConfig())


def test_bad_ope_settings_are_refused():
    for bad in ({"n_boot": 1}, {"alpha": 1.0}, {"min_slates": 0}, {"tolerance": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            OpeConfig(**bad)


def test_the_evaluation_goes_as_deep_as_the_effective_sample_size_allows():
    from rtrec.domain.ope import LoggedCascade
    from rtrec.services.ope import informative_slots

    rng = np.random.default_rng(7)
    n = 400
    # Slot 1 agrees with the logging policy; deeper slots disagree more and more, so the cumulative weights thin out.
    target = np.column_stack([np.full(n, 0.5)] + [np.where(rng.random(n) < 0.5, 0.95, 0.05) for _ in range(3)])
    data = LoggedCascade(np.zeros((n, 4)), np.full((n, 4), 0.5), target, np.zeros((n, 4)), np.zeros((n, 4)))
    assert informative_slots(data, min_ess=n * 0.99) == 1
    assert informative_slots(data, min_ess=1) == 4
    assert informative_slots(data, min_ess=100) == 3
    assert informative_slots(data, min_ess=300) == 1
    assert data.first(2).rewards.shape == (n, 2)
    assert (
        informative_slots(
            LoggedCascade(np.zeros((3, 2)), np.full((3, 2), 0.5), np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2))),
            min_ess=1,
        )
        == 1
    )
