"""What the command groups share: the common options, the settings they start from, printing, and the one place a
domain error becomes a clean exit.

Imports that load boto3, FastAPI/uvicorn, httpx, torch or mlflow stay inside the function that needs them, so that
`rtrec --help` (and a command that needs none of them) starts in a fraction of a second; everything else is imported
at the top of its module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rtrec.errors import RtrecError
from rtrec.settings import AwsSettings, LocalSettings
from rtrec_local.state import LocalState

if TYPE_CHECKING:
    from rtrec.adapters.aws.factory import AwsAdapters
    from rtrec.adapters.aws.model_store import S3ModelStore
    from rtrec.adapters.aws.s3 import S3CounterfactualLog
    from training.registry import RegistryConfig

DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="ml-1m or ml-100k")]
RequireKeysOption = Annotated[
    bool,
    typer.Option(
        "--require-api-keys",
        envvar="RTREC_REQUIRE_API_KEYS",
        help="read and event routes need a key on loopback too (beyond loopback they always do)",
    ),
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="RTREC_API_KEY",
        help="X-Api-Key for the API (default: the events key `rtrec run` keeps in the state folder, when there is one)",
    ),
]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint-url", help="AWS endpoint (default: AWS_ENDPOINT_URL; unset means AWS)")
]
StateDirOption = Annotated[Path | None, typer.Option(help="default .rtrec")]
CacheDirOption = Annotated[Path | None, typer.Option(help="default: RTREC_DATA_CACHE or ~/.cache/rtrec")]


def say(message: str) -> None:
    """One timestamped progress line on stdout."""
    typer.echo(f"[rtrec {time.strftime('%H:%M:%S')}] {message}")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr and return the exit to raise (`raise fail(...)`)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def exit_on_error(*also: type[Exception]) -> Iterator[None]:
    """A domain error (and any of `also`, e.g. ValueError from settings) inside the block ends the command with
    `error: <message>` and exit code 2, without a traceback."""
    caught: tuple[type[Exception], ...] = (RtrecError, *also)
    try:
        yield
    except caught as exc:
        raise fail(str(exc)) from None


def local_settings(**overrides: Any) -> LocalSettings:
    """LocalSettings with the options the person gave (None: not given, the setting's own default holds)."""
    return LocalSettings(**{k: v for k, v in overrides.items() if v is not None})


def aws_settings(endpoint_url: str | None) -> AwsSettings:
    """AwsSettings at `endpoint_url`, else at AWS_ENDPOINT_URL (unset: AWS itself)."""
    return AwsSettings(**({"endpoint_url": endpoint_url} if endpoint_url else {}))


def aws_adapters(settings: AwsSettings) -> AwsAdapters:
    """The AWS adapters of the deployment `settings` name, at its endpoint and region (the one factory the Lambdas'
    wirings use too)."""
    from rtrec.adapters.aws.factory import AwsAdapters

    return AwsAdapters.from_settings(settings)


def local_state(state_dir: Path | None = None) -> LocalState:
    """The state folder (`--state-dir`, else RTREC_STATE_DIR or .rtrec), created with its sub-folders."""
    return LocalState(local_settings(state_dir=state_dir).state_dir.resolve()).ensure()


def key_values(pairs: list[str] | None, what: str) -> dict[str, str]:
    """`key=value` options (repeatable) as a dict; a pair without `=` ends the command."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"{what} {pair!r} must look like key=value")
        out[key.strip()] = value.strip()
    return out


def model_store_and_log(settings: AwsSettings) -> tuple[S3ModelStore, S3CounterfactualLog]:
    """The models bucket and the counterfactual log at the settings' endpoint (waited for up to 3 s, so a cloud that
    is not running says so instead of timing out on the first call)."""
    from rtrec_local.cloud import wait_for_endpoint

    if settings.endpoint_url:
        wait_for_endpoint(settings.endpoint_url, timeout_s=3)
    aws = aws_adapters(settings)
    return aws.model_store(), aws.counterfactual_log()


def registry_config(state_dir: Path | None) -> RegistryConfig:
    """The local MLflow registry (SQLite and artifacts in the state folder)."""
    import os

    from rtrec_local.registry import local_registry_config

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return local_registry_config(local_state(state_dir).root)
