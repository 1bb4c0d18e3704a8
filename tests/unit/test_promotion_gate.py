from __future__ import annotations

import math
from functools import partial

import pytest

from rtrec.domain.promotion import GateDecision, ProductionPointer, all_of, offline_gate, override

RECALL = "recbole.test.recall@10"
NDCG = "recbole.test.ndcg@10"
METRICS = (RECALL, NDCG)
gate = partial(offline_gate, metrics=METRICS)
PRODUCTION = {RECALL: 0.20, NDCG: 0.10}


def test_the_first_model_is_approved_when_nothing_is_in_production():
    decision = gate({RECALL: 0.01, NDCG: 0.01}, None)
    assert decision.approved
    assert not decision.overridden
    assert "no production model" in decision.reason
    assert decision.figures == {f"candidate.{RECALL}": 0.01, f"candidate.{NDCG}": 0.01}


def test_an_improvement_is_approved_with_its_figures():
    decision = gate({RECALL: 0.22, NDCG: 0.11}, PRODUCTION)
    assert decision.approved
    assert decision.figures[f"production.{RECALL}"] == 0.20
    assert decision.figures[f"relative_change.{RECALL}"] == pytest.approx(0.10)
    assert decision.figures[f"relative_change.{NDCG}"] == pytest.approx(0.10)


def test_a_drop_within_the_relative_tolerance_is_approved_even_exactly_at_it():
    assert gate({RECALL: 0.197, NDCG: 0.10}, PRODUCTION).approved  # -1.5%
    assert gate({RECALL: 0.20 * 0.98, NDCG: 0.10}, PRODUCTION).approved  # -2.0%, float noise aside
    assert gate({RECALL: 0.197, NDCG: 0.10}, PRODUCTION, tolerance=0.01).approved is False


def test_a_regression_beyond_tolerance_is_rejected_naming_metric_values_and_tolerance():
    decision = gate({RECALL: 0.22, NDCG: 0.09}, PRODUCTION)
    assert not decision.approved
    assert NDCG in decision.reason
    assert RECALL not in decision.reason
    assert "0.09" in decision.reason
    assert "0.1" in decision.reason
    assert "-10.00%" in decision.reason
    assert "2.00%" in decision.reason
    assert decision.figures[f"relative_change.{NDCG}"] == pytest.approx(-0.10)


def test_a_missing_or_non_finite_candidate_metric_is_rejected_by_name_even_without_production():
    for production in (PRODUCTION, None):
        decision = gate({RECALL: 0.3}, production)
        assert not decision.approved
        assert NDCG in decision.reason
    assert not gate({RECALL: math.nan, NDCG: 0.2}, None).approved


def test_a_metric_production_lacks_is_not_compared_and_the_reason_says_so():
    decision = gate({RECALL: 0.05, NDCG: 0.2}, {NDCG: 0.1})
    assert decision.approved
    assert RECALL in decision.reason
    assert "not compared" in decision.reason
    assert gate({RECALL: 0.05, NDCG: 0.2}, {}).approved


def test_bad_gate_arguments_are_refused():
    with pytest.raises(ValueError, match="needs at least one metric"):
        offline_gate({}, None, metrics=())
    with pytest.raises(ValueError, match="tolerance must not be negative"):
        offline_gate({RECALL: 1.0}, None, metrics=(RECALL,), tolerance=-0.1)


def _fixed(approved: bool, reason: str, **figures: float):
    calls: list[int] = []

    def fixed_gate(candidate, production) -> GateDecision:
        calls.append(1)
        return GateDecision(approved, reason, dict(figures))

    fixed_gate.calls = calls
    return fixed_gate


def test_all_of_merges_figures_and_reasons_when_every_gate_approves():
    combined = all_of(gate, _fixed(True, "ope ok", **{"ope.snips": 0.3}))
    decision = combined({RECALL: 0.21, NDCG: 0.1}, PRODUCTION)
    assert decision.approved
    assert decision.figures["ope.snips"] == 0.3
    assert f"production.{RECALL}" in decision.figures
    assert "ope ok" in decision.reason
    assert RECALL in decision.reason


def test_all_of_stops_at_the_first_rejection_and_keeps_the_figures_so_far():
    first, second, third = _fixed(True, "a", a=1.0), _fixed(False, "ope regressed", b=2.0), _fixed(False, "never")
    decision = all_of(first, second, third)({}, None)
    assert not decision.approved
    assert decision.reason == "ope regressed"
    assert decision.figures == {"a": 1.0, "b": 2.0}
    assert third.calls == []
    with pytest.raises(ValueError, match="at least one gate"):
        all_of()


def test_an_override_approves_a_rejection_keeping_the_gate_reason_and_needs_a_reason():
    rejected = gate({RECALL: 0.1, NDCG: 0.1}, PRODUCTION)
    overridden = override(rejected, "new catalogue, metrics not comparable")
    assert overridden.approved
    assert overridden.overridden
    assert "new catalogue" in overridden.reason
    assert rejected.reason in overridden.reason
    assert overridden.figures == rejected.figures
    approved = gate({RECALL: 0.3, NDCG: 0.3}, PRODUCTION)
    assert override(approved, "why not") is approved
    with pytest.raises(ValueError, match="non-empty reason"):
        override(rejected, "  ")


def test_the_pointer_round_trips_through_a_dict_and_rejects_garbage():
    pointer = ProductionPointer("m", "3", "run", "models/versions/3/", 1_700_000_000, {RECALL: 0.2}, "ok")
    assert ProductionPointer.from_dict(pointer.to_dict()) == pointer
    with pytest.raises(KeyError):
        ProductionPointer.from_dict({"model_name": "m"})
