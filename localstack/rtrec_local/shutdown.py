"""How `rtrec run` and `rtrec cloud up` stop: the first Ctrl-C drains, the second stops at once.

Nothing accepted is lost either way: the stream keeps every record on disk and the event source mapping
resumes from its checkpoints, whose records the consumer applies exactly once. Draining only spares the next
start the backlog, and makes what a user just posted visible before the stop."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class Drainable(Protocol):
    def stats(self) -> dict[str, Any]: ...

    def run_until_idle(self, timeout_s: float = 30.0) -> bool: ...


class Interrupts:
    """SIGINT/SIGTERM counted: the first sets `stopping`, the second (or later) sets `forced`."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.stopping = threading.Event()
        self.forced = threading.Event()
        self._say = say

    def install(self) -> Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, *_: object) -> None:
        if self.stopping.is_set():
            if not self.forced.is_set():
                self._say("stopping now; what the stream holds is kept on disk and consumed at the next start")
            self.forced.set()
        self.stopping.set()

    def wait(self, until_dead: threading.Thread | None = None) -> None:
        """Block until the first signal (or until `until_dead` stops)."""
        while not self.stopping.wait(0.2):
            if until_dead is not None and not until_dead.is_alive():
                return


def drain(
    mapping: Drainable,
    interrupts: Interrupts,
    say: Callable[[str], None],
    *,
    timeout_s: float = 30.0,
    line_every_s: float = 2.0,
) -> bool:
    """Let the consumer catch up with the stream, at most `timeout_s` or until a second Ctrl-C; True when it did.

    Says how far behind it starts, then a line every `line_every_s` with the lag left, then how long it took."""
    started = time.monotonic()
    behind = _behind_s(mapping)
    say(f"draining the stream ({behind:.1f} s behind; at most {timeout_s:.0f} s, Ctrl-C again to stop now)")
    caught_up = False
    last_line = started
    while not interrupts.forced.is_set():
        left = timeout_s - (time.monotonic() - started)
        if left <= 0:
            break
        if mapping.run_until_idle(timeout_s=min(0.5, left)):
            caught_up = True
            break
        if time.monotonic() - last_line >= line_every_s:
            last_line = time.monotonic()
            say(f"  draining: {_behind_s(mapping):.1f} s behind, {time.monotonic() - started:.0f} s so far")
    took = time.monotonic() - started
    if caught_up:
        say(f"drained in {took:.1f} s")
    else:
        say(f"stopped draining after {took:.1f} s, {_behind_s(mapping):.1f} s behind: the rest is consumed at the next start")
    return caught_up


def _behind_s(mapping: Drainable) -> float:
    try:
        return float(mapping.stats().get("lag_seconds") or 0)  # behind-latest or iterator age, the larger
    except Exception:
        return 0.0
