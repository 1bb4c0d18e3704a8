"""POST /events: a batch of user events onto the stream."""

from __future__ import annotations

from fastapi import APIRouter

from rtrec.domain.events import UserEvent
from rtrec.errors import ModelNotReadyError

from ..deps import EventsCallerDep, ServicesDep
from ..schemas import BODY_ERRORS, EventsAccepted, EventsIn

router = APIRouter()


@router.post("/events", response_model=EventsAccepted, status_code=202, responses=BODY_ERRORS)
def post_events(body: EventsIn, services: ServicesDep, _caller: EventsCallerDep) -> EventsAccepted:
    """Validate a batch of events and put it on the stream (partition key: user id); 202 once the
    stream holds every event. The consumer applies each event_id once."""
    if services.ingest is None:
        raise ModelNotReadyError("this deployment has no event stream configured")
    events = [UserEvent(**event.model_dump()) for event in body.events]
    return EventsAccepted(accepted=services.ingest.ingest(events))
