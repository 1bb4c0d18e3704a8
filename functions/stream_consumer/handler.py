"""The `stream_consumer` Lambda entry point (Kinesis event source mapping, ReportBatchItemFailures)."""

from __future__ import annotations

from rtrec.settings import ConsumerSettings

from .app import build_handler

# Module scope: settings validated and clients built once per container (the Lambda cold start).
handler = build_handler(ConsumerSettings())
