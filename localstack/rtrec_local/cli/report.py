"""`rtrec report`: a static HTML report (index.html and its PNGs) of the running system."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rtrec_local.cli.keys import client_api_key
from rtrec_local.cli.utils import (
    ApiKeyOption,
    EndpointOption,
    aws_adapters,
    aws_settings,
    exit_on_error,
    model_store_and_log,
    say,
)


def report_command(
    endpoint_url: EndpointOption = "http://localhost:4566",
    api_url: Annotated[
        str, typer.Option(help="the running API; its /metrics gives the latency histogram ('' to skip)")
    ] = "http://127.0.0.1:8000",
    out: Annotated[Path, typer.Option(help="folder for index.html and its PNGs")] = Path(".rtrec/report"),
    probe: Annotated[
        int,
        typer.Option(
            min=0,
            help="also time N GET /recommend calls from here (client-side latency; "
            "each is a real request and logs an impression)",
        ),
    ] = 0,
    drift_reports: Annotated[int, typer.Option(min=0, help="at most the newest N drift reports")] = 1000,
    api_key: ApiKeyOption = None,
) -> None:
    """A static HTML report a person opens in a browser (index.html + PNGs): the latency histogram, CTR and online
    hit rate over time, model versions and strategy mix along time, drift scores. Reads the counterfactual log and
    the drift reports (S3) and the running API's /metrics."""
    from rtrec.monitoring.report import collect, render

    settings = aws_settings(endpoint_url)
    with exit_on_error():
        _, log = model_store_and_log(settings)
        reports = aws_adapters(settings).drift_reports()
        say(
            f"reading the counterfactual log and the drift reports at {settings.endpoint_url or 'AWS'}"
            + (f", {api_url}/metrics" if api_url else "")
        )
        inputs = collect(
            log,
            lambda: reports.read_all(limit=drift_reports),
            api_url=api_url or None,
            probe=probe,
            api_key=client_api_key(api_key),
        )
        page = render(inputs, out)
    for note in inputs.notes:
        say(f"note: {note}")
    say(f"report written: file://{page.resolve()}")
