"""The whole OpenAPI contract, property-based: schemathesis generates valid and invalid requests for
every operation, sends them as a user of every role, an API key, and callers without or with bad
credentials, and runs every check it has on each answer (the body's schema, its media type, the
declared headers, the status) and ours (no header the response does not declare).

`GUANXI_CONTRACT_EXAMPLES` bounds the examples generated per operation, each sent as every caller
but the users, who take the examples in turn, one role each (5 in `make test`, where the run is
also derandomized, so it repeats exactly). `make fuzz` sets `GUANXI_CONTRACT_FUZZ=1` and a large
count: every example as every user too, a fresh seed each run, and schemathesis's coverage phase
(boundary values, every missing or malformed part, unexpected methods), which is deterministic
but sends a few hundred requests per operation and caller whatever the count."""

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any, get_args

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from pydantic_core.core_schema import ErrorType
from schemathesis.python import asgi as schemathesis_asgi
from sqlalchemy import delete

from app.core.access import Role
from app.core.settings import get_settings
from app.main import create_app
from app.models import Workspace
from app.services.identity import tokens
from tests.factories import make_api_key, make_tenant
from tests.response_headers import undeclared

EXAMPLES = int(os.environ.get("GUANXI_CONTRACT_EXAMPLES", "5"))
FUZZ = os.environ.get("GUANXI_CONTRACT_FUZZ") == "1"
EXAMPLE_COUNT = itertools.count()

CONFIG = schemathesis.Config.from_dict(
    {
        "phases": {"coverage": {"enabled": FUZZ}},
        "checks": {
            # Every check is on by default, but max_response_time, which needs a limit: timings are
            # the benches' business, tests never assert them. Two expectations are widened, each
            # for a status the document states and a schema cannot rule out in advance:
            "positive_data_acceptance": {
                "expected-statuses": [
                    *("2xx", "3xx", "401", "403", "404", "409", "429", "5xx"),
                    # An If-Match that does not name the current version (RFC 9110).
                    "412",
                    # Rules no JSON Schema states: opaque cursors, distinct ids, dates in order,
                    # references to configured stages and segments. `rules_beyond_the_document_only` keeps
                    # this from hiding a document that promises what the validator refuses.
                    "422",
                ]
            },
            # A missing If-Match is 428 Precondition Required (RFC 6585), which the check does not know.
            "missing_required_header": {"expected-statuses": ["400", "401", "403", "406", "415", "422", "428"]},
        },
    }
)

# The document needs no database: it is read from a throwaway app at collection, so that each
# operation is a test of its own. The requests go to an app with a database (`contract_app`).
schema = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_app(get_settings(), database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none"),
    config=CONFIG,
)


# pydantic's own error types, but `value_error`: what our validators and services raise.
PYDANTIC_ERROR_TYPES = frozenset(get_args(ErrorType)) - {"value_error"}


@schemathesis.check
def rules_beyond_the_document_only(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """A request the document calls valid may be refused (422) only by a rule the document cannot
    state: a `value_error` of our validators or a domain error type (`invalid_filter`...). One of
    pydantic's own types (missing, too long, not a decimal...) means the document promises what
    the validator refuses."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code != 422:
        return
    body: dict[str, Any] = response.json()
    disagreements = [error for error in body.get("errors") or [] if error["type"] in PYDANTIC_ERROR_TYPES]
    assert not disagreements, f"schema-valid input refused by the validator: {disagreements}"


@schemathesis.check
def headers_are_declared(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> None:
    """Every header a response sends is declared on it (`response_headers_conformance` checks the
    declared ones, not the others): a generated client reads only what the document names."""
    definition = case.operation.responses.find_by_status_code(response.status_code)
    if definition is None:
        return
    extra = undeclared(response.headers, (name for name, _ in definition.headers.items()))
    assert not extra, f"{response.status_code} sends headers its response does not declare: {extra}"


@pytest.fixture(scope="module")
def contract_app(database_url: str) -> Iterator[FastAPI]:
    """A second app on the test database, driven by schemathesis from its own event loop thread. Its
    requests commit for real, in a workspace of their own."""
    # The run sends thousands of requests a minute as one caller.
    unthrottled = get_settings().model_copy(update={"rate_limit_per_minute": 10**9})
    application = create_app(unthrottled, database_url=database_url)
    yield application
    # Its lifespan (started by schemathesis) disposes the engines while the database still runs.
    schemathesis_asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
async def identities(app: FastAPI) -> AsyncIterator[dict[str, dict[str, str]]]:
    async with app.state.sessions() as session:
        tenant = await make_tenant(session)
        key = await make_api_key(session, tenant)
        await session.commit()
    # Issued for a day: `make fuzz` outlasts the usual quarter of an hour.
    day = get_settings().model_copy(update={"access_token_minutes": 24 * 60})

    def bearer(role: Role) -> dict[str, str]:
        user = tenant.users[role.value]
        token, _ = tokens.issue(
            day,
            token_type="access",
            user_id=user.id,
            workspace_id=user.workspace_id,
            role=role,
            team_id=user.team_id,
        )
        return {"Authorization": f"Bearer {token}"}

    yield {
        "admin_key": {"X-API-Key": key},
        **{f"{role.value}_user": bearer(role) for role in Role},
        "no_credentials": {},
        "bad_credentials": {"Authorization": "Bearer not.a.token"},
    }
    async with app.state.sessions() as session:
        await session.execute(delete(Workspace).where(Workspace.id == tenant.id))
        await session.commit()


def test_the_callers_are_who_they_claim(identities: dict[str, dict[str, str]], contract_app: FastAPI) -> None:
    """The contract run would prove little if every caller were turned away at the door."""
    operation = schema["/api/v1/customers"]["GET"]
    statuses = {
        identity: operation.Case().call(headers=dict(headers), app=contract_app).status_code
        for identity, headers in identities.items()
    }
    assert statuses == {
        "admin_key": 200,
        **{f"{role.value}_user": 200 for role in Role},
        "no_credentials": 401,
        "bad_credentials": 401,
    }


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not FUZZ,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_contract(case: schemathesis.Case[Any], identities: dict[str, dict[str, str]], contract_app: FastAPI) -> None:
    # Every example goes out as the key and the callers without or with bad credentials, and as one
    # user, each role in turn, so that the short run too sends every operation as every role; in
    # `make fuzz` as every user too.
    users = [identity for identity in identities if identity.endswith("_user")]
    turn = users[next(EXAMPLE_COUNT) % len(users)]
    for identity, headers in identities.items():
        if identity in users and identity != turn and not FUZZ:
            continue
        try:
            # A copy: the transport adds its own headers to the mapping it is given.
            case.call_and_validate(headers=dict(headers), app=contract_app)
        except Exception as failure:
            failure.add_note(f"Sent as {identity}.")
            raise
