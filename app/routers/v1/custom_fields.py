"""Custom field definition routes: /api/v1/custom-fields."""

import uuid

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import CustomersRead, CustomFieldsWrite, IdempotencyKey, IfMatch, Reader, Session
from app.routers.responses import errors, idempotent, resource_response, stored_resource
from app.schemas.custom_field import CustomFieldCreate, CustomFieldList, CustomFieldOut, CustomFieldPatch
from app.services.customers import custom_fields

router = APIRouter(prefix="/custom-fields", tags=["custom fields"])


def _out(definition: object) -> dict[str, object]:
    return CustomFieldOut.model_validate(definition).model_dump(mode="json")


@router.get("", response_model=CustomFieldList, responses=errors(), summary="List custom field definitions")
async def list_fields(ctx: CustomersRead, session: Reader) -> Response:
    """Every definition of the workspace, by key (a workspace has tens, not thousands)."""
    return json_response({"items": [_out(d) for d in await custom_fields.list_all(session, ctx)]})


@router.post("", status_code=201, response_model=CustomFieldOut, responses=errors(409), summary="Define a custom field")
async def create_field(
    request: Request, data: CustomFieldCreate, ctx: CustomFieldsWrite, session: Session, key: IdempotencyKey
) -> Response:
    """Values on customers are checked against the type and rules from then on."""

    async def create() -> StoredResponse:
        definition = await custom_fields.create(session, ctx, data)
        return stored_resource(_out(definition), location=f"/api/v1/custom-fields/{definition.id}")

    return await idempotent(request, session, ctx, key, create)


@router.get("/{field_id}", response_model=CustomFieldOut, responses=errors(404), summary="Get a definition")
async def get_field(field_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(_out(await custom_fields.get(session, ctx, field_id)))


@router.patch(
    "/{field_id}",
    response_model=CustomFieldOut,
    responses=errors(404, 412, 428),
    summary="Change a definition",
)
async def update_field(
    field_id: uuid.UUID, patch: CustomFieldPatch, ctx: CustomFieldsWrite, session: Session, version: IfMatch
) -> Response:
    """Key and type are fixed; existing values are not re-checked against new rules."""
    definition = await custom_fields.update(session, ctx, field_id, patch, expected_version=version)
    return resource_response(_out(definition))


@router.delete("/{field_id}", status_code=204, responses=errors(404, 412, 428), summary="Delete a definition")
async def delete_field(field_id: uuid.UUID, ctx: CustomFieldsWrite, session: Session, version: IfMatch) -> Response:
    """Also removes the field's values from every customer (their versions go up)."""
    await custom_fields.delete(session, ctx, field_id, expected_version=version)
    return Response(status_code=204)
