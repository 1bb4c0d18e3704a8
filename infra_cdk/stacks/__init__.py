"""The stacks of one rtrec deployment, built in dependency order by `build_stacks`."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import App, Environment, IStackSynthesizer, Stack, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from infra_cdk.config import InfraConfig
from infra_cdk.layers import build_core_layer
from infra_cdk.stacks.data import DataStack
from infra_cdk.stacks.drift import DriftStack
from infra_cdk.stacks.monitoring import MonitoringStack
from infra_cdk.stacks.search import SearchStack
from infra_cdk.stacks.serving import ServingStack
from infra_cdk.stacks.streaming import StreamingStack
from infra_cdk.stacks.training import TrainingStack


@dataclass
class RtrecStacks:
    data: DataStack
    search: SearchStack | None
    streaming: StreamingStack
    serving: ServingStack
    training: TrainingStack
    drift: DriftStack
    monitoring: MonitoringStack

    def all(self) -> list[Stack]:
        return [
            s
            for s in (self.data, self.search, self.streaming, self.serving, self.training, self.drift, self.monitoring)
            if s is not None
        ]


def check_layer_dirs(config: InfraConfig) -> None:
    """Fail synth early, with the command to run, when a layer folder is missing."""
    for what, folder, how in (
        ("core", config.core_layer_dir, "python infra_cdk/layers.py core"),
        ("runtime", config.runtime_layer_dir, "make layers"),
    ):
        if not (folder / "python").is_dir():
            raise SystemExit(
                f"the {what} Lambda layer is not built at {folder} (no python/ folder): run `{how}`, "
                f"or point -c {what}_layer_dir=... at a built one"
            )


def build_stacks(
    app: App,
    config: InfraConfig,
    *,
    env: Environment | None = None,
    synthesizer: IStackSynthesizer | None = None,
    nag: bool = True,
    build_core: bool = True,
) -> RtrecStacks:
    """Every stack of one deployment; cdk-nag's AwsSolutions checks on all of them (`nag`)."""
    if build_core:
        build_core_layer(config.core_layer_dir)
    check_layer_dirs(config)
    common = {"config": config, "env": env, "synthesizer": synthesizer}

    def name(part: str) -> dict[str, str]:
        return {"stack_name": f"{config.prefix}-{part}", "description": f"rtrec ({config.prefix}): {part}"}

    data = DataStack(app, "Data", **common, **name("data"))
    search = SearchStack(app, "Search", **common, **name("search")) if config.search else None
    streaming = StreamingStack(app, "Streaming", **common, **name("streaming"))
    serving = ServingStack(app, "Serving", **common, **name("serving"))
    training = TrainingStack(app, "Training", **common, **name("training"))
    drift = DriftStack(app, "Drift", **common, **name("drift"))
    monitoring = MonitoringStack(app, "Monitoring", **common, **name("monitoring"))
    # Stacks address each other's resources by name (stacks/refs.py), never by export: these edges order them.
    streaming.add_stack_dependency(data)
    serving.add_stack_dependency(streaming)
    training.add_stack_dependency(data)
    drift.add_stack_dependency(training)
    if search is not None:
        serving.add_stack_dependency(search)
        training.add_stack_dependency(search)
    monitoring.add_stack_dependency(serving)
    monitoring.add_stack_dependency(drift)
    stacks = RtrecStacks(data, search, streaming, serving, training, drift, monitoring)
    for stack in stacks.all():
        Tags.of(stack).add("project", "rtrec")
        Tags.of(stack).add("rtrec:prefix", config.prefix)
    if nag:
        add_nag_checks(app)
    return stacks


def add_nag_checks(app: App) -> None:
    """cdk-nag's AwsSolutions pack. cdk-nag 3 is a policy-validation plugin: an unacknowledged finding fails synth
    (the report is `validation-report.json` in the assembly); acknowledgments are written into each resource's
    Metadata (`cdk_nag.rules_to_suppress`), where tests/infra reads them."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True, write_suppressions_to_cloud_formation=True))
