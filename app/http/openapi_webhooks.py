"""The event catalogue as the `webhooks` section of the OpenAPI 3.1 document."""

import re
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field, create_model
from starlette.responses import Response

from app.schemas.common import Actor
from app.services.events.event_catalogue import CATALOGUE, EventType

DELIVERY_NOTES = """
Delivered as a POST with the Standard Webhooks headers `webhook-id` (the event id, the same on every
retry: deduplicate on it), `webhook-timestamp` (Unix seconds) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the endpoint's `whsec_` secret; after a
rotation, one signature per secret still in its overlap, separated by spaces). Answer 2xx within
10 seconds; anything else is retried with backoff (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h,
24 h). An endpoint whose every attempt has failed for `GUANXI_WEBHOOK_DISABLE_AFTER_HOURS` (48 by
default), or that answers 410, is disabled: its deliveries are then held, not dropped, and sent when
it is enabled again.
"""


class EventEnvelope(BaseModel):
    id: str = Field(description="Also the `webhook-id` header.")
    occurred_at: datetime
    workspace_id: str
    actor: Actor


def _model(event: EventType) -> type[BaseModel]:
    name = "".join(part.capitalize() for part in event.name.replace("_", ".").split(".")) + "Event"
    return create_model(
        name,
        __base__=EventEnvelope,
        type=(Literal[event.name], Field(description="The event type.")),  # type: ignore[arg-type]
        data=(event.data, ...),
    )


def _receiver(model: type[BaseModel]) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def receive(event: model) -> None:  # type: ignore[valid-type]
        """Implemented by the partner system."""

    return receive


def document(app: FastAPI) -> None:
    for event in CATALOGUE:
        app.webhooks.add_api_route(
            event.name,
            _receiver(_model(event)),
            methods=["POST"],
            operation_id="receive" + "".join(part.capitalize() for part in re.split(r"[._]", event.name)),
            # Any 2xx is a delivery, whatever its body; anything else is retried.
            response_class=Response,
            responses={200: {"description": "Delivered (any 2xx; the body is ignored)."}},
            summary=event.description,
            description=DELIVERY_NOTES,
            tags=["webhook events"],
        )
