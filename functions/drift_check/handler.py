"""The `drift_check` Lambda entry point (an EventBridge schedule)."""

from __future__ import annotations

from rtrec.settings import DriftSettings

from .app import build_handler

# Module scope: settings validated and clients built once per container (the Lambda cold start).
handler = build_handler(DriftSettings())
