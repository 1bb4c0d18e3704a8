"""One APIRouter per resource; `create_app` includes them in this order, which is the OpenAPI document's."""
