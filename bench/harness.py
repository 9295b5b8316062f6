"""Shared bench plumbing: server subprocesses, wrk runs, percentiles and machine facts."""

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk_report.lua"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A bench step failed; the message says which and why."""


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    status_errors: int
    # CPU time the measured server process spent per request (user + system), so a reader can tell
    # how much of the shared 2-core budget each request costs beyond what wrk and PostgreSQL take.
    server_cpu_us_per_request: float | None = None
    # Whole-machine CPU over the run: busy near 100% means the cores were the limit; steal is time the
    # hypervisor gave to other guests, which makes runs on a shared VM noisy.
    machine_busy_pct: float | None = None
    machine_steal_pct: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "wrk is not installed: the bench needs it as its load generator. "
            "On Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y wrk"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """A server subprocess with its output in a log file; stop() is safe to call twice."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path, port: int) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group, so Ctrl-C of the bench reaches it only through stop().
            start_new_session=True,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BenchError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(self.base_url + path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise BenchError(f"{self.name} did not answer {path} within {timeout:.0f} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the server process and the live processes under it (a
        server with several workers)."""
        stats = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            # Of stat(5): ppid is field 4, utime and stime fields 14 and 15; fields[0] here is field 3.
            stats[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        tree, grown = {self.process.pid}, True
        while grown:
            under = {pid for pid, (ppid, _) in stats.items() if ppid in tree} - tree
            tree |= under
            grown = bool(under)
        return sum(stats[pid][1] for pid in tree if pid in stats) / CLOCK_TICKS

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGTERM first: uvicorn shuts down gracefully and closes its database pool.
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@contextmanager
def running(
    name: str, argv: Sequence[str], env: dict[str, str], log_path: Path, port: int, health_path: str
) -> Iterator[ServerProcess]:
    server = ServerProcess(name, argv, env, log_path, port)
    try:
        server.wait_healthy(health_path)
        yield server
    finally:
        server.stop()


def run_wrk(
    url: str,
    path: str,
    *,
    ids_file: Path | None,
    headers: dict[str, str],
    threads: int,
    connections: int,
    seconds: float,
    server: ServerProcess | None = None,
    script: Path = WRK_SCRIPT,
) -> WrkResult:
    """`script` must print the WRK_RESULT line of wrk_report.lua and take its arguments."""
    argv = [
        require_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
    ]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv += [url, "--", path, str(ids_file) if ids_file else ""]
    cpu_before = server.cpu_seconds() if server else 0.0
    machine_before = _machine_cpu()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    machine_after = _machine_cpu()
    cpu_after = server.cpu_seconds() if server else 0.0
    busy_pct, steal_pct = _busy_and_steal(machine_before, machine_after)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    values = {k: int(v) for k, v in (pair.split("=", 1) for pair in line.split()[1:])}
    seconds_run = values["duration_us"] / 1e6
    errors = sum(values[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    requests = values["requests"]
    return WrkResult(
        requests=requests,
        seconds=round(seconds_run, 3),
        rps=round(requests / seconds_run, 1) if seconds_run else 0.0,
        p50_ms=values["p50_us"] / 1000,
        p90_ms=values["p90_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        max_ms=values["max_us"] / 1000,
        errors=errors,
        status_errors=values["status_errors"],
        server_cpu_us_per_request=round((cpu_after - cpu_before) * 1e6 / requests, 1) if server and requests else None,
        machine_busy_pct=busy_pct,
        machine_steal_pct=steal_pct,
    )


def machine_cpu() -> list[int]:
    """A sample of the machine's CPU counters, for busy_and_steal() over an interval."""
    return _machine_cpu()


def busy_and_steal(before: list[int], after: list[int]) -> tuple[float | None, float | None]:
    """Whole-machine busy and steal percentages between two machine_cpu() samples."""
    return _busy_and_steal(before, after)


def _machine_cpu() -> list[int]:
    """The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return []
    return [int(x) for x in first.split()[1:9]]


def _busy_and_steal(before: list[int], after: list[int]) -> tuple[float | None, float | None]:
    if len(before) < 8 or len(after) < 8:
        return None, None
    delta = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(delta)
    if total <= 0:
        return None, None
    idle = delta[3] + delta[4]
    return round(100 * (total - idle) / total, 1), round(100 * delta[7] / total, 1)


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine_facts() -> dict[str, Any]:
    cpu_model = ""
    memory = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "uname": _uname_a() if shutil.which("uname") else " ".join(platform.uname()),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_total": memory,
        "python": sys.version.split()[0],
    }


def _uname_a() -> str:
    return subprocess.run(["uname", "-a"], capture_output=True, text=True, check=False).stdout.strip()
