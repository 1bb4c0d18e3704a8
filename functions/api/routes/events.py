"""POST /events: a batch of user events onto the stream."""

from __future__ import annotations

from fastapi import APIRouter

from rtrec.domain.events import UserEvent

from ..deps import EventsCallerDep, IngestDep
from ..schemas import BODY_ERRORS, EventsAccepted, EventsIn

router = APIRouter()


@router.post("/events", response_model=EventsAccepted, status_code=202, responses=BODY_ERRORS)
def post_events(body: EventsIn, _caller: EventsCallerDep, ingest: IngestDep) -> EventsAccepted:
    """Validate a batch of events and put it on the stream (partition key: user id); 202 once the
    stream holds every event. The consumer applies each event_id once."""
    events = [UserEvent(**event.model_dump()) for event in body.events]
    return EventsAccepted(accepted=ingest.ingest(events))
