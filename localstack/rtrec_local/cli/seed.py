"""`rtrec seed`: the data set's users and items into the feature store, the popular items into S3."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from rtrec.data.movielens import load_movielens, movielens_digest
from rtrec.services.seed import completed_seed, seed_catalog, seed_source
from rtrec.settings import AwsSettings, LocalSettings
from rtrec_local.cli.utils import (
    DatasetOption,
    EndpointOption,
    aws_adapters,
    aws_settings,
    exit_on_error,
    local_settings,
    say,
)


def seed_cloud(settings: AwsSettings, local: LocalSettings, *, overwrite: bool = False) -> None:
    """Seed `local.dataset` at the settings' endpoint (what `rtrec seed`, `rtrec run` and `rtrec cloud up --seed`
    do); a seed completed before is kept, without parsing the data set."""

    def seeded_before(seconds: float) -> None:
        say(
            f"{local.dataset} was seeded before: users and items kept as the stream and POST /items left them "
            f"({seconds:.1f}s; `rtrec cloud reset` starts from nothing)"
        )

    aws = aws_adapters(settings)
    popularity = aws.popularity_store()
    started = time.perf_counter()
    source = seed_source(local.dataset, movielens_digest(local.dataset, local.data_cache_dir))
    if not overwrite and completed_seed(popularity, source) is not None:  # without parsing the data set
        seeded_before(time.perf_counter() - started)
        return
    say(f"loading {local.dataset} (cache: {local.data_cache_dir})")
    dataset = load_movielens(local.dataset, local.data_cache_dir)
    say(dataset.summary())
    report = seed_catalog(dataset, aws.feature_store(), popularity, overwrite=overwrite, progress=say)
    if report.already_seeded:  # another process completed the same seed meanwhile
        seeded_before(report.seconds)
        return
    metrics = aws.metrics()
    metrics.put("CatalogItems", report.items_written, dimensions={"Dataset": dataset.name})
    metrics.put("SeededUsers", report.users_written, dimensions={"Dataset": dataset.name})
    kept = (
        f" ({report.users_kept:,} users and {report.items_kept:,} items already there, kept)"
        if (report.users_kept or report.items_kept)
        else ""
    )
    say(
        f"seeded {report.users_written:,} users and {report.items_written:,} items into DynamoDB{kept}, "
        f"{report.popular_items} popular items into S3, in {report.seconds:.1f}s"
    )


def seed(
    endpoint_url: EndpointOption = None,
    dataset: DatasetOption = "ml-1m",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="replace users and items already in the store (by default seeding only adds what is missing)"
        ),
    ] = False,
) -> None:
    """Write the data set's users and items the feature store lacks to DynamoDB and publish the popular-items
    snapshot; what the stream or POST /items wrote is kept unless --overwrite."""
    with exit_on_error():
        seed_cloud(aws_settings(endpoint_url), local_settings(dataset=dataset), overwrite=overwrite)
