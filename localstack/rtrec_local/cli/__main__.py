"""`python -m rtrec_local.cli`: the `rtrec` command, for subprocesses that must run this interpreter's copy."""

from __future__ import annotations

from rtrec_local.cli import app

app()
