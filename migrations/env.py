"""Alembic environment: async engine, the app's models as the target, one transaction per run."""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.db import resolve_database_url
from app.core.settings import get_settings
from app.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url")
    return str(url) if url else resolve_database_url(get_settings(), stop_embedded_at_exit=False)


# Expression indexes whose reflected text Alembic cannot match to the model (COLLATE on an
# expression); their DDL is written by hand in the migrations.
UNCOMPARED_INDEXES = {"ix_customers_workspace_id_name_prefix"}


def _include_object(_obj: object, name: str | None, type_: str, _reflected: bool, _compare_to: object) -> bool:
    # The job queue's tables belong to pgqueuer; migrations install them, models do not describe them.
    if type_ == "table" and name is not None and name.startswith("pgqueuer"):
        return False
    return not (type_ == "index" and name in UNCOMPARED_INDEXES)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_server_default=True,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        await connection.run_sync(_run)
        return
    engine = create_async_engine(_url())
    async with engine.connect() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
