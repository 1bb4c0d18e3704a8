"""Starting a retraining job when drift is found: at most one per cool-down, never one beside a running one.

Two drift checks may run at once (a slow one overlapping the next schedule, or two regions of a schedule): the
running-job check keeps a second job from starting beside one still training, and the cool-down lock (one
conditional write) keeps two triggers inside the cool-down from both starting one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rtrec.ports import Lock, TrainingJobs

RETRAIN_LOCK = "retrain"
JOB_PREFIX = "rtrec-retrain"


@dataclass(frozen=True)
class TriggerOutcome:
    started: bool
    job_name: str | None
    reason: str


class RetrainTrigger:
    def __init__(
        self,
        lock: Lock,
        jobs: TrainingJobs,
        *,
        cooldown_seconds: float = 6 * 3600,
        hyperparameters: Mapping[str, str] | None = None,
        job_prefix: str = JOB_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if cooldown_seconds <= 0:
            raise ValueError("cooldown_seconds must be positive")
        self._lock = lock
        self._jobs = jobs
        self.cooldown_seconds = cooldown_seconds
        self.hyperparameters = dict(hyperparameters or {})
        self.job_prefix = job_prefix
        self._clock = clock

    def job_name(self, now: float) -> str:
        return f"{self.job_prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"

    def maybe_start(self, report_key: str, reasons: list[str]) -> TriggerOutcome:
        """Start a retraining job tagged `trigger=drift` with the report's location, unless one is running or the
        cool-down holds."""
        running = self._jobs.in_progress(self.job_prefix)
        if running:
            return TriggerOutcome(False, None, f"retraining job {running[0]} is still running")
        now = self._clock()
        name = self.job_name(now)
        if not self._lock.acquire(RETRAIN_LOCK, owner=name, now=now, ttl_seconds=self.cooldown_seconds, note=report_key):
            return TriggerOutcome(
                False, None, f"in the retraining cool-down ({self.cooldown_seconds:.0f} s after the last trigger)"
            )
        tags = {"trigger": "drift", "drift_report": report_key, "drift_reasons": "; ".join(reasons)[:5000]}
        self._jobs.start(name, self.hyperparameters, tags)
        return TriggerOutcome(True, name, f"started {name}: {'; '.join(reasons)}")
