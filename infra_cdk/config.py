"""The CDK app's settings, read from CDK context (`cdk.json`, or `-c key=value` on the command line).

Names come from `rtrec.resources` through `ResourceNames`, validated by the same `AwsSettings` the Lambdas use, so
a prefix the app accepts is one the functions accept too.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from infra_cdk.layers import DEFAULT_BUILD_DIR, INFRA_DIR
from rtrec.domain.access import Role
from rtrec.resources import ResourceNames
from rtrec.settings import AwsSettings

Removal = Literal["retain", "destroy"]
# The API keys' names (`<prefix>-<role>`), each with its own usage plan; serving.py says what each may do.
API_KEY_ROLES = tuple(role.value for role in Role)
# Context keys that were replaced: a deployment still passing one fails synth instead of silently losing its limit.
RENAMED_CONTEXT_KEYS = {
    f"ingest_{limit}": " / ".join(f"{role}_key_{limit}" for role in API_KEY_ROLES)
    for limit in ("rate_limit", "burst_limit", "quota_per_day")
}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class InfraConfig:
    """One deployment. Every field is a context key of the same name (`-c mlflow_tracking_server=true`)."""

    prefix: str = "rtrec"
    # S3 names are global: in AWS pass e.g. `-c bucket_suffix=123456789012-eu-west-1`; "" keeps the local names.
    bucket_suffix: str = ""
    core_layer_dir: Path = DEFAULT_BUILD_DIR / "core"  # built by the app at every synth
    runtime_layer_dir: Path = DEFAULT_BUILD_DIR / "runtime"  # built by `make layers` (pip, Linux wheels)
    lambda_architecture: Literal["x86_64", "arm64"] = "x86_64"
    # `retain` keeps tables and buckets when a stack is deleted (AWS); `destroy` is for throw-away clouds.
    removal: Removal = "retain"
    search: bool = True  # the OpenSearch domain (a large part of the bill: off for a cheap dev account)
    opensearch_data_nodes: int = 2
    opensearch_data_node_type: str = "r7g.large.search"
    opensearch_master_nodes: int = 3  # dedicated masters; 0 = none (dev)
    opensearch_master_node_type: str = "m7g.large.search"
    opensearch_volume_gb: int = 50
    mlflow_tracking_server: bool = False  # a SageMaker-managed MLflow tracking server (billed by the hour)
    mlflow_tracking_server_size: Literal["Small", "Medium", "Large"] = "Small"
    training_image_uri: str = ""  # "" = the training stack's ECR repository, tag `latest`
    drift_schedule_minutes: int = 60
    api_rate_limit: float = 200.0  # stage-wide steady requests per second
    api_burst_limit: int = 400
    # One API key per role, each in its own usage plan: steady requests per second, burst, requests per day
    # (stacks/serving.py API_KEYS). `read` shows recommendations; `events` also sends events (a client app);
    # `admin` also changes the catalog.
    read_key_rate_limit: float = 100.0
    read_key_burst_limit: int = 200
    read_key_quota_per_day: int = 5_000_000
    events_key_rate_limit: float = 150.0
    events_key_burst_limit: int = 300
    events_key_quota_per_day: int = 10_000_000
    admin_key_rate_limit: float = 10.0
    admin_key_burst_limit: int = 20
    admin_key_quota_per_day: int = 100_000
    log_retention_days: int = 30
    alarm_email: str = ""  # "" = alarms go to the SNS topic only

    def __post_init__(self) -> None:
        # The same validation the Lambdas' settings apply to RTREC_PREFIX / RTREC_BUCKET_SUFFIX.
        AwsSettings(resource_prefix=self.prefix, bucket_suffix=self.bucket_suffix)
        if self.lambda_architecture not in ("x86_64", "arm64"):
            raise ValueError(f"lambda_architecture must be x86_64 or arm64, got {self.lambda_architecture!r}")
        if self.removal not in ("retain", "destroy"):
            raise ValueError(f"removal must be retain or destroy, got {self.removal!r}")
        for role in API_KEY_ROLES:
            rate, burst, quota = self.key_limits(role)
            if rate <= 0 or burst < 1 or quota < 1:
                raise ValueError(
                    f"{role}_key_rate_limit, _burst_limit and _quota_per_day must be positive, got {rate}, {burst}, {quota}"
                )

    def key_limits(self, role: str) -> tuple[float, int, int]:
        """The usage plan of the `role` API key: (rate limit, burst limit, quota per day)."""
        return (
            getattr(self, f"{role}_key_rate_limit"),
            getattr(self, f"{role}_key_burst_limit"),
            getattr(self, f"{role}_key_quota_per_day"),
        )

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(prefix=self.prefix, bucket_suffix=self.bucket_suffix)

    @property
    def retain(self) -> bool:
        return self.removal == "retain"

    @classmethod
    def from_context(cls, get: Any) -> InfraConfig:
        """Build from a context getter (`app.node.try_get_context`); relative paths are relative to infra_cdk/."""
        for key, instead in RENAMED_CONTEXT_KEYS.items():
            if get(key) is not None:
                raise ValueError(f"context key {key!r} is gone: use {instead}")
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = get(f.name)
            if raw is None:
                continue
            default = f.default
            if isinstance(default, bool):
                values[f.name] = _bool(raw)
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, Path):
                path = Path(str(raw)).expanduser()
                values[f.name] = path if path.is_absolute() else (INFRA_DIR / path).resolve()
            else:
                values[f.name] = str(raw)
        return cls(**values)


CDK_JSON = INFRA_DIR / "cdk.json"


def cdk_json_context() -> dict[str, Any]:
    """cdk.json's context (the app's defaults and the feature flags), for apps built in-process (tests), where the
    CLI does not pass it."""
    import json

    return dict(json.loads(CDK_JSON.read_text())["context"])


# Physical names of what the CDK app adds beyond rtrec.resources. Deterministic, like the resources' names: a stack
# addresses another stack's resources by name (stacks/refs.py), so no stack imports another's outputs.
API_STAGE = "prod"


def function_name(config: InfraConfig, name: str) -> str:
    return f"{config.prefix}-{name}"


def rest_api_name(config: InfraConfig) -> str:
    return f"{config.prefix}-api"


def search_domain_name(config: InfraConfig) -> str:
    return f"{config.prefix}-search"


def sagemaker_role_name(config: InfraConfig) -> str:
    return f"{config.prefix}-sagemaker-execution"


def training_repository_name(config: InfraConfig) -> str:
    return f"{config.prefix}-training"


def mlflow_server_name(config: InfraConfig) -> str:
    return f"{config.prefix}-mlflow"
