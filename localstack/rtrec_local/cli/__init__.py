"""The `rtrec` command line: what the Makefile and people call. One module per command group (`data`, `cloud`,
`dlq`, `demo`) or family (`seed`, `run`: serve and run, `models`: train, promote, shadow, ope, `replay`, `report`);
`utils` holds what they share, `stack` the running pieces the long-lived commands put together, `keys` the local
API keys."""

from __future__ import annotations

import typer

from rtrec_local.cli import cloud, data, demo, dlq
from rtrec_local.cli.models import ope_command, promote_command, shadow_command, train_command
from rtrec_local.cli.replay import replay_command
from rtrec_local.cli.report import report_command
from rtrec_local.cli.run import run, serve
from rtrec_local.cli.seed import seed

app = typer.Typer(help="rtrec: a serverless real-time recommender.", no_args_is_help=True, add_completion=False)
# In this order in `rtrec --help` (commands first, then the groups).
app.command("seed")(seed)
app.command("serve")(serve)
app.command("run")(run)
app.command("train")(train_command)
app.command("promote")(promote_command)
app.command("shadow")(shadow_command)
app.command("ope")(ope_command)
app.command("replay")(replay_command)
app.command("report")(report_command)
app.add_typer(cloud.app, name="cloud")
app.add_typer(data.app, name="data")
app.add_typer(demo.app, name="demo")
app.add_typer(dlq.app, name="dlq")
