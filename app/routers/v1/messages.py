"""Messages to customers: /api/v1/messages."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import DEFAULT_LIMIT, Cursor, CustomersRead, IdempotencyKey, Limit, MessagesSend, Reader, Session
from app.routers.responses import errors, existing, idempotent, resource_response, stored
from app.schemas.outreach import MessageContent, MessageIn, MessageOut, MessagePage, MessageStatus, Purpose
from app.services.outreach import messages

router = APIRouter(prefix="/messages", tags=["outreach"])


@router.post(
    "",
    status_code=201,
    response_model=MessageOut,
    responses={**errors(404, 409), **existing(MessageOut, "A message with this `dedupe_key` was queued before")},
    summary="Send a message to a customer",
)
async def send_message(
    request: Request, data: MessageIn, ctx: MessagesSend, session: Session, key: IdempotencyKey
) -> Response:
    """Queued now, sent by the workers. `content`, or `template_id` (a message template of the
    channel's kind) with its `variables`, rendered for the customer now. The address is the
    customer's first email (email) or phone (SMS). 409 `consent_required` for marketing without the
    customer's consent on the channel, 409 `suppressed` for an address on the suppression list,
    409 `frequency_capped` past the channel's cap: nothing is queued. Marketing during the
    channel's quiet hours waits for their end (`send_after`). The message is also an outbound
    interaction on the timeline. Statuses: `queued`, `sending`, `sent`, `delivered`, `failed`,
    `unknown` (maybe sent, never resent)."""

    if data.content is not None:
        content: MessageContent | messages.FromTemplate = data.content
    else:
        assert data.template_id is not None  # the schema asks for one of the two
        content = messages.FromTemplate(data.template_id, data.variables)

    async def create() -> StoredResponse:
        message, created = await messages.enqueue(
            session,
            ctx,
            customer_id=data.customer_id,
            channel_id=data.channel_id,
            purpose=data.purpose,
            content=content,
            dedupe_key=data.dedupe_key,
            source="api",
        )
        body = messages.present(message, ctx)
        return stored(201 if created else 200, body, {"Location": f"/api/v1/messages/{message.id}"})

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=MessagePage, responses=errors(), summary="List messages")
async def list_messages(
    ctx: CustomersRead,
    session: Reader,
    customer_id: uuid.UUID | None = None,
    channel_id: uuid.UUID | None = None,
    status: MessageStatus | None = None,
    purpose: Purpose | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Newest first; messages to customers the caller may not see are not listed."""
    rows, next_cursor = await messages.list_page(
        session,
        ctx,
        customer_id=customer_id,
        channel_id=channel_id,
        status=status,
        purpose=purpose,
        limit=limit,
        cursor=cursor,
    )
    return json_response({"items": [messages.present(m, ctx) for m in rows], "next_cursor": next_cursor})


@router.get("/{message_id}", response_model=MessageOut, responses=errors(404), summary="Get a message")
async def get_message(message_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(messages.present(await messages.get(session, ctx, message_id), ctx))
