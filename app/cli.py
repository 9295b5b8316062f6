"""The `guanxi` command: serve, migrate, embedded database control, workspaces, keys and demo data."""

import asyncio
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import embedded_db, migrations
from app.core.access import Scope, system_caller
from app.core.db import create_engine, create_sessionmaker, resolve_database_url
from app.core.settings import get_settings

cli = typer.Typer(help="Guanxi CRM API.", no_args_is_help=True, add_completion=False)
db_cli = typer.Typer(help="The embedded PostgreSQL server (used when DATABASE_URL is unset).")
cli.add_typer(db_cli, name="db")
console = Console(soft_wrap=True)

DEMO_SLUG = "demo"
# For the processes that run imports (worker, `guanxi import`): the import's reading thread holds
# the GIL nearly all the time, and at Python's default switch interval the event loop waited that
# long for it at every step of a batch (docs/performance.md, bulk data).
SWITCH_INTERVAL_SECONDS = 0.0005
DEMO_EMAIL = "admin@demo.guanxi.dev"
# Enough that every list, search, report and segment example returns something.
DEMO_CUSTOMERS = 300


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    demo: Annotated[bool, typer.Option(help="Create the demo workspace on first start.")] = True,
    worker: Annotated[bool, typer.Option(help="Run the background worker in this process.")] = True,
    workers: Annotated[int, typer.Option(min=1, max=64, help="API processes; more than 1 needs --no-worker.")] = 1,
    migrate: Annotated[
        bool, typer.Option(help="Upgrade the schema first; production runs `guanxi migrate` once per release.")
    ] = True,
) -> None:
    """Migrate, create the demo workspace on first start, and serve the API (with the worker)."""
    if workers > 1 and worker:
        raise typer.BadParameter(
            "several API processes need the worker as a process of its own: add --no-worker and run `guanxi worker`",
            param_hint="--workers",
        )
    settings = get_settings()
    url = resolve_database_url(settings)
    if migrate:
        migrations.upgrade(url)
    if demo:
        _print_demo(asyncio.run(_ensure_demo(url)), host, port)
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        _empty_directory(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    if workers == 1:
        from app.main import create_app

        uvicorn.run(
            create_app(settings, database_url=url, run_worker=worker),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
        )
        return
    # The processes start afresh from app.asgi: they find the database (the embedded one included)
    # and the directory their metrics share in the environment.
    os.environ["DATABASE_URL"] = url
    own_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="guanxi-metrics-")))
    _empty_directory(metrics_dir)
    try:
        uvicorn.run("app.asgi:app", host=host, port=port, workers=workers, log_config=None, access_log=False)
    finally:
        _empty_directory(metrics_dir)
        if own_dir:
            metrics_dir.rmdir()


def _empty_directory(path: Path) -> None:
    """Metrics files of earlier processes would be added to the new ones' (prometheus_client's rule:
    the directory is emptied before the processes start)."""
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        child.unlink()


@cli.command("worker")
def run_worker() -> None:
    """Run the background worker (webhooks, messages, imports and exports, value, segments, schedules) until
    SIGINT/SIGTERM."""
    from app.core import logs
    from app.workers.worker import Worker

    settings = get_settings()
    logs.configure(settings.log_level)
    url = resolve_database_url(settings)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)

    async def main() -> None:
        worker = Worker(settings, url)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.request_stop)
        await worker.run()

    asyncio.run(main())


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    down: Annotated[bool, typer.Option("--down", help="Downgrade to the revision instead.")] = False,
) -> None:
    """Upgrade the database schema to a revision (default: the latest), or downgrade with --down.
    Upgrading to a revision older than the current one changes nothing."""
    from app.core import logs

    settings = get_settings()
    # A one-shot of a release (a container, a Kubernetes Job): its output is a log line like the
    # service's.
    logs.configure(settings.log_level)
    url = resolve_database_url(settings, stop_embedded_at_exit=False)
    if down:
        migrations.downgrade(url, revision)
    else:
        migrations.upgrade(url, revision)
    logging.getLogger("guanxi.migrate").info("schema migrated", extra={"revision": revision, "down": down})


@cli.command("create-workspace")
def create_workspace(
    slug: str,
    name: str,
    admin_email: Annotated[str, typer.Option(help="Email of the first admin.")],
    admin_password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create a workspace (tenant) and its first admin user."""

    async def run(url: str) -> str:
        from app.services.identity import workspaces

        async with _session(url) as session:
            workspace, _ = await workspaces.create(
                session, slug=slug, name=name, admin_email=admin_email, admin_password=admin_password
            )
            await session.commit()
            return str(workspace.id)

    workspace_id = asyncio.run(run(resolve_database_url(get_settings(), stop_embedded_at_exit=False)))
    console.print(f"[green]workspace {slug} created: {workspace_id}")


@cli.command("rotate-secrets")
def rotate_secrets() -> None:
    """Seal every channel's secrets again under the first key of GUANXI_SECRET_KEYS. Rotation: put a
    new key first in the list (keep the old ones after it), restart, run this; then the old keys
    can leave the list."""

    async def run(url: str) -> int:
        from app.services.outreach import channels

        async with _session(url) as session:
            count = await channels.reseal_all(session, get_settings())
            await session.commit()
            return count

    count = asyncio.run(run(resolve_database_url(get_settings(), stop_embedded_at_exit=False)))
    console.print(f"[green]{count} channel(s) sealed with the newest key")


@cli.command("create-api-key")
def create_api_key(
    workspace: Annotated[str, typer.Argument(help="Workspace slug.")],
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[list[Scope] | None, typer.Option(help="Repeat per scope; default all.")] = None,
) -> None:
    """Create an API key and print it once."""

    async def run(url: str) -> str:
        from app.services.identity import api_keys, workspaces

        async with _session(url) as session:
            found = await workspaces.find_by_slug(session, workspace)
            if found is None:
                raise typer.BadParameter(f"no workspace '{workspace}'")
            _, key = await api_keys.issue(session, found.id, name=name, scopes=scope or list(Scope))
            await session.commit()
            return key

    key = asyncio.run(run(resolve_database_url(get_settings(), stop_embedded_at_exit=False)))
    console.print(f"API key (shown once): [bold]{key}")


@cli.command("seed-demo")
def seed_demo(
    customers: Annotated[int, typer.Option(help="How many demo customers to add.")] = 200,
) -> None:
    """Create the demo workspace if missing and add demo customers (with orders, contacts, tickets)."""
    from app.services.identity import demo

    url = resolve_database_url(get_settings(), stop_embedded_at_exit=False)
    migrations.upgrade(url)
    credentials = asyncio.run(_ensure_demo(url))

    async def run() -> int:
        async with _session(url) as session:
            added = await demo.seed(session, DEMO_SLUG, customers)
            await session.commit()
            return added

    added = asyncio.run(run())
    _print_demo(credentials, "127.0.0.1", 8000)
    console.print(f"[green]{added} demo customers added")


@cli.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A .csv or .xlsx file.")],
    workspace: Annotated[str, typer.Option(help="Workspace slug.")],
    map_: Annotated[list[str], typer.Option("--map", help="column=field; repeat per column.")],
    type_: Annotated[str, typer.Option("--type", help="customers, interactions or orders.")] = "customers",
    mode: Annotated[str, typer.Option(help="create_only or upsert.")] = "create_only",
    match_on: Annotated[str | None, typer.Option(help="email, phone or code (for a customer upsert).")] = None,
) -> None:
    """Import a file with the API's engine (COPY and set-based merge), with a progress bar."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from app.core.db import create_asyncpg_pool
    from app.services.bulk import import_jobs
    from app.services.identity import workspaces

    if type_ not in ("customers", "interactions", "orders"):
        raise typer.BadParameter("customers, interactions or orders", param_hint="--type")
    mapping = dict(pair.split("=", 1) for pair in map_)
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    settings = get_settings()
    url = resolve_database_url(settings, stop_embedded_at_exit=False)
    total = sum(1 for _ in file.open("rb")) - 1 if file.suffix.lower() == ".csv" else None

    async def run() -> None:
        engine = create_engine(url, settings)
        pool = await create_asyncpg_pool(url, settings, size=3)
        try:
            async with create_sessionmaker(engine)() as session:
                found = await workspaces.find_by_slug(session, workspace)
                if found is None:
                    raise typer.BadParameter(f"no workspace '{workspace}'")
                job = await import_jobs.create(
                    session,
                    system_caller(found.id),
                    filename=file.name,
                    upload=file,
                    mapping=mapping,
                    mode=mode,
                    match_on=match_on,
                    kind=type_,
                )
                await session.commit()
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed:,} rows"),
                TimeElapsedColumn(),
            )
            with Progress(*columns, console=console) as progress:
                bar = progress.add_task(file.name, total=total)
                finished = await import_jobs.process(
                    create_sessionmaker(engine),
                    pool,
                    found.id,
                    job.id,
                    on_progress=lambda j: progress.update(bar, completed=j.rows_read),
                )
            console.print(
                f"{finished.status}: {finished.rows_read:,} rows read, {finished.created:,} created, "
                f"{finished.updated:,} updated, {finished.skipped:,} unchanged, {finished.failed:,} rejected"
            )
            if finished.failed:
                console.print(f"rejected rows: GET /api/v1/imports/{finished.id}/errors")
        finally:
            await pool.close()
            await engine.dispose()

    asyncio.run(run())


@db_cli.command("start")
def db_start() -> None:
    """Start the embedded server and leave it running."""
    server = embedded_db.start(
        get_settings().data_dir, stop_at_exit=False, shared_buffers_mb=get_settings().embedded_shared_buffers_mb
    )
    server.ensure_database(embedded_db.DEFAULT_DATABASE)
    console.print(f"embedded PostgreSQL running: DATABASE_URL={server.url()}")


@db_cli.command("stop")
def db_stop() -> None:
    """Stop the embedded server."""
    stopped = embedded_db.stop(get_settings().data_dir)
    console.print("stopped" if stopped else "not running")


@db_cli.command("status")
def db_status() -> None:
    """Say whether the embedded server is running."""
    settings = get_settings()
    running = embedded_db.is_running(settings.data_dir)
    console.print(
        f"embedded PostgreSQL at {embedded_db.pgdata_path(settings.data_dir)}: {'running' if running else 'stopped'}"
    )
    raise typer.Exit(0 if running else 3)


@asynccontextmanager
async def _session(url: str) -> AsyncIterator[AsyncSession]:
    engine = create_engine(url, get_settings())
    try:
        async with create_sessionmaker(engine)() as session:
            yield session
    finally:
        await engine.dispose()


def _credentials_file() -> Path:
    return get_settings().data_dir / "demo-credentials.json"


async def _ensure_demo(url: str) -> dict[str, str]:
    """First start: a demo workspace, its admin and an admin API key, kept in the data folder so later
    starts can print them again. Nothing is created when the workspace exists."""
    from app.models import Workspace
    from app.services.identity import api_keys, demo, workspaces

    path = _credentials_file()
    async with _session(url) as session:
        exists = await session.scalar(select(func.count()).where(Workspace.slug == DEMO_SLUG))
        if exists:
            return dict(json.loads(path.read_text())) if path.exists() else {}
        password = secrets.token_urlsafe(12)
        workspace, admin = await workspaces.create(
            session, slug=DEMO_SLUG, name="Demo workspace", admin_email=DEMO_EMAIL, admin_password=password
        )
        _, key = await api_keys.issue(
            session, workspace.id, name="demo admin key", scopes=list(Scope), created_by=admin.id
        )
        await demo.seed(session, DEMO_SLUG, DEMO_CUSTOMERS)
        await session.commit()
    credentials = {"workspace": DEMO_SLUG, "email": DEMO_EMAIL, "password": password, "api_key": key}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(credentials, indent=2))
    path.chmod(0o600)
    return credentials


def _print_demo(credentials: dict[str, str], host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    console.rule("Guanxi")
    console.print(f"API docs:   {base}/docs")
    if credentials:
        console.print(f"Workspace:  {credentials['workspace']}")
        console.print(f"Admin:      {credentials['email']} / {credentials['password']}")
        console.print(f"API key:    {credentials['api_key']}")
        console.print(f"Try:        curl -H 'X-API-Key: {credentials['api_key']}' {base}/api/v1/customers")
    console.rule()


def main() -> None:
    """Bad configuration ends the command at once with one log line and exit status 2, before any
    server, worker or database starts."""
    try:
        get_settings()
    except ValidationError as exc:
        from app.core import logs

        logs.configure("INFO")
        problems = "; ".join(
            f"{_variable(error['loc'])}{error['msg'].removeprefix('Value error, ')}" for error in exc.errors()
        )
        logging.getLogger("guanxi.config").error("invalid configuration: %s", problems)
        sys.exit(2)
    # prometheus_client writes a process's figures under this directory from the first metric it
    # defines, whatever the command (the image names it for every role).
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    cli()


def _variable(loc: tuple[int | str, ...]) -> str:
    """The environment variable a settings error is about, as the operator set it."""
    if not loc:
        return ""
    name = str(loc[0])
    return "DATABASE_URL: " if name == "DATABASE_URL" else f"GUANXI_{name.upper()}: "
