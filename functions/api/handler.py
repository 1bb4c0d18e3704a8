"""The `api` Lambda: FastAPI behind API Gateway's REST proxy integration, via Mangum."""

from __future__ import annotations

from mangum import Mangum

from rtrec.settings import ApiSettings

from .app import build_recommender, create_app

# Module scope: settings are validated and clients built once, at the Lambda cold start.
settings = ApiSettings()
app = create_app(build_recommender(settings))
handler = Mangum(app, lifespan="off")
