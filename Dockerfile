# Guanxi API image. Production runs against an external PostgreSQL: set DATABASE_URL.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/guanxi

# Dependencies first, in their own layer: code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py && pip install . && rm -rf app

COPY alembic.ini ./
COPY migrations ./migrations
COPY app ./app
# Editable: the code runs from /srv/guanxi, where alembic.ini and migrations/ live.
RUN pip install --no-deps -e .

RUN useradd --system --uid 10001 --home-dir /srv/guanxi guanxi && chown -R guanxi /srv/guanxi
USER guanxi

# Two API processes share their metrics through files here (prometheus_client's multiprocess mode).
ENV GUANXI_ENVIRONMENT=production \
    PROMETHEUS_MULTIPROC_DIR=/tmp/guanxi-metrics
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz')" || exit 1

# Run `guanxi migrate` once per release (a job or init container) before starting new replicas.
# The metrics directory starts empty: files of an earlier run would be added to this one's.
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec uvicorn app.asgi:app --host 0.0.0.0 --port 8000 --workers 2 --no-access-log --proxy-headers"]
