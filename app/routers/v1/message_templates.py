"""Message templates: /api/v1/message-templates."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from app.core.idempotency import StoredResponse
from app.http.json_response import json_response
from app.routers.deps import (
    DEFAULT_LIMIT,
    Cursor,
    CustomersRead,
    IdempotencyKey,
    IfMatch,
    Limit,
    OutreachAdmin,
    Reader,
    Session,
)
from app.routers.responses import errors, idempotent, resource_response, stored
from app.schemas.message_template import (
    MessageTemplateIn,
    MessageTemplateOut,
    MessageTemplatePage,
    MessageTemplatePatch,
    MessageTemplateRevisionOut,
    MessageTemplateRevisionPage,
    PreviewIn,
    PreviewOut,
    TemplateChannel,
    TemplateVariableList,
)
from app.services.outreach import message_templates

router = APIRouter(prefix="/message-templates", tags=["message templates"])


def _location(template_id: object) -> str:
    return f"/api/v1/message-templates/{template_id}"


@router.get(
    "/variables", response_model=TemplateVariableList, responses=errors(), summary="Variables a template may use"
)
async def list_template_variables(ctx: CustomersRead, session: Reader) -> Response:
    """Every `customer.*` and `workspace.*` path a template text may name, the workspace's custom
    fields included (`customer.custom_fields.<key>`), with the filter catalogue's type and label;
    `personal` ones are masked in previews for callers without `customers:pii`. A template also
    names the values its sender supplies as `vars.<name>`, declared in its `variables`."""
    return json_response({"items": await message_templates.list_variables(session, ctx)})


@router.post(
    "",
    status_code=201,
    response_model=MessageTemplateOut,
    responses=errors(409),
    summary="Create a message template",
)
async def create_message_template(
    request: Request, data: MessageTemplateIn, ctx: OutreachAdmin, session: Session, key: IdempotencyKey
) -> Response:
    """Each text is parsed and every variable it names checked: a syntax error, an unknown
    variable, an unsafe attribute or a tag that is not available (macro, include, import) is a 422
    whose `errors` name each place: `loc` (`["body", "subject"]`, `["body", "sms_params", "name"]`),
    `line` and `variable`. Fields of another channel are a 422 too. A live template with the same
    name and locale is a 409 with `existing_id`. Version 1 is readable under /versions."""

    async def create() -> StoredResponse:
        template = await message_templates.create(session, ctx, data)
        return stored(201, template, {"Location": _location(template["id"]), "ETag": f'"{template["version"]}"'})

    return await idempotent(request, session, ctx, key, create)


@router.get("", response_model=MessageTemplatePage, responses=errors(), summary="List message templates")
async def list_message_templates(
    ctx: CustomersRead,
    session: Reader,
    channel: TemplateChannel | None = None,
    name: Annotated[str | None, Query(min_length=1, max_length=200, description="Part of the name, any case.")] = None,
    locale: Annotated[str | None, Query(max_length=35)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Response:
    """Live templates, newest first."""
    items, next_cursor = await message_templates.list_page(
        session,
        ctx,
        channel=channel.value if channel else None,
        name=name,
        locale=locale,
        limit=limit,
        cursor=cursor,
    )
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get(
    "/{template_id}", response_model=MessageTemplateOut, responses=errors(404), summary="Get a message template"
)
async def get_message_template(template_id: uuid.UUID, ctx: CustomersRead, session: Reader) -> Response:
    return resource_response(message_templates.present(await message_templates.get(session, ctx, template_id)))


@router.patch(
    "/{template_id}",
    response_model=MessageTemplateOut,
    responses=errors(404, 409, 412, 428),
    summary="Change a message template",
)
async def update_message_template(
    template_id: uuid.UUID, patch: MessageTemplatePatch, ctx: OutreachAdmin, session: Session, version: IfMatch
) -> Response:
    """A change makes a new version (the ETag); the one before stays readable under /versions.
    The channel is fixed. The whole template is checked again, as at create."""
    return resource_response(await message_templates.update(session, ctx, template_id, patch, expected_version=version))


@router.delete("/{template_id}", status_code=204, responses=errors(404, 412, 428), summary="Delete a message template")
async def delete_message_template(
    template_id: uuid.UUID, ctx: OutreachAdmin, session: Session, version: IfMatch
) -> Response:
    """Gone from reads and lists, and no longer renders; its versions stay readable."""
    await message_templates.delete(session, ctx, template_id, expected_version=version)
    return Response(status_code=204)


@router.get(
    "/{template_id}/versions",
    response_model=MessageTemplateRevisionPage,
    responses=errors(404),
    summary="A message template's versions",
)
async def list_message_template_versions(
    template_id: uuid.UUID, ctx: CustomersRead, session: Reader, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Response:
    """Every version, newest first, also of a deleted template: a message names the template
    version it was rendered from."""
    items, next_cursor = await message_templates.list_revisions(session, ctx, template_id, limit=limit, cursor=cursor)
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get(
    "/{template_id}/versions/{version}",
    response_model=MessageTemplateRevisionOut,
    responses=errors(404),
    summary="One version of a message template",
)
async def get_message_template_version(
    template_id: uuid.UUID,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
    ctx: CustomersRead,
    session: Reader,
) -> Response:
    return json_response(await message_templates.get_revision(session, ctx, template_id, version))


@router.post(
    "/{template_id}/preview",
    response_model=PreviewOut,
    responses=errors(404),
    summary="Preview a message template for a customer",
)
async def preview_message_template(
    template_id: uuid.UUID, data: PreviewIn, ctx: CustomersRead, session: Reader
) -> Response:
    """The template rendered for a customer the caller can see (404 otherwise), with `variables`
    for its declared `vars.*` (each required). Personal values (`customer.email`, `phone`,
    `street`) are masked as the caller sees them, unless it holds `customers:pii`; a message sent
    from the template carries the real ones. For SMS: the provider parameters, and the characters,
    encoding and segments of `【sign】` and the text. A template that fails for this customer (a
    value it cannot use, a refused attribute, an output over the limit) is a 422 naming the field
    and line (`loc` `["template", "<field>"]`). Changes nothing, so no Idempotency-Key."""
    return json_response(await message_templates.preview(session, ctx, template_id, data))
