"""`guanxi serve --workers N`: several API processes, with metrics that count all of them."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.receiver import free_port

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def _serving(database_url: str, tmp_path: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    guanxi = str(Path(sys.executable).parent / "guanxi")
    argv = [guanxi, "serve", "--no-worker", "--no-demo", "--port", str(port), *extra]
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail("the API processes did not become ready:\n" + (tmp_path / "serve.log").read_text())
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture
def two_processes(database_url: str, tmp_path: Path) -> Iterator[str]:
    with _serving(database_url, tmp_path, "--workers", "2") as base:
        yield base


def test_one_process_makes_the_metrics_directory_it_is_given(database_url: str, tmp_path: Path) -> None:
    """The image names a metrics directory that only exists once a process made it."""
    with _serving(database_url, tmp_path, "--no-migrate") as base:
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200
        metrics = httpx.get(base + "/metrics", timeout=5)
    assert metrics.status_code == 200 and "guanxi_request_seconds" in metrics.text
    assert (tmp_path / "metrics").is_dir()


def _healthz_count(metrics: str) -> float:
    match = re.search(r'guanxi_request_seconds_count\{method="GET",route="/healthz",status="2xx"\} (\S+)', metrics)
    return float(match.group(1)) if match else 0.0


def test_metrics_add_up_every_process(two_processes: str, tmp_path: Path) -> None:
    # A new connection per request: the kernel spreads them over both processes' accept queues.
    for _ in range(40):
        with httpx.Client(base_url=two_processes, timeout=5) as client:
            assert client.get("/healthz").status_code == 200
    # Each process keeps its figures in files named after its pid: both answered some of them.
    assert len({path.name for path in (tmp_path / "metrics").glob("histogram_*.db")}) == 2
    # Whichever process answers the scrape reports the requests of both.
    readings = set()
    for _ in range(6):
        with httpx.Client(base_url=two_processes, timeout=5) as client:
            readings.add(_healthz_count(client.get("/metrics").text))
    assert readings == {40.0}


def test_the_worker_process_beats_and_stops_cleanly_on_sigterm(database_url: str, tmp_path: Path) -> None:
    """As the image runs it: a metrics directory named but not made, and a heartbeat file."""
    heartbeat = tmp_path / "heartbeat"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "GUANXI_WORKER_HEARTBEAT_FILE": str(heartbeat),
    }
    guanxi = str(Path(sys.executable).parent / "guanxi")
    with (tmp_path / "worker.log").open("wb") as log:
        process = subprocess.Popen([guanxi, "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not heartbeat.exists() and time.monotonic() < deadline:
                assert process.poll() is None, (tmp_path / "worker.log").read_text()
                time.sleep(0.2)
            assert heartbeat.exists(), (tmp_path / "worker.log").read_text()
            time.sleep(3)  # a round connects and the heartbeat keeps beating
            assert process.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.time() - heartbeat.stat().st_mtime < 5
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    assert code == 0, (tmp_path / "worker.log").read_text()
    assert not heartbeat.exists()
    assert "Traceback" not in (tmp_path / "worker.log").read_text()
