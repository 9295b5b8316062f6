"""Run Alembic from the code (the CLI, start-up of `serve`, and the test bootstrap)."""

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.core.paths import ALEMBIC_INI


def alembic_config(database_url: str) -> Config:
    config = Config(str(ALEMBIC_INI))
    config.attributes["url"] = database_url
    config.attributes["configure_logger"] = False
    return config


def head() -> str:
    """The revision this release's schema is at: what `/readyz` and the worker wait for."""
    revision = ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()
    assert revision is not None, "the migrations have a head"
    return revision


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def check(database_url: str) -> None:
    """Raises if the models and the migrations disagree."""
    command.check(alembic_config(database_url))
