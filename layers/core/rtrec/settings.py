"""Configuration: one pydantic-settings class per deployable, validated at start-up.

Only entry points (handlers, the CLI) build these; they pass plain values to the core, which never
reads the environment. An explicit argument beats an environment variable.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rtrec.domain.ranking import SERVING_RANKING, Policy, RankingConfig
from rtrec.resources import ResourceNames

DEFAULT_LOCAL_ENDPOINT_PORT = 4566


class AwsSettings(BaseSettings):
    """Where the AWS APIs are: `AWS_ENDPOINT_URL` unset means real AWS; set, it names the
    embedded cloud (moto server) or LocalStack, which the adapters treat the same."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    endpoint_url: str | None = Field(default=None, validation_alias=AliasChoices("endpoint_url", "AWS_ENDPOINT_URL"))
    region: str = Field(default="us-east-1", validation_alias=AliasChoices("region", "AWS_REGION", "AWS_DEFAULT_REGION"))
    resource_prefix: str = Field(
        default="rtrec",
        pattern=r"^[a-z][a-z0-9-]{1,20}$",
        validation_alias=AliasChoices("resource_prefix", "RTREC_PREFIX"),
    )
    bucket_suffix: str = Field(
        default="",
        pattern=r"^[a-z0-9-]{0,30}$",
        validation_alias=AliasChoices("bucket_suffix", "RTREC_BUCKET_SUFFIX"),
    )

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"AWS_ENDPOINT_URL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @property
    def target(self) -> Literal["aws", "local"]:
        """`local` covers both the embedded cloud and LocalStack: same API, dummy credentials."""
        return "aws" if self.endpoint_url is None else "local"

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(prefix=self.resource_prefix, bucket_suffix=self.bucket_suffix)


def _env(name: str) -> AliasChoices:
    """The field's own name, or RTREC_<NAME> in the environment."""
    return AliasChoices(name, f"RTREC_{name.upper()}")


DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # API Gateway's own limit is 10 MB


class ApiSettings(AwsSettings):
    """The `api` Lambda (and the same app under uvicorn locally)."""

    popularity_refresh_seconds: float = Field(default=60.0, gt=0, validation_alias=_env("popularity_refresh_seconds"))
    default_k: int = Field(default=10, ge=1, le=100, validation_alias=_env("default_k"))
    model_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("model_poll_seconds"),
        description="how often the production pointer is checked for a newly promoted model",
    )
    catalog_sync_seconds: float = Field(default=30.0, gt=0, validation_alias=_env("catalog_sync_seconds"))
    model_cache_dir: Path = Field(
        default=Path(tempfile.gettempdir()) / "rtrec-models",
        validation_alias=_env("model_cache_dir"),
        description="where model folders are downloaded (Lambda: /tmp)",
    )
    admin_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("admin_api_key"),
        description="the admin role's key (X-Api-Key): the catalog routes; without one (and no API Gateway admin "
        "key) nobody can administer the catalog",
    )
    events_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("events_api_key"),
        description="the events role's key: POST /events, and its slates are logged as impressions",
    )
    read_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("read_api_key"),
        description="the read role's key: recommendations and similar items, not logged as impressions",
    )
    require_api_keys: bool = Field(
        default=True,
        validation_alias=_env("require_api_keys"),
        description="every data route needs a key; false lets keyless requests read and send events (`rtrec run` "
        "on loopback); the admin role always needs a key",
    )
    api_key_roles: dict[str, list[Literal["read", "events", "admin"]]] = Field(
        default_factory=dict,
        validation_alias=_env("api_key_roles"),
        description="API Gateway key id -> roles (JSON); in AWS the gateway checks the key and the API reads its id "
        "from the request context",
    )
    api_key_rate_limit: float | None = Field(
        default=None,
        gt=0,
        validation_alias=_env("api_key_rate_limit"),
        description="requests/s per key in this process (a token bucket; None: no limit here). In AWS the usage "
        "plans throttle per key across instances",
    )
    api_key_burst: int = Field(default=100, ge=1, validation_alias=_env("api_key_burst"))
    api_key_daily_quota: int | None = Field(default=None, ge=1, validation_alias=_env("api_key_daily_quota"))
    candidates: int = Field(default=200, ge=10, le=3200, validation_alias=_env("candidates"))
    # The ranking layer (`ranking()`); defaults from SERVING_RANKING, the one place that states them.
    exploration_policy: Policy = Field(default=SERVING_RANKING.policy, validation_alias=_env("exploration_policy"))
    temperature: float = Field(default=SERVING_RANKING.temperature, gt=0, le=10, validation_alias=_env("temperature"))
    epsilon: float = Field(default=SERVING_RANKING.epsilon, ge=0, le=1, validation_alias=_env("epsilon"))
    popularity_weight: float = Field(
        default=SERVING_RANKING.popularity_weight, ge=0, validation_alias=_env("popularity_weight")
    )
    freshness_weight: float = Field(default=SERVING_RANKING.freshness_weight, ge=0, validation_alias=_env("freshness_weight"))
    new_item_boost: float = Field(default=SERVING_RANKING.new_item_boost, ge=0, validation_alias=_env("new_item_boost"))
    promoted_share: float = Field(default=SERVING_RANKING.promoted_share, ge=0, le=1, validation_alias=_env("promoted_share"))
    max_genre_share: float = Field(
        default=SERVING_RANKING.max_genre_share, gt=0, le=1, validation_alias=_env("max_genre_share")
    )
    online_ranker_weight: float = Field(
        default=SERVING_RANKING.online_weight,
        ge=0,
        validation_alias=_env("online_ranker_weight"),
        description="weight of the online ranker's logit in the ranking score; 0 turns it off",
    )
    online_ranker_min_examples: int = Field(
        default=SERVING_RANKING.online_min_examples, ge=0, validation_alias=_env("online_ranker_min_examples")
    )
    online_ranker_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        validation_alias=_env("online_ranker_poll_seconds"),
        description="how often serving reloads the shards' online-ranker states (in the background)",
    )
    shadow_share: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        validation_alias=_env("shadow_share"),
        description="share of requests the shadow candidate is scored on (it doubles their model compute)",
    )
    shadow_scoring: bool = Field(
        default=True,
        validation_alias=_env("shadow_scoring"),
        description="score the shadow candidate (if one is published) beside production on every request and log "
        "its policy's probabilities for the promotion gate's off-policy check",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        le=10 * 1024 * 1024,
        validation_alias=_env("max_body_bytes"),
        description="request bodies above this many bytes get 413 before they are parsed",
    )
    impression_log_lines: bool = Field(
        default=True,
        validation_alias=_env("impression_log_lines"),
        description="log each slate as an `impression` line (CloudWatch Logs in AWS); the counterfactual log "
        "keeps every impression either way, so `rtrec run` leaves these lines out of the terminal",
    )
    impression_linger_ms: float = Field(
        default=100.0,
        ge=0,
        le=10_000,
        validation_alias=_env("impression_linger_ms"),
        description="the longest an impression waits in the producer's buffer before a PutRecords (uvicorn); "
        "100 ms as the Kinesis Producer Library's RecordMaxBufferedTime",
    )
    impression_buffer_records: int = Field(
        default=10_000,
        ge=1,
        validation_alias=_env("impression_buffer_records"),
        description="impressions the producer buffers at most; beyond, it drops and counts (ImpressionsDropped)",
    )
    impression_buffer_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024 * 1024,
        validation_alias=_env("impression_buffer_bytes"),
        description="bytes of encoded impressions the producer buffers at most",
    )
    impression_overflow: Literal["drop_oldest", "drop_newest"] = Field(
        default="drop_oldest",
        validation_alias=_env("impression_overflow"),
        description="which impression a full buffer drops (the oldest: recent slates are the ones still rewarded)",
    )
    impression_flush_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        validation_alias=_env("impression_flush_seconds"),
        description="how long the end of a Lambda invocation waits at most for its impressions to be sent",
    )
    impression_shutdown_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        validation_alias=_env("impression_shutdown_seconds"),
        description="how long the app's shutdown waits at most for buffered impressions to be sent",
    )

    def ranking(self) -> RankingConfig:
        """The ranking layer's configuration: SERVING_RANKING with what these settings set (its other terms, the
        half-lives and the impression scale, are not settings)."""
        return replace(
            SERVING_RANKING,
            policy=self.exploration_policy,
            temperature=self.temperature,
            epsilon=self.epsilon,
            popularity_weight=self.popularity_weight,
            freshness_weight=self.freshness_weight,
            new_item_boost=self.new_item_boost,
            promoted_share=self.promoted_share,
            max_genre_share=self.max_genre_share,
            online_weight=self.online_ranker_weight,
            online_min_examples=self.online_ranker_min_examples,
        )


class ConsumerSettings(AwsSettings):
    """The `stream_consumer` Lambda (and the local event source mapping that drives it)."""

    popularity_half_life_days: float = Field(default=90.0, gt=0, validation_alias=_env("popularity_half_life_days"))
    reward_window_seconds: float = Field(
        default=1800.0,
        gt=0,
        validation_alias=_env("reward_window_seconds"),
        description="a positive event that names no slate rewards the user's last slate within this many seconds",
    )
    trend_half_life_days: float = Field(default=7.0, gt=0, validation_alias=_env("trend_half_life_days"))
    ranker_alpha: float = Field(default=0.1, gt=0, validation_alias=_env("ranker_alpha"))
    ranker_l1: float = Field(default=0.01, ge=0, validation_alias=_env("ranker_l1"))
    ranker_l2: float = Field(default=1.0, ge=0, validation_alias=_env("ranker_l2"))
    dedup_retention_seconds: float = Field(
        default=86_400.0,
        gt=0,
        validation_alias=_env("dedup_retention_seconds"),
        description="a client event re-sent within this much arrival time of the original is a no-op; at least "
        "the stream's retention (24 h by default)",
    )
    dedup_max_events_per_user: int = Field(
        default=4096,
        ge=1,
        le=16_384,
        validation_alias=_env("dedup_max_events_per_user"),
        description="client events a profile remembers for duplicate detection at most (16 bytes each); beyond, "
        "the oldest are forgotten before the retention ends",
    )


class DriftSettings(AwsSettings):
    """The `drift_check` Lambda (EventBridge schedule in AWS; the local scheduler in the embedded cloud)."""

    drift_window_events: int = Field(default=2000, ge=1, validation_alias=_env("drift_window_events"))
    retrain_cooldown_seconds: float = Field(
        default=6 * 3600.0,
        gt=0,
        validation_alias=_env("retrain_cooldown_seconds"),
        description="after a trigger, no other retraining starts for this long",
    )
    retrain_hyperparameters: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=_env("retrain_hyperparameters"),
        description="hyperparameters of the retraining job (JSON object of strings)",
    )
    sagemaker_role_arn: str | None = Field(default=None, validation_alias=_env("sagemaker_role_arn"))
    sagemaker_image_uri: str | None = Field(default=None, validation_alias=_env("sagemaker_image_uri"))
    sagemaker_instance_type: str = Field(default="ml.m5.xlarge", validation_alias=_env("sagemaker_instance_type"))
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias=_env("mlflow_tracking_uri"))


class LocalSettings(BaseSettings):
    """The embedded local stack that `rtrec cloud up` / `rtrec run` starts on one machine."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    cloud_host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("cloud_host", "RTREC_CLOUD_HOST"))
    cloud_port: int = Field(
        default=DEFAULT_LOCAL_ENDPOINT_PORT, ge=0, le=65535, validation_alias=AliasChoices("cloud_port", "RTREC_CLOUD_PORT")
    )
    api_host: str = Field(default="127.0.0.1", validation_alias=AliasChoices("api_host", "RTREC_API_HOST"))
    api_port: int = Field(default=8000, ge=0, le=65535, validation_alias=AliasChoices("api_port", "RTREC_API_PORT"))
    state_dir: Path = Field(default=Path(".rtrec"), validation_alias=AliasChoices("state_dir", "RTREC_STATE_DIR"))
    data_cache_dir: Path = Field(
        default=Path.home() / ".cache" / "rtrec",
        validation_alias=AliasChoices("data_cache_dir", "RTREC_DATA_CACHE"),
    )
    dataset: Literal["ml-1m", "ml-100k"] = Field(default="ml-1m", validation_alias=AliasChoices("dataset", "RTREC_DATASET"))
    cloud_backend: Literal["durable", "moto"] = Field(
        default="durable", validation_alias=AliasChoices("cloud_backend", "RTREC_CLOUD_BACKEND")
    )
    emulators_dir: Path | None = Field(default=None, validation_alias=AliasChoices("emulators_dir", "RTREC_EMULATORS_DIR"))
    node: str | None = Field(default=None, validation_alias=AliasChoices("node", "RTREC_NODE"))

    @property
    def endpoint_url(self) -> str:
        # `localhost`, not 127.0.0.1: `cdk deploy` against moto parses template URLs wrongly otherwise.
        return f"http://localhost:{self.cloud_port}"
