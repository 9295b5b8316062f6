"""The container healthcheck, `python -m app.healthcheck`: exit 0 when healthy.

A worker writes its heartbeat file (GUANXI_WORKER_HEARTBEAT_FILE) while its loops run: where the file
exists, the process is a worker and is healthy while the file is fresh. Anywhere else the process is
the API, healthy when `/readyz` on its port answers 200. Only the standard library: it runs every few
seconds beside the service."""

import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# A worker touches its heartbeat every few seconds; this many seconds of silence means stuck.
STALE_AFTER_SECONDS = 60.0


def healthy() -> bool:
    heartbeat = Path(os.environ.get("GUANXI_WORKER_HEARTBEAT_FILE", "/tmp/guanxi-worker-heartbeat"))
    if heartbeat.exists():
        return time.time() - heartbeat.stat().st_mtime < STALE_AFTER_SECONDS
    port = os.environ.get("GUANXI_PORT", "8000")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    sys.exit(0 if healthy() else 1)
