"""Lead scoring: /api/v1/lead-scoring, the rules that score customers (the score is the filter field `lead_score`)."""

from fastapi import APIRouter
from starlette.responses import Response

from app.routers.deps import CustomersRead, IfMatch, Reader, Session, ValueAdmin
from app.routers.responses import errors, resource_response
from app.schemas.lead_scoring import LeadScoringIn, LeadScoringOut
from app.services.segments import lead_scoring

router = APIRouter(tags=["lead scoring"])


@router.get("/lead-scoring", response_model=LeadScoringOut, responses=errors(), summary="The lead scoring rules")
async def get_lead_scoring(ctx: CustomersRead, session: Reader) -> Response:
    """Points per filter condition and the half-life of decaying rules; version 0 (no rules, every
    score 0) until saved."""
    return resource_response(await lead_scoring.get_rules(session, ctx))


@router.put(
    "/lead-scoring",
    response_model=LeadScoringOut,
    responses=errors(412, 428),
    summary="Replace the lead scoring rules",
)
async def put_lead_scoring(data: LeadScoringIn, ctx: ValueAdmin, session: Session, if_match: IfMatch) -> Response:
    """Admins only. The whole document, with the ETag read as If-Match (`*` or `0` for the first
    save). Each condition is a filter of the segments' language; an unknown field is a 422 whose
    `loc` points at it, and nothing is stored. A change is applied by a recompute the workers start
    at once (`recompute_pending` until it has run); scores are also recomputed daily, for the decay.
    Audited."""
    return resource_response(await lead_scoring.put_rules(session, ctx, data, expected_version=if_match))
