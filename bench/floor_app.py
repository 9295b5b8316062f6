"""The floor: the least a Python ASGI app can do to serve the customers the service serves.

Bare Starlette + an asyncpg pool, the same SQL shape and columns as the service (scoped by workspace,
live rows only), orjson out, no auth and no ORM. bench_customers.py runs it with uvicorn (one worker,
no access log) and divides the service's throughput by this one's.

Configured by the environment: FLOOR_DSN (an asyncpg DSN) and FLOOR_WORKSPACE_ID.
"""

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# The columns of app/services/customers/customer_output.py CUSTOMER_COLUMNS, in the same order.
COLUMNS = (
    "id, code, kind, name, emails, phones, company, title, gender, birthday, country, province, city, "
    "district, street, postcode, source, tags, owner_id, preferences, custom_fields, consent, notes, "
    "created_at, updated_at, deleted_at, version"
)
GET_SQL = f"SELECT {COLUMNS} FROM customers WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL"
# The service fetches one row more than the page to know whether a next page exists.
LIST_SQL = (
    f"SELECT {COLUMNS} FROM customers WHERE workspace_id = $1 AND deleted_at IS NULL "
    "ORDER BY created_at DESC, id DESC LIMIT $2"
)
PAGE_SIZE = 20
# The service's default pool size (GUANXI_DB_POOL_SIZE).
POOL_SIZE = 20

DSN = os.environ.get("FLOOR_DSN", "")
WORKSPACE_ID = uuid.UUID(os.environ.get("FLOOR_WORKSPACE_ID", str(uuid.UUID(int=0))))

_pool: asyncpg.Pool | None = None


def _default(value: Any) -> Any:
    # asyncpg returns its own UUID subclass, which orjson does not take as a UUID.
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json(content: Any, status_code: int = 200) -> Response:
    body = orjson.dumps(content, default=_default, option=orjson.OPT_UTC_Z)
    return Response(body, status_code=status_code, media_type="application/json")


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb as objects, as the service's SQLAlchemy dialect decodes it, so both emit the same JSON.
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(type_name, encoder=orjson.dumps, decoder=orjson.loads, schema="pg_catalog")


def _pool_or_fail() -> asyncpg.Pool:
    assert _pool is not None, "the lifespan opened the pool"
    return _pool


async def get_customer(request: Request) -> Response:
    customer_id: uuid.UUID = request.path_params["customer_id"]
    row = await _pool_or_fail().fetchrow(GET_SQL, customer_id, WORKSPACE_ID)
    if row is None:
        return _json({"title": "Not found"}, status_code=404)
    return _json(dict(row))


async def list_customers(_request: Request) -> Response:
    rows = await _pool_or_fail().fetch(LIST_SQL, WORKSPACE_ID, PAGE_SIZE + 1)
    return _json({"items": [dict(row) for row in rows[:PAGE_SIZE]], "next_cursor": None})


async def healthz(_request: Request) -> Response:
    return _json({"status": "ok"})


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    global _pool
    _pool = await asyncpg.create_pool(DSN, min_size=POOL_SIZE, max_size=POOL_SIZE, init=_init_connection)
    try:
        yield
    finally:
        await _pool.close()


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/customers", list_customers),
        Route("/customers/{customer_id:uuid}", get_customer),
    ],
    lifespan=lifespan,
)
