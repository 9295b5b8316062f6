"""Prometheus metrics of the API: request latency by route, pools, the job queue.

Served by several processes (`guanxi serve --workers N`, `uvicorn --workers N`), the metrics live in
files under PROMETHEUS_MULTIPROC_DIR, set before this module is first imported, and `/metrics`
answers for all the processes at once, whichever one the scrape reaches."""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
REGISTRY = CollectorRegistry()

REQUEST_SECONDS = Histogram(
    "guanxi_request_seconds",
    "Request latency by method, route template and status class.",
    ["method", "route", "status"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0),
)
REQUESTS_SHED = Counter(
    "guanxi_requests_shed",
    "Requests answered 503 at once because the process was at its in-flight limit.",
    registry=REGISTRY,
)
READ_LANE_REQUESTS = Counter(
    "guanxi_read_lane_requests",
    "Customer reads the read lane took up: answered (200), unavailable (503: the database failed) or passed on.",
    ["outcome"],
    registry=REGISTRY,
)
# With several processes: in-flight requests and pool connections add up over the live processes
# (each pool as its process last reported it at a scrape); queue and delivery counts are read from
# the database at a scrape, so the latest reading stands.
IN_FLIGHT = Gauge(
    "guanxi_requests_in_flight", "Requests inside the application now.", registry=REGISTRY, multiprocess_mode="livesum"
)
POOL_CONNECTIONS = Gauge(
    "guanxi_db_pool_connections",
    "Database pool connections by pool and state.",
    ["pool", "state"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
QUEUE_JOBS = Gauge(
    "guanxi_job_queue_jobs",
    "Jobs in the queue by entrypoint and status.",
    ["entrypoint", "status"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
WEBHOOK_DELIVERIES = Gauge(
    "guanxi_webhook_deliveries",
    "Webhook deliveries by state (all workspaces).",
    ["state"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)


def exposition_registry() -> CollectorRegistry:
    """What `/metrics` reports: this process's registry, or every process's files when several serve."""
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
