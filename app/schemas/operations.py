"""Probe bodies: /healthz and /readyz."""

from typing import Literal

from pydantic import BaseModel, Field


class Alive(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    migration: str = Field(description="The database's Alembic revision, the head this release expects.")
