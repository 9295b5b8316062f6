"""Version 1 of the API, mounted at /api/v1."""

from fastapi import APIRouter

from app.routers.v1 import api_keys, auth, custom_fields, customers, events, orders, users, value, webhooks

router = APIRouter(prefix="/api/v1")
for module in (auth, customers, custom_fields, orders, value, users, api_keys, events, webhooks):
    router.include_router(module.router)
