"""The `api` Lambda: FastAPI behind API Gateway's REST proxy integration, via Mangum.

Observability (Powertools): JSON logs with the Lambda request id, the app's request id and the serving model
version; each request's metrics as CloudWatch EMF (namespace from the settings) plus Powertools' ColdStart metric;
an X-Ray segment per invocation (off outside Lambda, or with POWERTOOLS_TRACE_DISABLED=true).

Impressions: the producer runs without a background thread here (Lambda freezes the process between invocations);
`lambda_entry` sends each invocation's impressions with one PutRecords before the handler returns, and the EMF
flush after it reports the producer's drops and depth.
"""

from __future__ import annotations

from mangum import Mangum

from rtrec.adapters.aws.powertools import lambda_observability
from rtrec.monitoring.catalog import API_SERVICE
from rtrec.settings import ApiSettings

from .app import build_services, create_app, freeze_startup_heap, lambda_entry

# Module scope: settings are validated, clients built and the production model loaded once, at the
# Lambda cold start; later requests only check the production pointer every RTREC_MODEL_POLL_SECONDS.
settings = ApiSettings()
observability = lambda_observability(API_SERVICE, settings.names.metrics_namespace)
services = build_services(settings, telemetry=observability.telemetry, background_impressions=False)
app = create_app(services, telemetry=observability.telemetry)
handler = observability.wrap(lambda_entry(Mangum(app, lifespan="off"), services))
freeze_startup_heap(collect_first=False)  # Mangum runs without the app's lifespan, which does it under uvicorn
