"""Prometheus metrics of the API process: request latency by route, pools, the job queue."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
IN_FLIGHT = Gauge("guanxi_requests_in_flight", "Requests inside the application now.", registry=REGISTRY)
POOL_CONNECTIONS = Gauge(
    "guanxi_db_pool_connections", "Database pool connections by pool and state.", ["pool", "state"], registry=REGISTRY
)
QUEUE_JOBS = Gauge(
    "guanxi_job_queue_jobs", "Jobs in the queue by entrypoint and status.", ["entrypoint", "status"], registry=REGISTRY
)
WEBHOOK_DELIVERIES = Gauge(
    "guanxi_webhook_deliveries", "Webhook deliveries by state (all workspaces).", ["state"], registry=REGISTRY
)
