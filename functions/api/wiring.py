"""What the routes call (`Services`), and its wiring from the settings (`build_services`): the AWS adapters,
the model watchers, the recommender, the catalog, ingestion and the access policy, built once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rtrec.domain.access import AccessPolicy, Limits, RateLimiter, Role, gateway_keys, local_keys
from rtrec.domain.models import Recommendation
from rtrec.errors import DependencyError, RtrecError
from rtrec.monitoring.telemetry import NO_TELEMETRY, Telemetry
from rtrec.services.catalog import CatalogService, ServingModel
from rtrec.services.recommend import Recommender, RetrievalConfig
from rtrec.services.stream import IngestService
from rtrec.settings import DEFAULT_MAX_BODY_BYTES, ApiSettings

from .observability import logger
from .observability import request_id as current_request_id

ConsumerStatus = Callable[[], dict[str, Any]]  # the local event source mapping's `stats`


@dataclass(frozen=True)
class Services:
    """What the routes call, built once (`build_services` in Lambda and `rtrec run`; tests build their own)."""

    recommender: Recommender
    catalog: CatalogService | None = None  # None only in a test's app: the admin routes then raise UnwiredError
    # Who may call what (rtrec.domain.access). The default knows no key: keyless reads and events, no admin.
    access: AccessPolicy = field(default_factory=lambda: AccessPolicy((), require_keys=False))
    model_error: Callable[[], str | None] = lambda: None  # the last failed model load, for /health
    shadow_version: Callable[[], str | None] = lambda: None  # the shadow candidate's version, for /health
    # POST /events and impression logging; None only in a test's app: POST /events raises UnwiredError, and no
    # impression is logged.
    ingest: IngestService | None = None
    model_version: Callable[[], str | None] = lambda: None  # the production version loaded (no poll), for the logs
    impression_flush_s: float = 2.0  # the end of a Lambda invocation waits this long at most for its impressions
    impression_shutdown_s: float = 5.0  # the app's shutdown waits this long at most
    impression_log_lines: bool = True  # an `impression` log line per slate (ApiSettings.impression_log_lines)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger request bodies get 413 (ApiSettings.max_body_bytes)

    def flush_impressions(self, timeout_s: float | None = None) -> int:
        """Send the buffered impressions now (the end of a Lambda invocation); how many are still buffered."""
        if self.ingest is None:
            return 0
        left = self.ingest.flush_impressions(self.impression_flush_s if timeout_s is None else timeout_s)
        if left:
            logger.warning("impressions still buffered after the flush", extra={"impressions": left})
        return left

    def close(self) -> int:
        """Flush and stop the impression producer (the app's shutdown); how many impressions were dropped."""
        if self.ingest is None:
            return 0
        dropped = self.ingest.close(self.impression_shutdown_s)
        if dropped:
            logger.error(
                "impressions dropped at shutdown: the stream did not take them in time", extra={"impressions": dropped}
            )
        return dropped

    def log_impression(self, result: Recommendation, caller: str | None = None) -> None:
        """Runs after the response is sent; a failure is logged, never turned into an error for the client."""
        if self.ingest is None:
            return
        try:
            self.ingest.log_impression(result, caller)
        except RtrecError as exc:
            logger.warning("impression not logged to the stream", extra={"request_id": result.request_id, "error": str(exc)})


class ModelLoadErrors:
    """The last failed model load (None once a load succeeds): the model watcher's callbacks write it, /health
    reads it through `Services.model_error`."""

    def __init__(self) -> None:
        self.last: str | None = None


def access_policy(settings: ApiSettings) -> AccessPolicy:
    """The keys named by `settings` (one per role by value, API Gateway's by id) and the per-key limits."""
    secrets_by_role = {
        role.value: key.get_secret_value() for role in Role if (key := getattr(settings, f"{role.value}_api_key")) is not None
    }
    keys = local_keys(secrets_by_role) + gateway_keys(settings.api_key_roles)
    limiter = RateLimiter(
        Limits(rate_per_s=settings.api_key_rate_limit, burst=settings.api_key_burst, daily_quota=settings.api_key_daily_quota)
    )
    return AccessPolicy(keys, require_keys=settings.require_api_keys, limiter=limiter)


def build_services(
    settings: ApiSettings, *, telemetry: Telemetry = NO_TELEMETRY, background_impressions: bool = True
) -> Services:
    """Wire the AWS adapters named by `settings` into the services, and load the production model.

    Impressions go through a KinesisImpressionProducer: a background sender under uvicorn; none in Lambda
    (`background_impressions=False`: the runtime freezes threads between invocations), where the handler flushes
    at the end of every invocation (`lambda_entry`). `telemetry` counts the impressions it drops."""
    # Imported here: the app and its tests load no SDK until something is wired to AWS.
    from rtrec.adapters.aws.factory import AwsAdapters
    from rtrec.adapters.model.onnx_towers import load_serving_model
    from rtrec.domain.promotion import SHADOW_POINTER
    from rtrec.services.model_watcher import ModelWatcher
    from rtrec.services.online import OnlineRankerSource

    aws = AwsAdapters.from_settings(settings)
    features = aws.feature_store()
    catalog = CatalogService(features, aws.catalog_additions(), sync_seconds=settings.catalog_sync_seconds)
    stream = aws.event_stream()
    producer = aws.impression_producer(
        stream,
        max_records=settings.impression_buffer_records,
        max_bytes=settings.impression_buffer_bytes,
        linger_s=settings.impression_linger_ms / 1000.0,
        overflow=settings.impression_overflow,
        background=background_impressions,
        telemetry=telemetry,
    )
    ingest = IngestService(stream, clock=time.time, impressions=producer)
    load_errors = ModelLoadErrors()

    def load(version: str, folder: Path) -> ServingModel:
        try:
            model = catalog.prepare(load_serving_model(version, folder, features))
        except RtrecError:
            raise
        except Exception as exc:  # a corrupt or incompatible model folder must not take serving down
            raise DependencyError(f"model {version} could not be loaded: {type(exc).__name__}: {exc}") from exc
        logger.info("model loaded", extra={"model_version": version, "items": len(model.catalog)})
        load_errors.last = None
        return model

    def on_error(message: str) -> None:
        load_errors.last = message
        logger.warning(message)

    watcher: ModelWatcher[ServingModel] = ModelWatcher(
        aws.model_store(),
        load,
        settings.model_cache_dir,
        poll_seconds=settings.model_poll_seconds,
        on_error=on_error,
    )

    def current_model() -> ServingModel | None:
        model = watcher.current()
        if model is not None:
            try:
                catalog.maybe_sync(model)
            except RtrecError as exc:  # serve the model as it is; the next sync retries
                logger.warning("catalog sync failed", extra={"error": str(exc)})
        return model

    shadow_watcher: ModelWatcher[ServingModel] = ModelWatcher(
        aws.model_store(),
        load,
        settings.model_cache_dir / "shadow",
        poll_seconds=settings.model_poll_seconds,
        on_error=lambda message: logger.warning(f"shadow candidate: {message}"),
        role=SHADOW_POINTER,
    )

    def shadow_model() -> ServingModel | None:
        if not settings.shadow_scoring:
            return None
        model = shadow_watcher.current()
        if model is not None:
            try:
                catalog.maybe_sync(model)
            except RtrecError as exc:
                logger.warning("catalog sync of the shadow candidate failed", extra={"error": str(exc)})
        return model

    recommender = Recommender(
        features,
        aws.popularity_store(),
        current_model,
        ranking=settings.ranking(),
        retrieval=RetrievalConfig(candidates=settings.candidates),
        refresh_seconds=settings.popularity_refresh_seconds,
        ranker=OnlineRankerSource(aws.ranker_state_store(), poll_seconds=settings.online_ranker_poll_seconds),
        shadow=shadow_model,
        shadow_share=settings.shadow_share,
        request_ids=current_request_id,  # the slate's id is the request's (logs join the log)
    )
    current_model()  # load at start (the Lambda cold start), not on the first request
    return Services(
        recommender=recommender,
        catalog=catalog,
        access=access_policy(settings),
        ingest=ingest,
        model_error=lambda: load_errors.last,
        model_version=lambda: watcher.version,
        shadow_version=lambda: shadow_watcher.version if settings.shadow_scoring else None,
        impression_flush_s=settings.impression_flush_seconds,
        impression_shutdown_s=settings.impression_shutdown_seconds,
        impression_log_lines=settings.impression_log_lines,
        max_body_bytes=settings.max_body_bytes,
    )
