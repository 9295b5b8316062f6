"""API key routes: /api/v1/api-keys."""

import uuid

from fastapi import APIRouter
from starlette.responses import Response

from app.http.json_response import json_response
from app.routers.deps import ApiKeysWrite, Reader, Session
from app.routers.responses import errors
from app.schemas.auth import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyOut
from app.services.identity import api_keys

router = APIRouter(prefix="/api-keys", tags=["api keys"])


@router.get("", response_model=ApiKeyList, responses=errors(), summary="List API keys")
async def list_keys(ctx: ApiKeysWrite, session: Reader) -> Response:
    """Keys are listed by prefix; the secret is never shown again."""
    items = [ApiKeyOut.model_validate(k).model_dump(mode="json") for k in await api_keys.list_keys(session, ctx)]
    return json_response({"items": items})


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=errors(), summary="Create an API key")
async def create_key(data: ApiKeyCreate, ctx: ApiKeysWrite, session: Session) -> Response:
    """The response holds the whole key once. Scopes cannot exceed the creator's own."""
    api_key, key = await api_keys.create(session, ctx, data)
    body = {**ApiKeyOut.model_validate(api_key).model_dump(mode="json"), "key": key}
    return json_response(body, status_code=201, headers={"Location": f"/api/v1/api-keys/{api_key.id}"})


@router.get("/{key_id}", response_model=ApiKeyOut, responses=errors(404), summary="Get an API key")
async def get_key(key_id: uuid.UUID, ctx: ApiKeysWrite, session: Reader) -> Response:
    """By id, revoked ones included; the secret is never shown again."""
    api_key = await api_keys.get(session, ctx, key_id)
    return json_response(ApiKeyOut.model_validate(api_key).model_dump(mode="json"))


@router.delete("/{key_id}", response_model=ApiKeyOut, responses=errors(404), summary="Revoke an API key")
async def revoke_key(key_id: uuid.UUID, ctx: ApiKeysWrite, session: Session) -> Response:
    """Takes effect at once in this process and within GUANXI_API_KEY_CACHE_SECONDS in others."""
    api_key = await api_keys.revoke(session, ctx, key_id)
    return json_response(ApiKeyOut.model_validate(api_key).model_dump(mode="json"))
