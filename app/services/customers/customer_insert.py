"""The one statement that writes a new customer: its code, row, identities, audit entry, event, the
referral it came with and the response stored for its Idempotency-Key.

Creates in a workspace queue on its code counter row (codes are gap-free) from the moment they take
a number until their transaction ends. Taking the number in the statement that writes everything
that carries the code, and running that statement as its own transaction, leaves no round trip to
the service inside the lock: it is held for the statement and its commit, inside PostgreSQL."""

from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import idempotency
from app.core.access import Caller
from app.core.ids import new_id
from app.core.prepared import PreparedStatement, autocommits
from app.models import Customer
from app.services.loyalty import referrals

_COLUMNS = tuple(
    column.key
    for column in Customer.__table__.columns
    if column.key not in ("code", "search_text", "search_bigrams", "deleted_at")
)
_JSON_COLUMNS = ("preferences", "custom_fields", "consent")
_INSERT = PreparedStatement(
    text(
        """
WITH counter AS (
    INSERT INTO customer_code_counters AS c (workspace_id, scope, last_value)
    VALUES (:workspace_id, :scope, 1)
    ON CONFLICT (workspace_id, scope) DO UPDATE SET last_value = c.last_value + 1
    RETURNING replace(c.scope, '{seq}', lpad(c.last_value::text, greatest(:width, length(c.last_value::text)), '0'))
        AS code
), customer AS (
    INSERT INTO customers ({columns}, code, search_text)
    SELECT {values}, counter.code,
        guanxi_customer_search_text(CAST(:name AS varchar), counter.code, :emails, :phones, CAST(:company AS varchar))
    FROM counter
    RETURNING code
), identities AS (
    INSERT INTO customer_identities (workspace_id, kind, value, customer_id)
    SELECT :workspace_id, wanted.kind, wanted.value, :id
    FROM customer, unnest(CAST(:identity_kinds AS text[]), CAST(:identity_values AS text[])) AS wanted (kind, value)
    ON CONFLICT DO NOTHING
    RETURNING 1
), audit AS (
    INSERT INTO audit_log (
        workspace_id, id, entity_type, entity_id, action, actor_type, actor_id, changes, occurred_at
    )
    SELECT :workspace_id, :audit_id, 'customer', :id, 'created', :actor_type, :actor_id,
        jsonb_set(CAST(:changes AS jsonb), '{code,after}', to_jsonb(counter.code)), :created_at
    FROM counter
), event AS (
    INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data)
    SELECT :workspace_id, :event_id, 'customer.created', :created_at, CAST(:actor AS jsonb),
        jsonb_set(CAST(:data AS jsonb), '{code}', to_jsonb(counter.code))
    FROM counter
), referral AS (
    INSERT INTO referrals (workspace_id, id, referrer_id, referee_id, code, status, referrer_points, referee_points,
        created_at, updated_at, version)
    SELECT :workspace_id, :referral_id, :referrer_id, :id, :referral_code, 'created', 0, 0, :created_at, :created_at, 1
    FROM counter
    WHERE CAST(:referral_id AS uuid) IS NOT NULL
), referral_event AS (
    INSERT INTO outbox_events (workspace_id, id, type, occurred_at, actor, data)
    SELECT :workspace_id, :referral_event_id, 'referral.created', :created_at, CAST(:actor AS jsonb),
        CAST(:referral_data AS jsonb)
    FROM counter
    WHERE CAST(:referral_id AS uuid) IS NOT NULL
), remembered AS (
    INSERT INTO idempotency_records (workspace_id, key, fingerprint, status_code, headers, body, created_at)
    SELECT :workspace_id, :idempotency_key, :fingerprint, :status_code, CAST(:response_headers AS jsonb),
        jsonb_set(CAST(:response_body AS jsonb), '{code}', to_jsonb(counter.code)), :created_at
    FROM counter
    WHERE CAST(:idempotency_key AS varchar) IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING key
), outcome AS (
    SELECT customer.code,
        (SELECT count(*) FROM identities) = :identity_count AS every_identity,
        CAST(:idempotency_key AS varchar) IS NULL OR EXISTS (SELECT FROM remembered) AS remembered
    FROM customer
)
SELECT code, every_identity,
    CASE WHEN :all_or_nothing AND NOT (every_identity AND remembered)
        THEN guanxi_refuse_write('a key the customer needs is taken') END AS refused
FROM outcome
""".replace("{columns}", ", ".join(_COLUMNS)).replace(
            "{values}", ", ".join(f"CAST(:{c} AS jsonb)" if c in _JSON_COLUMNS else f":{c}" for c in _COLUMNS)
        )
    )
)
# Raised by guanxi_refuse_write() (migration 0016).
_REFUSED = "GX409"


class Refused(Exception):
    """An all-or-nothing insert undid itself: an email, a phone or the Idempotency-Key is taken."""


async def insert(
    session: AsyncSession,
    ctx: Caller,
    customer: Customer,
    *,
    scope: str,
    width: int,
    changes: dict[str, Any],
    data: dict[str, Any],
    remember: tuple[idempotency.Claim, idempotency.StoredResponse] | None,
    all_or_nothing: bool,
    referral: referrals.NewReferral | None = None,
) -> bool:
    """Numbers and writes `customer` (its code is filled in here), its audit entry with `changes`,
    its `customer.created` event with `data`, the `referral` it came with (and `referral.created`),
    and the response to replay for the `remember` claim of an Idempotency-Key, the code set in each.

    Returns whether the customer got every email and phone (one another customer holds is left out);
    with `all_or_nothing` (the statement is its own transaction) such a key, or an Idempotency-Key
    another request stored first, undoes the whole statement instead and raises Refused."""
    columns = {name: getattr(customer, name) for name in _COLUMNS}
    params = {
        **columns,
        **{name: orjson.dumps(columns[name]).decode() for name in _JSON_COLUMNS},
        "scope": scope,
        "width": width,
        "identity_kinds": ["email"] * len(customer.emails) + ["phone"] * len(customer.phones),
        "identity_values": [*customer.emails, *customer.phones],
        "identity_count": len(customer.emails) + len(customer.phones),
        "audit_id": new_id(),
        "actor_type": ctx.actor_type,
        "actor_id": ctx.actor_id,
        "changes": orjson.dumps(changes).decode(),
        "event_id": new_id(),
        "actor": orjson.dumps(ctx.actor).decode(),
        "data": orjson.dumps(data).decode(),
        **_remembered(remember),
        **(referrals.NO_REFERRAL if referral is None else _referral(referral, customer)),
        "all_or_nothing": all_or_nothing,
    }
    try:
        if all_or_nothing and not await autocommits(session):
            # Inside a transaction a savepoint makes the statement undo only itself, as it does alone.
            async with session.begin_nested():
                row = await _INSERT.fetchrow(session, params)
        else:
            row = await _INSERT.fetchrow(session, params)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _REFUSED:
            raise Refused from exc
        raise
    assert row is not None, "the statement returns the customer it inserted"
    customer.code = row["code"]
    return bool(row["every_identity"])


def _referral(referral: referrals.NewReferral, customer: Customer) -> dict[str, Any]:
    params = referral.params(customer.id, customer.created_at)
    return {**params, "referral_data": orjson.dumps(params["referral_data"]).decode()}


def _remembered(remember: tuple[idempotency.Claim, idempotency.StoredResponse] | None) -> dict[str, Any]:
    if remember is None:
        return dict.fromkeys(("idempotency_key", "fingerprint", "status_code", "response_headers", "response_body"))
    claim, response = remember
    return {
        "idempotency_key": claim.key,
        "fingerprint": claim.fingerprint,
        "status_code": response.status_code,
        "response_headers": orjson.dumps(response.headers).decode(),
        "response_body": orjson.dumps(response.body).decode(),
    }
