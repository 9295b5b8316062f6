"""Message templates: create, read, change and delete them with every version kept, the variables
they may name, a masked preview for a customer, and `render_for_customer(s)`, which the send
paths (messages, automation) render through.

A template's texts are Jinja templates over `customer.*` (the filter catalogue's customer, value,
activity and lifecycle fields, the contact points, `customer.custom_fields.<key>` for each defined
custom field), `workspace.name` and `vars.<name>` for the values a sender supplies, each declared
on the template. Every variable is checked when a template is saved (template_sandbox.check)."""

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, any_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, DomainError, NotFound, ValidationFailed
from app.core.ids import new_id
from app.core.masking import PERSONAL_FIELDS, is_masked, mask_personal
from app.core.pagination import SortKey, keyset_page
from app.core.versions import check_version
from app.core.wire import utc_text
from app.models import Customer, CustomerStage, CustomerValue, MessageTemplate, MessageTemplateRevision, Workspace
from app.schemas.message_template import MessageTemplateIn, MessageTemplatePatch, PreviewIn
from app.services.customers.visibility import visible_customer_clauses
from app.services.events import audit
from app.services.filters.catalogue import CUSTOM_PREFIX, FIELDS, describe_fields
from app.services.outreach import template_sandbox
from app.services.outreach.template_sandbox import Record, TemplateFailure

CONTENT_FIELDS = (
    "name",
    "channel",
    "locale",
    "subject",
    "body",
    "html",
    "sms_template_code",
    "sms_sign_name",
    "sms_params",
    "variables",
)
# Which optional fields each channel takes, and which of them it needs.
_CHANNEL_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "email": (frozenset({"subject", "html"}), frozenset({"subject"})),
    "sms": (
        frozenset({"sms_template_code", "sms_sign_name", "sms_params"}),
        frozenset({"sms_template_code", "sms_sign_name"}),
    ),
    "wecom": (frozenset(), frozenset()),
    "http": (frozenset(), frozenset()),
}
_OPTIONAL = ("subject", "html", "sms_template_code", "sms_sign_name", "sms_params")
CUSTOM_FIELDS_PATH = "customer.custom_fields"


@dataclass(frozen=True)
class Variable:
    """One variable a template may name: its path, the catalogue's type and label, and the SQL that
    reads it for a customer (None for custom fields, read from the `custom_fields` column)."""

    path: str
    type: str
    label: str
    column: Any

    @property
    def personal(self) -> bool:
        return self.path.rsplit(".", 1)[-1] in PERSONAL_FIELDS

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "label": self.label, "personal": self.personal}


def _fixed_variables() -> dict[str, Variable]:
    """The filter catalogue's fields under `customer.`, but for the owner's id and the consents
    (what a message says, not whom it may go to) and the per-channel contact counts (a count is
    also a group of those, which a variable path cannot be); then the contact points, which the
    catalogue does not filter on, and the workspace's name."""
    found = {"customer.id": Variable("customer.id", "id", "Customer id", Customer.id)}
    for field in FIELDS.values():
        if field.name == "owner_id" or field.name.startswith("consent.") or field.name.count(".") > 1:
            continue
        found[f"customer.{field.name}"] = Variable(f"customer.{field.name}", field.type, field.label, field.column)
    found |= {
        v.path: v
        for v in (
            Variable("customer.email", "string", "Email (the first)", Customer.emails[1]),
            Variable("customer.phone", "string", "Phone (the first)", Customer.phones[1]),
            Variable("customer.street", "string", "Street", Customer.street),
            Variable("workspace.name", "string", "Workspace name", Workspace.name),
        )
    }
    return found


FIXED_VARIABLES = _fixed_variables()


async def variables(session: AsyncSession, ctx: Caller) -> dict[str, Variable]:
    """Every variable of the caller's workspace: the fixed ones and its custom fields."""
    found = dict(FIXED_VARIABLES)
    for described in await describe_fields(session, ctx):
        if described["group"] == "custom":
            key = described["field"].removeprefix(CUSTOM_PREFIX)
            path = f"{CUSTOM_FIELDS_PATH}.{key}"
            found[path] = Variable(path, described["type"], described["label"], None)
    return found


async def list_variables(session: AsyncSession, ctx: Caller) -> list[dict[str, Any]]:
    return [variable.describe() for variable in (await variables(session, ctx)).values()]


def _leaf(path: tuple[str, ...], known: Mapping[str, Variable]) -> str | None:
    """The variable a path names: its longest prefix that is one (`customer.name` of
    `customer.name.upper`), or None."""
    for end in range(len(path), 0, -1):
        dotted = ".".join(path[:end])
        if dotted in known:
            return dotted
    return None


def _judge(known: Mapping[str, Variable], declared: set[str]) -> Any:
    groups = {".".join(path.split(".")[:end]) for path in known for end in range(1, path.count(".") + 1)}

    def why_not(path: tuple[str, ...]) -> str | None:
        dotted = ".".join(path)
        if path[0] == "vars":
            if len(path) == 1:
                return "vars is a group; name one of the template's variables as vars.<name>."
            if path[1] not in declared:
                return f"vars.{path[1]} is not declared in the template's `variables`."
            return None
        if _leaf(path, known) is not None:
            return None
        if dotted in groups:
            return f"{dotted} is a group of variables; name one of its fields."
        return f"Unknown variable {dotted} (GET /api/v1/message-templates/variables lists them)."

    return why_not


def _texts(content: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str, bool]]:
    """Each template text of a template: (where, source, is HTML)."""
    for name in ("subject", "body", "html"):
        if content.get(name) is not None:
            yield (name,), content[name], name == "html"
    for param, source in (content.get("sms_params") or {}).items():
        yield ("sms_params", param), source, False


async def _check(session: AsyncSession, ctx: Caller, content: Mapping[str, Any]) -> None:
    """422 listing every problem of a template, each with where it is: the field (`body`,
    `sms_params`/<name> ...), the line, the variable."""
    errors: list[dict[str, Any]] = []
    allowed, required = _CHANNEL_FIELDS[content["channel"]]
    for name in _OPTIONAL:
        present = content.get(name) not in (None, {})
        if present and name not in allowed:
            errors.append(_error((name,), f"{name} does not apply to {content['channel']} templates.", "extra_field"))
        if not present and name in required:
            errors.append(_error((name,), f"{content['channel']} templates need {name}.", "channel_field_required"))
    why_not = _judge(await variables(session, ctx), set(content["variables"]))
    for where, source, html in _texts(content):
        for problem in template_sandbox.check(source, why_not, html=html).problems:
            at = f" (line {problem.line})" if problem.line else ""
            errors.append(
                _error(where, problem.message + at, problem.kind, line=problem.line, variable=problem.variable)
            )
    if errors:
        raise ValidationFailed.listing(f"{'.'.join(errors[0]['loc'][1:])}: {errors[0]['msg']}", errors)


def _error(
    where: tuple[str, ...], message: str, kind: str, *, line: int | None = None, variable: str | None = None
) -> dict[str, Any]:
    return {"loc": ["body", *where], "msg": message, "type": kind, "line": line, "variable": variable}


def content_of(template: MessageTemplate) -> dict[str, Any]:
    return {name: getattr(template, name) for name in CONTENT_FIELDS}


def present(template: MessageTemplate) -> dict[str, Any]:
    """A template for the wire."""
    return {
        "id": template.id,
        **content_of(template),
        "version": template.version,
        "created_at": template.created_at,
        "updated_at": template.updated_at,
        "created_by": template.created_by,
    }


def present_revision(revision: MessageTemplateRevision) -> dict[str, Any]:
    return {
        "template_id": revision.template_id,
        "version": revision.version,
        "created_at": revision.created_at,
        "created_by": revision.created_by,
        "content": revision.content,
    }


def _live(ctx: Caller) -> Select[MessageTemplate]:
    return scoped.in_workspace(MessageTemplate, ctx).where(MessageTemplate.deleted_at.is_(None))


async def get(session: AsyncSession, ctx: Caller, template_id: uuid.UUID, *, lock: bool = False) -> MessageTemplate:
    return await scoped.one(
        session,
        _live(ctx).where(MessageTemplate.id == template_id),
        missing="No message template with that id.",
        lock=lock,
    )


async def list_page(
    session: AsyncSession,
    ctx: Caller,
    *,
    channel: str | None,
    name: str | None,
    locale: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; `name` matches any part of the name, ignoring case."""
    stmt = _live(ctx)
    if channel is not None:
        stmt = stmt.where(MessageTemplate.channel == channel)
    if locale is not None:
        stmt = stmt.where(MessageTemplate.locale == locale)
    if name is not None:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(MessageTemplate.name.ilike(f"%{escaped}%"))
    keys = [SortKey(MessageTemplate.id, descending=True)]
    rows, next_cursor = await keyset_page(
        session, stmt, keys, list_name="message_templates", limit=limit, cursor=cursor
    )
    return [present(row) for row in rows], next_cursor


def _revise(session: AsyncSession, ctx: Caller, template: MessageTemplate) -> None:
    """The revision of the template's present version: written with every version, so a message
    that names a version can read what it said."""
    session.add(
        MessageTemplateRevision(
            workspace_id=template.workspace_id,
            template_id=template.id,
            version=template.version,
            content=content_of(template),
            created_at=template.updated_at,
            created_by=ctx.actor,
        )
    )


async def create(session: AsyncSession, ctx: Caller, data: MessageTemplateIn) -> dict[str, Any]:
    content = data.model_dump(mode="json")
    content["sms_params"] = content["sms_params"] or {}
    await _check(session, ctx, content)
    now = clock.now()
    template = MessageTemplate(
        workspace_id=ctx.workspace_id,
        id=new_id(),
        created_at=now,
        updated_at=now,
        created_by=ctx.actor,
        version=1,
        **content,
    )
    await _insert(session, ctx, template)
    _revise(session, ctx, template)
    audit.record(
        session,
        ctx,
        entity_type="message_template",
        entity_id=template.id,
        action="created",
        changes={name: {"before": None, "after": value} for name, value in content.items()},
    )
    return present(template)


async def _insert(session: AsyncSession, ctx: Caller, template: MessageTemplate) -> None:
    """Adds the template; 409 naming the live template that has its name and locale."""
    try:
        async with session.begin_nested():
            session.add(template)
            await session.flush()
    except IntegrityError as exc:
        await _refuse_taken(session, ctx, template.name, template.locale, exc)


async def _refuse_taken(session: AsyncSession, ctx: Caller, name: str, locale: str | None, exc: IntegrityError) -> None:
    existing = await session.scalar(
        select(MessageTemplate.id).where(
            MessageTemplate.workspace_id == ctx.workspace_id,
            MessageTemplate.name == name,
            func.coalesce(MessageTemplate.locale, "") == (locale or ""),
            MessageTemplate.deleted_at.is_(None),
        )
    )
    if existing is None:
        raise exc
    raise Conflict("A message template with this name and locale exists.", existing_id=str(existing)) from exc


# Fields a PATCH may clear with null; the others keep their value when sent as null.
_CLEARABLE = frozenset({"locale", "subject", "html", "sms_template_code", "sms_sign_name"})


async def update(
    session: AsyncSession, ctx: Caller, template_id: uuid.UUID, patch: MessageTemplatePatch, *, expected_version: int
) -> dict[str, Any]:
    """A new version when anything changed (the old one stays readable under /versions)."""
    template = await get(session, ctx, template_id, lock=True)
    check_version(template.version, expected_version, what="message template")
    sent = patch.model_dump(mode="json", include=patch.model_fields_set)
    for name, value in sent.items():
        if value is None and name not in _CLEARABLE:
            raise ValidationFailed(f"{name} cannot be cleared.", loc=["body", name])
    content = content_of(template) | sent
    content["sms_params"] = content["sms_params"] or {}
    changes = {
        name: {"before": getattr(template, name), "after": value}
        for name, value in content.items()
        if value != getattr(template, name)
    }
    if not changes:
        return present(template)
    await _check(session, ctx, content)
    name, locale = content["name"], content["locale"]
    try:
        # Changed inside the savepoint: a name and locale another live template has rolls back
        # only this, and is the 409 a create gets.
        async with session.begin_nested():
            for field, change in changes.items():
                setattr(template, field, change["after"])
            await session.flush()
    except IntegrityError as exc:
        await _refuse_taken(session, ctx, name, locale, exc)
    audit.record_update(session, ctx, template, entity_type="message_template", changes=changes)
    _revise(session, ctx, template)
    return present(template)


async def delete(session: AsyncSession, ctx: Caller, template_id: uuid.UUID, *, expected_version: int) -> None:
    """Gone from lists and reads, and no longer renders; its versions stay readable."""
    template = await get(session, ctx, template_id, lock=True)
    check_version(template.version, expected_version, what="message template")
    template.deleted_at = clock.now()
    audit.record(
        session,
        ctx,
        entity_type="message_template",
        entity_id=template.id,
        action="deleted",
        changes={"deleted_at": {"before": None, "after": utc_text(template.deleted_at)}},
    )


async def _any_template(session: AsyncSession, ctx: Caller, template_id: uuid.UUID) -> None:
    """404 unless the template is the workspace's, deleted or not."""
    await scoped.get(session, ctx, MessageTemplate, template_id, missing="No message template with that id.")


async def list_revisions(
    session: AsyncSession, ctx: Caller, template_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest version first."""
    await _any_template(session, ctx, template_id)
    stmt = select(MessageTemplateRevision).where(
        MessageTemplateRevision.workspace_id == ctx.workspace_id, MessageTemplateRevision.template_id == template_id
    )
    keys = [SortKey(MessageTemplateRevision.version, descending=True)]
    rows, next_cursor = await keyset_page(
        session, stmt, keys, list_name=f"message_template_revisions:{template_id}", limit=limit, cursor=cursor
    )
    return [present_revision(row) for row in rows], next_cursor


async def get_revision(session: AsyncSession, ctx: Caller, template_id: uuid.UUID, version: int) -> dict[str, Any]:
    revision = await session.get(MessageTemplateRevision, (ctx.workspace_id, template_id, version))
    if revision is None:
        raise NotFound("No such version of a message template.")
    return present_revision(revision)


@dataclass(frozen=True)
class Rendered:
    """A template rendered for one customer, with real (unmasked) values.

    `text` is the email's text part, the SMS's local text (what the provider template stands for:
    the timeline's record of what was sent), or the WeCom/HTTP body. For SMS, `sms_params` maps the
    provider's parameter names to their rendered values, in the template's order (Tencent Cloud's
    positional parameters are named `1`, `2`, ...); it is None for other channels."""

    template_id: uuid.UUID
    template_version: int
    channel: str
    subject: str | None
    text: str
    html: str | None
    sms_template_code: str | None
    sms_sign_name: str | None
    sms_params: dict[str, str] | None


async def render_for_customer(
    session: AsyncSession,
    ctx: Caller,
    *,
    template_id: uuid.UUID,
    customer_id: uuid.UUID,
    variables: Mapping[str, Any],
) -> Rendered:
    """Render the template's current version for a customer, for sending: values are never
    masked (a message needs the real name and address), whatever `ctx` may see.

    `ctx` decides which customers are found (a system caller finds any of its workspace);
    `variables` are the template's declared `vars.*`, each required, no others. Raises NotFound
    (404) for a deleted or foreign template or a customer `ctx` cannot see, and ValidationFailed
    (422) for variables missing or undeclared and for a template that fails in the sandbox (an
    undefined value, a refused attribute, an output over the limit), with where: `loc`
    `["template", "<field>"]`, `line`. Reads only; the caller's transaction is untouched."""
    rendered = await render_for_customers(
        session, ctx, template_id=template_id, customer_ids=[customer_id], variables=variables
    )
    return _one(rendered[customer_id])


async def render_for_customers(
    session: AsyncSession,
    ctx: Caller,
    *,
    template_id: uuid.UUID,
    customer_ids: Sequence[uuid.UUID],
    variables: Mapping[str, Any],
) -> dict[uuid.UUID, Rendered | DomainError]:
    """`render_for_customer` for a set of customers, their values read in one statement: what
    concerns the template (NotFound, variables missing or undeclared) is raised; what concerns one
    customer (NotFound for one `ctx` cannot see, ValidationFailed for a render that fails on its
    values) is that customer's entry."""
    template = await get(session, ctx, template_id)
    return await _render(session, ctx, template, customer_ids, variables, masked=False)


def _one(rendered: Rendered | DomainError) -> Rendered:
    if isinstance(rendered, DomainError):
        raise rendered
    return rendered


async def preview(session: AsyncSession, ctx: Caller, template_id: uuid.UUID, data: PreviewIn) -> dict[str, Any]:
    """The template rendered for a customer the caller can see, with personal values masked as the
    caller sees them (a caller without `customers:pii` sees `l***@example.com` where the message
    would carry the address), and for SMS the characters and segments the message costs."""
    template = await get(session, ctx, template_id)
    masked = is_masked(ctx)
    found = await _render(session, ctx, template, [data.customer_id], data.variables, masked=masked)
    rendered = _one(found[data.customer_id])
    sms = None
    if rendered.channel == "sms":
        assert rendered.sms_sign_name is not None
        size = template_sandbox.sms_size(f"【{rendered.sms_sign_name}】{rendered.text}")
        sms = {
            "template_code": rendered.sms_template_code,
            "sign_name": rendered.sms_sign_name,
            "params": rendered.sms_params,
            "characters": size.characters,
            "encoding": size.encoding,
            "segments": size.segments,
        }
    return {
        "template_id": rendered.template_id,
        "template_version": rendered.template_version,
        "channel": rendered.channel,
        "subject": rendered.subject,
        "text": rendered.text,
        "html": rendered.html,
        "sms": sms,
        "pii_masked": masked,
    }


def _check_supplied(declared: list[str], supplied: Mapping[str, Any]) -> None:
    for name in supplied:
        if name not in declared:
            raise ValidationFailed(
                f"{name} is not one of the template's variables ({', '.join(declared) or 'it has none'}).",
                loc=["body", "variables", name],
                error_type="unknown_variable",
            )
    for name in declared:
        if name not in supplied:
            raise ValidationFailed(
                f"The template needs the variable {name}.",
                loc=["body", "variables", name],
                error_type="variable_required",
            )


async def _render(
    session: AsyncSession,
    ctx: Caller,
    template: MessageTemplate,
    customer_ids: Sequence[uuid.UUID],
    supplied: Mapping[str, Any],
    *,
    masked: bool,
) -> dict[uuid.UUID, Rendered | DomainError]:
    content = content_of(template)
    _check_supplied(template.variables, supplied)
    known = await variables(session, ctx)
    needed = {
        leaf
        for _, source, html in _texts(content)
        for path in template_sandbox.used_paths(source, html=html)
        if (leaf := _leaf(tuple(path.split(".")), known)) is not None
    }
    found = await _values(session, ctx, customer_ids, needed, known)
    out: dict[uuid.UUID, Rendered | DomainError] = {}
    for customer_id in customer_ids:
        values = found.get(customer_id)
        if values is None:
            out[customer_id] = NotFound("No customer with that id.")
            continue
        try:
            out[customer_id] = _render_values(template, content, mask_personal(values) if masked else values, supplied)
        except ValidationFailed as exc:
            out[customer_id] = exc
    return out


def _render_values(
    template: MessageTemplate,
    content: Mapping[str, Any],
    values: Mapping[str, Mapping[str, Any]],
    supplied: Mapping[str, Any],
) -> Rendered:
    scope = {
        "customer": _grouped(values["customer"]),
        "workspace": _grouped(values["workspace"]),
        "vars": Record(dict(supplied)),
    }
    rendered: dict[str, Any] = {}
    sms_params: dict[str, str] = {}
    for where, source, html in _texts(content):
        field = ".".join(where)
        try:
            text = template_sandbox.render(source, scope, html=html, field=field)
        except TemplateFailure as failure:
            at = f" (line {failure.line})" if failure.line else ""
            raise ValidationFailed.listing(
                f"The template's {field} cannot render for this customer: {failure.message}{at}",
                [
                    {
                        "loc": ["template", *where],
                        "msg": failure.message + at,
                        "type": "render_failed",
                        "line": failure.line,
                        "variable": None,
                    }
                ],
            ) from None
        if where[0] == "sms_params":
            sms_params[where[1]] = text
        else:
            rendered[field] = text
    subject = rendered.get("subject")
    return Rendered(
        template_id=template.id,
        template_version=template.version,
        channel=template.channel,
        # A header holds one line: whatever line breaks the values brought become spaces.
        subject=" ".join(subject.split()) if subject is not None else None,
        text=rendered["body"],
        html=rendered.get("html"),
        sms_template_code=template.sms_template_code,
        sms_sign_name=template.sms_sign_name,
        sms_params=sms_params if template.channel == "sms" else None,
    )


def _grouped(values: Mapping[str, Any]) -> Record:
    return Record({key: _grouped(value) if isinstance(value, dict) else value for key, value in values.items()})


async def _values(
    session: AsyncSession,
    ctx: Caller,
    customer_ids: Sequence[uuid.UUID],
    needed: set[str],
    known: Mapping[str, Variable],
) -> dict[uuid.UUID, dict[str, dict[str, Any]]]:
    """Each customer's values of the variables a template names, in one statement, as nested
    groups (`customer.value.tier` -> {"customer": {"value": {"tier": ...}}}); customers the caller
    cannot see are absent."""
    columns = sorted(path for path in needed if known[path].column is not None)
    custom = any(path.startswith(f"{CUSTOM_FIELDS_PATH}.") for path in needed)
    stmt = (
        select(
            Customer.id,
            Customer.custom_fields,
            *(known[path].column.label(f"v{index}") for index, path in enumerate(columns)),
        )
        .select_from(Customer)
        .join(Workspace, Workspace.id == Customer.workspace_id)
        .outerjoin(
            CustomerValue,
            (CustomerValue.workspace_id == Customer.workspace_id) & (CustomerValue.customer_id == Customer.id),
        )
        .outerjoin(
            CustomerStage,
            (CustomerStage.workspace_id == Customer.workspace_id) & (CustomerStage.customer_id == Customer.id),
        )
        .where(Customer.id == any_(scoped.ids(list(customer_ids))))
        .where(*visible_customer_clauses(ctx))
    )
    found: dict[uuid.UUID, dict[str, dict[str, Any]]] = {}
    for row in await session.execute(stmt):
        values: dict[str, dict[str, Any]] = {"customer": {}, "workspace": {}}
        for index, path in enumerate(columns):
            root, *rest = path.split(".")
            group = values[root]
            for part in rest[:-1]:
                group = group.setdefault(part, {})
            value = row[index + 2]
            group[rest[-1]] = utc_text(value) if isinstance(value, datetime) else value
        if custom:
            stored = row.custom_fields or {}
            values["customer"]["custom_fields"] = {
                path.removeprefix(f"{CUSTOM_FIELDS_PATH}."): stored.get(path.removeprefix(f"{CUSTOM_FIELDS_PATH}."))
                for path in known
                if path.startswith(f"{CUSTOM_FIELDS_PATH}.")
            }
        found[row.id] = values
    return found
