"""Imports and exports: queued jobs, one at a time per worker, each worker claiming a different one.

Taking the next job is a reaction: an upload or an export request notifies at its commit, and the
person who sent it is waiting. A worker that finishes a job takes the next at once, so a queue
drains without a timer. Jobs whose worker is gone are found by a schedule, and so are the stored
files past their retention."""

import logging

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.services.bulk import exports, import_jobs
from app.services.files import stored_files
from app.workers.registry import RETRY_SECONDS, Registry, Resources

logger = logging.getLogger(__name__)

INTERRUPTED_JOBS = "scheduler.interrupted_bulk_jobs"
INTERRUPTED_JOBS_CRON = "* * * * *"
EXPIRED_FILES = "scheduler.expired_files"
EXPIRED_FILES_CRON = "17 * * * *"


def register(registry: Registry, r: Resources) -> None:
    # Retried on its own after a failure: no schedule takes queued jobs.
    registry.react("imports and exports", lambda: run_next(r.sessions, r.import_pool), retry_seconds=RETRY_SECONDS)
    registry.schedule(INTERRUPTED_JOBS, INTERRUPTED_JOBS_CRON, lambda: recover_interrupted(r.sessions, r.import_pool))
    registry.schedule(EXPIRED_FILES, EXPIRED_FILES_CRON, lambda: purge_expired_files(r.sessions))


async def run_next(sessions: async_sessionmaker[AsyncSession], import_pool: asyncpg.Pool) -> bool:
    """The oldest queued export, or else the oldest queued import, run to its end. False when
    none was queued."""
    async with sessions() as session:
        export = await exports.claim_next(session)
        await session.commit()
    if export is not None:
        done = await exports.process(sessions, export.id, export.workspace_id)
        logger.info("export", extra={"job_id": str(done.id), "rows": done.rows})
        return True
    claimed = await import_jobs.claim_next(import_pool)
    if claimed is None:
        return False
    job = await import_jobs.process(sessions, import_pool, *claimed)
    # Not "created": that key is a LogRecord attribute, and logging refuses to overwrite it.
    logger.info("import", extra={"job_id": str(job.id), "status": job.status, "customers_created": job.created})
    return True


async def recover_interrupted(sessions: async_sessionmaker[AsyncSession], import_pool: asyncpg.Pool) -> int:
    """Jobs left running by a worker that is gone: an export is queued again (it only reads, and
    the workers are woken for it); an import is failed (its committed batches stay, and the person
    uploads again). Returns how many were found."""
    async with sessions() as session:
        requeued = await exports.requeue_orphans(session)
        await session.commit()
    for workspace_id, job_id in requeued:
        logger.warning(
            "export interrupted; queued again", extra={"job_id": str(job_id), "workspace_id": str(workspace_id)}
        )
    failed = await import_jobs.fail_orphans(import_pool)
    for workspace_id, job_id in failed:
        logger.warning("import interrupted", extra={"job_id": str(job_id), "workspace_id": str(workspace_id)})
    return len(requeued) + len(failed)


async def purge_expired_files(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Uploads and exports past their retention (GUANXI_FILE_RETENTION_DAYS) removed; their jobs stay
    and say the file is gone."""
    async with sessions() as session:
        purged = await stored_files.purge_expired(session)
        await session.commit()
    if purged:
        logger.info("expired files removed", extra={"files": purged})
    return purged
