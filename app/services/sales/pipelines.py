"""Pipelines and their ordered stages: create, read, change (the stage list as a whole), delete.

Opportunities name a stage by (pipeline, code). A stage that any opportunity stands in (deleted ones
included, which keep their stage) cannot be removed or change kind: that would leave a deal in a
stage that does not exist, or turn open deals into won ones without a move. Writers of opportunities
hold the pipeline's row FOR SHARE and a change of its stages holds it FOR UPDATE, so a change and a
move into a stage it removes take turns."""

import uuid
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import clock, scoped
from app.core.access import Caller
from app.core.errors import Conflict, NotFound
from app.core.ids import new_id
from app.core.versions import check_version
from app.models import Opportunity, Pipeline, PipelineStage
from app.schemas.sales import PipelineIn, PipelinePatch, StageIn
from app.services.events import audit

_MISSING = "No pipeline with that id."
_STAGE_FIELDS = ("name", "probability", "kind", "stale_after_days", "lost_reason_required")


def _live(ctx: Caller) -> Select[Pipeline]:
    return scoped.in_workspace(Pipeline, ctx).where(Pipeline.deleted_at.is_(None))


async def stages_of(
    session: AsyncSession, ctx: Caller, pipeline_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[PipelineStage]]:
    rows = await session.scalars(
        select(PipelineStage)
        .where(PipelineStage.workspace_id == ctx.workspace_id, PipelineStage.pipeline_id.in_(pipeline_ids))
        .order_by(PipelineStage.pipeline_id, PipelineStage.position)
    )
    found: dict[uuid.UUID, list[PipelineStage]] = {pipeline_id: [] for pipeline_id in pipeline_ids}
    for stage in rows.all():
        found[stage.pipeline_id].append(stage)
    return found


def present(pipeline: Pipeline, stages: list[PipelineStage]) -> dict[str, Any]:
    return {
        "id": pipeline.id,
        "name": pipeline.name,
        "stages": [{"code": s.code, **{name: getattr(s, name) for name in _STAGE_FIELDS}} for s in stages],
        "created_at": pipeline.created_at,
        "updated_at": pipeline.updated_at,
        "version": pipeline.version,
    }


async def locked(session: AsyncSession, ctx: Caller, pipeline_id: uuid.UUID, *, missing: str = _MISSING) -> Pipeline:
    """A live pipeline held FOR SHARE until the transaction ends: its stages stay as read."""
    found = await session.scalar(_live(ctx).where(Pipeline.id == pipeline_id).with_for_update(read=True))
    if found is None:
        raise NotFound(missing)
    return found


async def list_all(session: AsyncSession, ctx: Caller) -> list[dict[str, Any]]:
    pipelines = list((await session.scalars(_live(ctx).order_by(Pipeline.id))).all())
    stages = await stages_of(session, ctx, [p.id for p in pipelines])
    return [present(p, stages[p.id]) for p in pipelines]


async def get(session: AsyncSession, ctx: Caller, pipeline_id: uuid.UUID) -> dict[str, Any]:
    pipeline = await scoped.one(session, _live(ctx).where(Pipeline.id == pipeline_id), missing=_MISSING)
    return present(pipeline, (await stages_of(session, ctx, [pipeline.id]))[pipeline.id])


def _stage_rows(ctx: Caller, pipeline_id: uuid.UUID, stages: list[StageIn]) -> list[PipelineStage]:
    return [
        PipelineStage(
            workspace_id=ctx.workspace_id,
            pipeline_id=pipeline_id,
            code=stage.code,
            position=position,
            **{name: getattr(stage, name) for name in _STAGE_FIELDS},
        )
        for position, stage in enumerate(stages)
    ]


def _described(stages: list[PipelineStage] | list[StageIn]) -> list[dict[str, Any]]:
    return [{"code": s.code, **{name: getattr(s, name) for name in _STAGE_FIELDS}} for s in stages]


async def create(session: AsyncSession, ctx: Caller, data: PipelineIn) -> dict[str, Any]:
    now = clock.now()
    pipeline = Pipeline(workspace_id=ctx.workspace_id, id=new_id(), name=data.name, created_at=now, updated_at=now)
    session.add(pipeline)
    await session.flush()
    stages = _stage_rows(ctx, pipeline.id, data.stages)
    session.add_all(stages)
    await session.flush()
    audit.record(
        session,
        ctx,
        entity_type="pipeline",
        entity_id=pipeline.id,
        action="created",
        changes={"name": {"before": None, "after": data.name}, "stages": {"before": None, "after": _described(stages)}},
    )
    return present(pipeline, stages)


async def _stages_in_use(session: AsyncSession, ctx: Caller, pipeline_id: uuid.UUID) -> set[str]:
    rows = await session.scalars(
        select(Opportunity.stage)
        .where(Opportunity.workspace_id == ctx.workspace_id, Opportunity.pipeline_id == pipeline_id)
        .distinct()
    )
    return set(rows.all())


async def update(
    session: AsyncSession, ctx: Caller, pipeline_id: uuid.UUID, patch: PipelinePatch, *, expected_version: int
) -> dict[str, Any]:
    """The name, and the stages as a whole list (stages kept by code keep their opportunities)."""
    pipeline = await scoped.one(session, _live(ctx).where(Pipeline.id == pipeline_id), missing=_MISSING, lock=True)
    check_version(pipeline.version, expected_version, what="pipeline")
    stages = (await stages_of(session, ctx, [pipeline.id]))[pipeline.id]
    changes: dict[str, Any] = {}
    if patch.name is not None and patch.name != pipeline.name:
        changes["name"] = {"before": pipeline.name, "after": patch.name}
        pipeline.name = patch.name
    if patch.stages is not None and _described(patch.stages) != _described(stages):
        in_use = await _stages_in_use(session, ctx, pipeline.id)
        wanted = {stage.code: stage for stage in patch.stages}
        removed = sorted(code for code in in_use if code not in wanted)
        if removed:
            raise Conflict(
                f"Opportunities stand in these stages, so they cannot be removed: {', '.join(removed)}.",
                stages_in_use=removed,
            )
        current = {stage.code: stage for stage in stages}
        rekinded = sorted(code for code in in_use if current[code].kind != wanted[code].kind)
        if rekinded:
            raise Conflict(
                f"Opportunities stand in these stages, so their kind cannot change: {', '.join(rekinded)}.",
                stages_in_use=rekinded,
            )
        changes["stages"] = {"before": _described(stages), "after": _described(patch.stages)}
        await session.execute(
            delete(PipelineStage).where(
                PipelineStage.workspace_id == ctx.workspace_id,
                PipelineStage.pipeline_id == pipeline.id,
                PipelineStage.code.not_in(list(wanted)),
            )
        )
        for row in _stage_rows(ctx, pipeline.id, patch.stages):
            await session.merge(row)
        await session.flush()
    audit.record_update(session, ctx, pipeline, entity_type="pipeline", changes=changes)
    await session.flush()
    return present(pipeline, (await stages_of(session, ctx, [pipeline.id]))[pipeline.id])


async def delete_pipeline(session: AsyncSession, ctx: Caller, pipeline_id: uuid.UUID, *, expected_version: int) -> None:
    """Soft delete; 409 while live opportunities are in it (move or delete them first)."""
    pipeline = await scoped.one(session, _live(ctx).where(Pipeline.id == pipeline_id), missing=_MISSING, lock=True)
    check_version(pipeline.version, expected_version, what="pipeline")
    live = await session.scalar(
        select(func.count())
        .select_from(Opportunity)
        .where(
            Opportunity.workspace_id == ctx.workspace_id,
            Opportunity.pipeline_id == pipeline.id,
            Opportunity.deleted_at.is_(None),
        )
    )
    if live:
        raise Conflict(f"{live} opportunities are in this pipeline; move or delete them first.", opportunities=live)
    now = clock.now()
    pipeline.deleted_at, pipeline.updated_at = now, now
    pipeline.version += 1
    audit.record(
        session,
        ctx,
        entity_type="pipeline",
        entity_id=pipeline.id,
        action="deleted",
        changes={"deleted_at": {"before": None, "after": now.isoformat()}},
    )
