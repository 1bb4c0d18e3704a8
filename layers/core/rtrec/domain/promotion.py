"""The promotion gate and the production pointer: what decides that a candidate model may serve, and
the record that tells serving which model does.

Pure (no SDK): the registry (MLflow, training side) and the model store (S3 adapter) sit around it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOLERANCE = 0.02  # relative: a candidate may be at most 2% worse than production on each metric
# Float noise must not turn "exactly at the tolerance" into a rejection.
_EPSILON = 1e-12


@dataclass(frozen=True)
class GateDecision:
    approved: bool
    reason: str
    figures: dict[str, float] = field(default_factory=dict)
    overridden: bool = False  # approved by a person against the gate's rejection


# A gate looks at the candidate's and production's metrics (None: nothing in production yet).
Gate = Callable[[Mapping[str, float], Mapping[str, float] | None], GateDecision]


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def offline_gate(
    candidate: Mapping[str, float],
    production: Mapping[str, float] | None,
    *,
    metrics: Sequence[str],
    tolerance: float = DEFAULT_TOLERANCE,
) -> GateDecision:
    """Approve unless a metric in `metrics` (higher is better) is worse than production's by more
    than `tolerance` (relative to production's value).

    A candidate lacking one of `metrics` (or holding a non-finite value) is rejected even when
    nothing is in production: a model that was not evaluated must not serve. A metric production
    lacks is not compared (it cannot regress against nothing) and the reason says so.
    Bind `metrics` (functools.partial) to use it as a Gate.
    """
    if not metrics:
        raise ValueError("the offline gate needs at least one metric to compare")
    if tolerance < 0:
        raise ValueError("tolerance must not be negative")

    figures: dict[str, float] = {}
    for name in metrics:
        value = candidate.get(name)
        if value is None or not math.isfinite(float(value)):
            return GateDecision(False, f"candidate has no finite value for metric {name!r} (got {value!r})", figures)
        figures[f"candidate.{name}"] = float(value)

    if production is None:
        return GateDecision(True, "no production model yet", figures)

    regressions: list[str] = []
    compared: list[str] = []
    skipped: list[str] = []
    for name in metrics:
        cand = float(candidate[name])
        prod = production.get(name)
        if prod is None or not math.isfinite(float(prod)):
            skipped.append(name)
            continue
        prod = float(prod)
        figures[f"production.{name}"] = prod
        change = (cand - prod) / abs(prod) if prod != 0 else (0.0 if cand == prod else math.copysign(math.inf, cand))
        figures[f"relative_change.{name}"] = change
        line = f"{name} {_fmt(cand)} vs production {_fmt(prod)} ({change:+.2%})"
        if prod - cand > tolerance * abs(prod) + _EPSILON:
            regressions.append(line)
        else:
            compared.append(line)

    tol = f"tolerance {tolerance:.2%}"
    note = f"; not in production, not compared: {', '.join(skipped)}" if skipped else ""
    if regressions:
        return GateDecision(False, f"regressed beyond {tol}: {'; '.join(regressions)}{note}", figures)
    if not compared:
        return GateDecision(True, f"production has none of the metrics {list(metrics)}; nothing to compare", figures)
    return GateDecision(True, f"within {tol}: {'; '.join(compared)}{note}", figures)


def all_of(*gates: Gate) -> Gate:
    """One gate that runs `gates` in order: the first rejection wins (later gates are not run),
    figures of the gates run are merged, and an approval's reason joins every gate's reason."""
    if not gates:
        raise ValueError("all_of needs at least one gate")

    def combined(candidate: Mapping[str, float], production: Mapping[str, float] | None) -> GateDecision:
        figures: dict[str, float] = {}
        reasons: list[str] = []
        for gate in gates:
            decision = gate(candidate, production)
            figures.update(decision.figures)
            if not decision.approved:
                return GateDecision(False, decision.reason, figures)
            reasons.append(decision.reason)
        return GateDecision(True, "; ".join(reasons), figures)

    return combined


def override(decision: GateDecision, reason: str) -> GateDecision:
    """A person's explicit approval of a rejected candidate; the gate's own reason is kept."""
    if not reason or not reason.strip():
        raise ValueError("an override needs a non-empty reason")
    if decision.approved:
        return decision
    return GateDecision(True, f"overridden: {reason.strip()} (gate: {decision.reason})", dict(decision.figures), True)


PRODUCTION_POINTER = "production"
# The candidate (alias `staging`) serving scores beside production without showing it: its policy's
# probabilities for the served slates are logged, so the promotion gate can estimate it off-policy.
SHADOW_POINTER = "shadow"
POINTER_ROLES = (PRODUCTION_POINTER, SHADOW_POINTER)


@dataclass(frozen=True)
class ProductionPointer:
    """What serving reads to find a model (the production one, or the shadow candidate): written after the
    version's files are published under `s3_prefix` (a key prefix in the models bucket)."""

    model_name: str
    version: str
    run_id: str
    s3_prefix: str
    promoted_at: int  # unix seconds
    metrics: dict[str, float]
    gate_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "run_id": self.run_id,
            "s3_prefix": self.s3_prefix,
            "promoted_at": self.promoted_at,
            "metrics": dict(self.metrics),
            "gate_reason": self.gate_reason,
        }

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ProductionPointer:
        """Raises KeyError, TypeError or ValueError on a malformed body."""
        return cls(
            model_name=str(body["model_name"]),
            version=str(body["version"]),
            run_id=str(body["run_id"]),
            s3_prefix=str(body["s3_prefix"]),
            promoted_at=int(body["promoted_at"]),
            metrics={str(k): float(v) for k, v in dict(body["metrics"]).items()},
            gate_reason=str(body.get("gate_reason", "")),
        )
