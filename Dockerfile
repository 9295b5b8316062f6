# Guanxi: one image, two roles. The default command serves the API; `guanxi worker` runs the background
# worker; `guanxi migrate` is the one-shot to run once per release before new replicas start.
# Production needs DATABASE_URL and GUANXI_JWT_SECRET; without them every command stops at once.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/guanxi

# Dependencies in a layer of their own, built from pyproject.toml alone: an edit of the code or the
# docs rebuilds only the layers below.
COPY pyproject.toml ./
RUN mkdir app && touch app/__init__.py README.md && pip install . && pip uninstall -y guanxi && rm -rf app build

COPY alembic.ini README.md ./
COPY migrations ./migrations
COPY app ./app
# Editable: the code runs from /srv/guanxi, where alembic.ini and migrations/ live.
RUN pip install --no-deps -e . && rm -rf build

# A numeric user, so that Kubernetes' runAsNonRoot can verify it; it owns nothing of the code.
RUN groupadd --system --gid 10001 guanxi && useradd --system --uid 10001 --gid 10001 --no-create-home guanxi
USER 10001:10001

# API processes share their metrics through files here (prometheus_client's multiprocess mode);
# `guanxi serve` empties it before they start.
ENV GUANXI_ENVIRONMENT=production \
    PROMETHEUS_MULTIPROC_DIR=/tmp/guanxi-metrics \
    GUANXI_WORKER_HEARTBEAT_FILE=/tmp/guanxi-worker-heartbeat
EXPOSE 8000
# The API is healthy when it is ready (database reachable, schema at head); the worker when its
# heartbeat is fresh. The check is the standard library only.
HEALTHCHECK --start-period=30s --interval=10s --timeout=3s --retries=3 CMD ["python", "-m", "app.healthcheck"]

CMD ["guanxi", "serve", "--host", "0.0.0.0", "--workers", "2", "--no-worker", "--no-demo", "--no-migrate"]
