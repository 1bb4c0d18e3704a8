"""LocalScheduler: what EventBridge schedules do in AWS, for the embedded cloud: run each task every N seconds
on a daemon thread, with the scheduled event a Lambda would get. A failing task is logged and retried at its
next tick; it never stops the others."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)


def scheduled_event(rule: str, region: str = "us-east-1", account: str = "000000000000") -> dict[str, Any]:
    """The event an EventBridge schedule rule delivers to its Lambda target."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": [f"arn:aws:events:{region}:{account}:rule/{rule}"],
        "detail": {},
    }


@dataclass
class ScheduledTask:
    name: str
    every_seconds: float
    run: Callable[[], Any]
    first_after_seconds: float | None = None  # default: one interval after start


class LocalScheduler:
    def __init__(self, tasks: list[ScheduledTask], on_error: Callable[[str], None] | None = None) -> None:
        for task in tasks:
            if task.every_seconds <= 0:
                raise ValueError(f"task {task.name}: every_seconds must be positive")
        self.tasks = tasks
        self._on_error = on_error or (lambda message: logger.warning(message))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs: dict[str, int] = {t.name: 0 for t in tasks}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="local-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        started = time.monotonic()
        due = {
            t.name: started + (t.first_after_seconds if t.first_after_seconds is not None else t.every_seconds)
            for t in self.tasks
        }
        while not self._stop.is_set():
            now = time.monotonic()
            for task in self.tasks:
                if now >= due[task.name]:
                    due[task.name] = now + task.every_seconds
                    try:
                        task.run()
                    except Exception as exc:
                        self._on_error(f"scheduled task {task.name} failed: {type(exc).__name__}: {exc}")
                    self.runs[task.name] += 1
            wait = min(due.values()) - time.monotonic()
            self._stop.wait(max(0.05, min(wait, 1.0)))
