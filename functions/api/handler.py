"""The `api` Lambda: FastAPI behind API Gateway's REST proxy integration, via Mangum."""

from __future__ import annotations

from mangum import Mangum

from rtrec.settings import ApiSettings

from .app import build_services, create_app

# Module scope: settings are validated, clients built and the production model loaded once, at the
# Lambda cold start; later requests only check the production pointer every RTREC_MODEL_POLL_SECONDS.
settings = ApiSettings()
app = create_app(build_services(settings))
handler = Mangum(app, lifespan="off")
