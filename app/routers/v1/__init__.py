"""Version 1 of the API, mounted at /api/v1."""

from fastapi import APIRouter

from app.routers.v1 import (
    api_keys,
    audit,
    auth,
    automation_rules,
    channel_callbacks,
    channels,
    custom_fields,
    customers,
    events,
    exports,
    imports,
    interactions,
    lead_scoring,
    lifecycle,
    loyalty,
    message_templates,
    messages,
    opportunities,
    orders,
    pipelines,
    plans,
    referrals,
    relations,
    rewards,
    segments,
    suppressions,
    tickets,
    users,
    value,
    webhooks,
)

router = APIRouter(prefix="/api/v1")
# Routes are matched in this order, one pattern after another: the busiest resource comes first.
for module in (
    customers, auth, segments, custom_fields, orders, value, lifecycle, interactions, plans, tickets, users,
    api_keys, events, webhooks, imports, exports, audit, relations, message_templates, channels, messages,
    suppressions, channel_callbacks, automation_rules, loyalty, rewards, referrals,
    pipelines, opportunities, lead_scoring,
):  # fmt: skip
    router.include_router(module.router)
router.include_router(rewards.voucher_router)
router.include_router(events.changes)
router.include_router(tickets.public)
