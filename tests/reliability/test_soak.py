"""A bounded load test and a short soak in one: ``benchmarks/soak.py`` for 10 s against
``stance serve --workers 2`` (resolve + download mix over loopback). No errors, every worker
takes load, and the servers' memory stays bounded. The 10-minute soak is the script's default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_RSS_RATIO = 1.5  # a leak of a few KiB per request doubles RSS within a minute here


def test_load_on_two_workers_without_errors_or_memory_growth() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "soak.py"),
            "--minutes=0.17",
            "--workers=2",
            "--threads=2",
            "--warmup=3",
            "--interval=2",
            "--layers=2",
            "--max-requests=20000",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["errors"] == 0, result["first_errors"]
    assert result["requests"] >= 100
    first, last = result["samples"][0], result["samples"][-1]
    assert len(last["rss_mb"]) >= 3  # the supervisor and two workers
    busy = [b - a for a, b in zip(first["cpu_s"], last["cpu_s"], strict=False) if b - a >= 0.1]
    assert len(busy) >= 2, result["samples"]  # both workers served, not one
    assert result["rss_ratio"] < MAX_RSS_RATIO, result["samples"]
