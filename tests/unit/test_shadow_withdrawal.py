"""The shadow candidate's withdrawal after the promotion gate rejects it (rtrec.services.shadow)."""

from __future__ import annotations

import pytest

from rtrec.domain.promotion import SHADOW_POINTER, ProductionPointer
from rtrec.services.ope import WAITING_FOR_TRAFFIC
from rtrec.services.shadow import rejected_for_good, withdraw_rejected_shadow


def pointer(version: str) -> ProductionPointer:
    return ProductionPointer(
        model_name="m", version=version, run_id="r", s3_prefix=f"models/{version}/", promoted_at=0, metrics={}, gate_reason=""
    )


class Store:
    """The ModelStore's pointer half: pointers by role, and the roles deleted."""

    def __init__(self, **pointers: ProductionPointer) -> None:
        self.pointers = dict(pointers)
        self.deleted: list[str] = []

    def read_pointer(self, role: str = "production") -> ProductionPointer | None:
        return self.pointers.get(role)

    def delete_pointer(self, role: str) -> None:
        self.deleted.append(role)
        self.pointers.pop(role, None)


REJECTED = "offline: recall@10 regressed by 5.0% (> 2.0%)"
WAITING = f"{WAITING_FOR_TRAFFIC}: 12 of the 200 joined slates so far"


def test_a_candidate_rejected_for_good_is_withdrawn():
    store = Store(**{SHADOW_POINTER: pointer("7")})
    assert withdraw_rejected_shadow(store, "7", REJECTED) is True
    assert store.deleted == [SHADOW_POINTER]
    assert store.read_pointer(SHADOW_POINTER) is None


@pytest.mark.parametrize(
    ("shadow", "reason"),
    [
        ("7", WAITING),  # the off-policy check waits for traffic: the next try may pass
        ("8", REJECTED),  # another version became the shadow candidate meanwhile
        (None, REJECTED),  # no shadow candidate at all
    ],
)
def test_a_candidate_is_kept_while_waiting_for_traffic_or_when_it_is_no_longer_the_shadow(shadow, reason):
    store = Store(**({SHADOW_POINTER: pointer(shadow)} if shadow else {}))
    assert withdraw_rejected_shadow(store, "7", reason) is False
    assert store.deleted == []


def test_only_waiting_for_traffic_is_not_a_rejection_for_good():
    assert rejected_for_good(REJECTED)
    assert not rejected_for_good(WAITING)
