"""What providers push back: /api/v1/channel-callbacks/{token}/… (no account: the channel's
unguessable callback token in the path is the credential; a rotated token answers 404)."""

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.responses import Response

from app.http.json_response import json_response
from app.routers.deps import Session
from app.routers.responses import public_errors
from app.schemas.outreach import (
    AliyunAck,
    AliyunReply,
    AliyunReport,
    CallbackAccepted,
    EmailBounce,
    TencentAck,
    TencentReply,
    TencentStatus,
)
from app.services.outreach import callbacks, channels

router = APIRouter(prefix="/channel-callbacks/{token}", tags=["outreach callbacks"])

Token = Annotated[str, Path(min_length=20, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
MAX_ITEMS = 1000


@router.post(
    "/tencent/status",
    response_model=TencentAck,
    responses=public_errors(404),
    summary="Tencent Cloud SMS status reports",
)
async def tencent_status(token: Token, items: list[TencentStatus], session: Session) -> Response:
    """Tencent's status report push (an array): `SUCCESS` sets `delivered`, anything else `failed`
    with its `errmsg`; matched by `sid`."""
    channel = await channels.by_callback_token(session, token, ("sms_tencent",))
    for item in items[:MAX_ITEMS]:
        await callbacks.receipt(
            session,
            channel,
            provider_id=item.sid,
            delivered=item.report_status.upper() == "SUCCESS",
            code=item.errmsg,
            detail=item.description,
        )
    return json_response({"result": 0, "errmsg": "OK"})


@router.post(
    "/tencent/reply", response_model=TencentAck, responses=public_errors(404), summary="Tencent Cloud SMS replies"
)
async def tencent_reply(token: Token, item: TencentReply, session: Session) -> Response:
    """A reply becomes an inbound interaction and `message.replied`; 退订/TD/STOP/UNSUBSCRIBE alone
    withdraws SMS consent and suppresses the number."""
    channel = await channels.by_callback_token(session, token, ("sms_tencent",))
    await callbacks.reply(session, channel, number=callbacks.phone(item.mobile, item.nationcode), text=item.text)
    return json_response({"result": 0, "errmsg": "OK"})


@router.post(
    "/aliyun/report",
    response_model=AliyunAck,
    responses=public_errors(404),
    summary="Alibaba Cloud SMS receipts (SmsReport)",
)
async def aliyun_report(token: Token, items: list[AliyunReport], session: Session) -> Response:
    """Alibaba's SmsReport push (an array): `success` sets `delivered`, else `failed` with `err_code`;
    matched by `biz_id`."""
    channel = await channels.by_callback_token(session, token, ("sms_aliyun",))
    for item in items[:MAX_ITEMS]:
        await callbacks.receipt(
            session, channel, provider_id=item.biz_id, delivered=item.success, code=item.err_code, detail=item.err_msg
        )
    return json_response({"code": 0, "msg": "成功"})


@router.post(
    "/aliyun/reply", response_model=AliyunAck, responses=public_errors(404), summary="Alibaba Cloud SMS replies (SmsUp)"
)
async def aliyun_reply(token: Token, items: list[AliyunReply], session: Session) -> Response:
    """As for Tencent's replies."""
    channel = await channels.by_callback_token(session, token, ("sms_aliyun",))
    for item in items[:MAX_ITEMS]:
        await callbacks.reply(session, channel, number=callbacks.phone(item.phone_number), text=item.content)
    return json_response({"code": 0, "msg": "成功"})


@router.post("/email/bounce", response_model=CallbackAccepted, responses=public_errors(404), summary="An email bounce")
async def email_bounce(token: Token, body: EmailBounce, session: Session) -> Response:
    """`{"address", "kind": "bounce"|"complaint", "message_id"?, "detail"?}`: the address is
    suppressed; a bounce of a known message sets it `failed`."""
    await callbacks.email_bounce(session, token, body)
    return json_response({"accepted": 1})
