"""Runtime configuration, read from the environment once per process."""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_JWT_SECRET = "guanxi-development-secret-change-me-0123456789"
# A Fernet key (32 url-safe base64 bytes) that is public, so it protects nothing: development and tests only.
DEVELOPMENT_SECRET_KEY = "Z3VhbnhpLWRldmVsb3BtZW50LWtleS1jaGFuZ2UtbWU="


def quarter_of_memory_mb() -> int:
    """A quarter of the memory this process may use: the machine's, or a container's smaller limit
    (cgroup v2 or v1); 128 MB where neither can be read."""
    limits = []
    if hasattr(os, "sysconf"):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            limits.append(int(value))
    return max(128, min(limits) // 4 // 2**20) if limits else 128


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GUANXI_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    data_dir: Path = Path(".data")
    # The embedded server's shared_buffers: a quarter of the machine's memory, PostgreSQL's own
    # rule of thumb. Its 128 MB default keeps little of a million-customer workspace in memory.
    embedded_shared_buffers_mb: int = Field(default_factory=quarter_of_memory_mb, ge=16)
    # A request holds its connection from first use to its end, so the pool must cover the requests
    # a process runs at once: a connection over `db_pool_size` is opened for one request and closed
    # after it, a new backend each time (at 10 under a 50-client load that churn took most of a core).
    db_pool_size: int = Field(default=20, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    # The customer read lane's own pool (app/http/read_lane.py), per process; 0 turns the lane off and
    # every customer read goes through the FastAPI routes.
    read_lane_pool_size: int = Field(default=10, ge=0, le=200)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    # Off: a ping is a round trip on every checkout. A connection a database restart killed fails one
    # request with 503, and the pool is then replaced whole.
    db_pre_ping: bool = False
    statement_timeout_ms: int = Field(default=5000, ge=100)
    # The API's transactions: one left open and silent this long is ended by the server, with its locks
    # (a client lost to a network partition never says goodbye). 0: no limit.
    idle_in_transaction_timeout_ms: int = Field(default=10_000, ge=0)
    retry_after_seconds: int = Field(default=2, ge=1)
    # Requests inside the application at once, per process; past it 503 at once (0: no limit).
    max_in_flight_requests: int = Field(default=64, ge=0)

    jwt_secret: str = DEVELOPMENT_JWT_SECRET
    jwt_issuer: str = "guanxi"
    jwt_audience: str = "guanxi-api"
    access_token_minutes: int = Field(default=15, ge=1)
    refresh_token_days: int = Field(default=30, ge=1)
    api_key_cache_seconds: float = Field(default=10.0, ge=0)

    webhook_allow_private_targets: bool = False
    webhook_connect_timeout_seconds: float = Field(default=3.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # An endpoint whose every attempt has failed for this long is disabled (its deliveries held).
    # Shorter than the retry schedule's last attempt, so a receiver that stays down has its
    # deliveries held before any runs out of attempts.
    webhook_disable_after_hours: float = Field(default=48.0, gt=0)
    webhook_secret_overlap_hours: float = Field(default=24.0, ge=0)
    # Webhook attempts in flight per worker, and of those, to one endpoint (None: half).
    worker_concurrency: int = Field(default=20, ge=1, le=500)
    webhook_endpoint_concurrency: int | None = Field(default=None, ge=1, le=500)
    # Touched by a running worker every few seconds; the image's healthcheck reads its age.
    worker_heartbeat_file: Path | None = None

    # Fernet keys (comma-separated) that encrypt stored channel secrets: the first encrypts, every one
    # decrypts, so a new key goes first and the old stays until `guanxi rotate-secrets` has run. Unset,
    # a development key outside production; in production the service runs without outreach secrets
    # (storing or opening one answers 503), so a deployment that sends nothing needs no key.
    secret_keys: str | None = None
    # Messages one worker sends at once, and how long a claim may take before its message is `unknown`.
    outreach_concurrency: int = Field(default=100, ge=1, le=2000)
    outreach_send_timeout_seconds: float = Field(default=15.0, gt=0)

    rate_limit_per_minute: int = Field(default=6000, ge=1)
    cors_origins: str = Field(default="", description="Comma-separated origins allowed by CORS; empty: none.")

    import_max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # Import uploads and export files are kept this long in the database, then purged.
    file_retention_days: int = Field(default=7, ge=1)

    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    default_phone_region: str = "CN"
    log_level: str = "INFO"

    @field_validator("secret_keys")
    @classmethod
    def _fernet_keys(cls, value: str | None) -> str | None:
        if value is None:
            return None
        keys = [key.strip() for key in value.split(",") if key.strip()]
        if not keys:
            raise ValueError("give at least one key (Fernet.generate_key())")
        for key in keys:
            try:
                Fernet(key.encode())
            except ValueError as exc:
                raise ValueError("each key must be 32 url-safe base64-encoded bytes (Fernet.generate_key())") from exc
        return ",".join(keys)

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> "Settings":
        if self.environment != "production":
            return self
        if self.jwt_secret == DEVELOPMENT_JWT_SECRET or len(self.jwt_secret) < 32:
            raise ValueError("GUANXI_JWT_SECRET must be set to 32+ random characters in production")
        # The embedded server lives in the process's own folder: in a container its data would go with
        # the container, and every process of a deployment would start its own.
        if not self.database_url:
            raise ValueError("DATABASE_URL must name the PostgreSQL server in production")
        if self.secret_keys is not None and DEVELOPMENT_SECRET_KEY in self.secret_keys.split(","):
            raise ValueError("GUANXI_SECRET_KEYS must be set to your own Fernet key(s) in production")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
