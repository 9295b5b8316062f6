#!/usr/bin/env python3
"""Run every bench script (bench/bench_*.py) one after the other; `make bench` calls this.

Arguments after the script name are passed to every bench, e.g.
`bench/run_all.py --skip-search --duration 5`. Benches run sequentially because they share the
machine's cores with the server and PostgreSQL under test. Exits non-zero if any bench failed.
"""

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def discover() -> list[Path]:
    return sorted(BENCH_DIR.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    scripts = discover()
    if not scripts:
        print(f"no bench_*.py in {BENCH_DIR}")
        return 1
    failed: list[str] = []
    for script in scripts:
        print(f"=== {script.name} {' '.join(argv)}".rstrip(), flush=True)
        started = time.perf_counter()
        code = subprocess.run([sys.executable, str(script), *argv], check=False).returncode
        print(f"=== {script.name}: exit {code} after {time.perf_counter() - started:.0f} s\n", flush=True)
        if code != 0:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
