"""The shadow candidate's withdrawal: once the promotion gate turns a candidate down for good, serving stops scoring
it beside production."""

from __future__ import annotations

from rtrec.domain.promotion import SHADOW_POINTER
from rtrec.ports import ModelPointers
from rtrec.services.ope import WAITING_FOR_TRAFFIC


def rejected_for_good(reason: str) -> bool:
    """Whether a rejection stands whatever traffic comes (the off-policy check merely waiting for shadow-scored
    slates does not: the next try may pass)."""
    return not reason.startswith(WAITING_FOR_TRAFFIC)


def withdraw_rejected_shadow(store: ModelPointers, version: str, reason: str) -> bool:
    """After the gate rejected `version` for `reason`: when the rejection is for good and `version` is still the
    shadow candidate, remove the shadow pointer. Returns whether it was withdrawn."""
    if not rejected_for_good(reason):
        return False
    shadow = store.read_pointer(SHADOW_POINTER)
    if shadow is None or shadow.version != version:
        return False
    store.delete_pointer(SHADOW_POINTER)
    return True
