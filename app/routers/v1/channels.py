"""Outreach channels: /api/v1/channels (SMTP, Alibaba Cloud SMS, Tencent Cloud SMS, WeCom robot, signed HTTP)."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import DEFAULT_LIMIT, Cursor, IdempotencyKey, IfMatch, Limit, OutreachAdmin, Reader, Session
from app.routers.responses import errors, idempotent, resource_response, stored
from app.schemas.outreach import (
    ChannelIn,
    ChannelKind,
    ChannelOut,
    ChannelPage,
    ChannelPatch,
    ChannelTestIn,
    ChannelTestOut,
)
from app.services.outreach import channels

router = APIRouter(prefix="/channels", tags=["outreach"])


@router.post("", status_code=201, response_model=ChannelOut, responses=errors(), summary="Add a channel")
async def create_channel(
    request: Request, data: ChannelIn, ctx: OutreachAdmin, session: Session, key: IdempotencyKey
) -> Response:
    """`secrets` are write-only: stored encrypted, never shown again (not here, not in the audit log).
    Provider endpoints default to the real hosts and obey the webhooks' target rules (422 for
    private addresses unless the operator allows them). `callback_urls` are the addresses to give
    the provider for receipts and replies."""

    async def create() -> StoredResponse:
        channel = await channels.create(session, ctx, data)
        body = channels.present(channel)
        return stored(201, body, {"Location": f"/api/v1/channels/{channel.id}", "ETag": f'"{channel.version}"'})

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=ChannelPage, responses=errors(), summary="List channels")
async def list_channels(
    ctx: OutreachAdmin,
    session: Reader,
    kind: ChannelKind | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    rows, next_cursor = await channels.list_page(session, ctx, kind=kind, limit=limit, cursor=cursor)
    return json_response({"items": [channels.present(c) for c in rows], "next_cursor": next_cursor})


@router.get("/{channel_id}", response_model=ChannelOut, responses=errors(404), summary="Get a channel")
async def get_channel(channel_id: uuid.UUID, ctx: OutreachAdmin, session: Reader) -> Response:
    return resource_response(channels.present(await channels.get(session, ctx, channel_id)))


@router.patch("/{channel_id}", response_model=ChannelOut, responses=errors(404, 412, 428), summary="Change a channel")
async def update_channel(
    channel_id: uuid.UUID, patch: ChannelPatch, ctx: OutreachAdmin, session: Session, version: IfMatch
) -> Response:
    """`settings` and `secrets` merge key by key, checked as the channel's kind requires (send a
    secret to replace it). The kind cannot change."""
    channel = await channels.update(session, ctx, channel_id, patch, expected_version=version)
    return resource_response(channels.present(channel))


@router.delete("/{channel_id}", status_code=204, responses=errors(404, 412, 428), summary="Remove a channel")
async def delete_channel(channel_id: uuid.UUID, ctx: OutreachAdmin, session: Session, version: IfMatch) -> Response:
    """Soft: its messages keep their history; queued ones fail, its callback addresses stop answering."""
    await channels.delete(session, ctx, channel_id, expected_version=version)
    return Response(status_code=204)


@router.post(
    "/{channel_id}/rotate-callback-token",
    response_model=ChannelOut,
    responses=errors(404),
    summary="New callback addresses",
)
async def rotate_channel_callback_token(channel_id: uuid.UUID, ctx: OutreachAdmin, session: Session) -> Response:
    """The old callback addresses answer 404 from now on: give the provider the new ones."""
    return resource_response(channels.present(await channels.rotate_callback_token(session, ctx, channel_id)))


@router.post("/{channel_id}/test", response_model=ChannelTestOut, responses=errors(404), summary="Send a test")
async def test_channel(channel_id: uuid.UUID, body: ChannelTestIn, ctx: OutreachAdmin, session: Reader) -> Response:
    """Sends one message now, outside the queue (not logged as a message), and answers what the
    provider said: `accepted` with its id, `rejected` with its code and message, or `unknown`.
    `to` is an email address or phone number (not for robots and URLs); SMS needs `content` with
    the provider's template code."""
    result = await channels.test_send(session, ctx, channel_id, body)
    return json_response(
        {
            "outcome": result.status,
            "provider_message_id": result.provider_message_id,
            "code": result.code,
            "message": result.message,
            "retryable": result.retryable,
        }
    )
