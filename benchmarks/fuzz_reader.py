"""A long differential fuzz of the safetensors reader (oracle: safetensors) and config checker.

    python benchmarks/fuzz_reader.py [--seconds 300] [--examples N] [--target reader|config|...]

Runs rounds of Hypothesis examples with fresh seeds until the time or example budget is spent,
and prints the executions, what each side decided, and every failure (shrunk by Hypothesis):
an exception other than InvalidAdapter, or a file we accept that safetensors refuses or reads
differently. CI runs the same targets with a few hundred examples (tests/lora/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.lora import fuzzing  # noqa: E402

ROUND = 200


def _round(
    target: Callable[[object], str], strategy: st.SearchStrategy, tally: Counter, examples: int
) -> str | None:
    """One Hypothesis run of ``examples`` examples; the failure, shrunk, or None."""

    @seed(random.getrandbits(64))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: object) -> None:
        tally["executions"] += 1
        tally[target(value)] += 1

    try:
        run()
    except Exception as exc:  # noqa: BLE001 - report every failure and go on
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--examples", type=int, default=None, help="stop after this many")
    parser.add_argument("--target", choices=["reader", "config", "inspect", "all"], default="all")
    args = parser.parse_args()
    targets = {
        "reader": (fuzzing.check_reader, fuzzing.safetensors_bytes()),
        "config": (fuzzing.check_config, fuzzing.config_texts()),
        "inspect": (fuzzing.check_inspect, fuzzing.adapter_folders()),
    }
    chosen = list(targets) if args.target == "all" else [args.target]
    tallies = {name: Counter() for name in chosen}
    failures: list[tuple[str, str]] = []
    deadline = time.monotonic() + args.seconds
    start = time.monotonic()
    while time.monotonic() < deadline:
        for name in chosen:
            tally = tallies[name]
            left = None if args.examples is None else args.examples - tally["executions"]
            if left is not None and left <= 0:
                continue
            failure = _round(*targets[name], tally, min(ROUND, left or ROUND))
            if failure is not None:
                failures.append((name, failure))
                print(f"[{name}] FAILURE {failure[:2000]}", flush=True)
        if args.examples is not None and all(
            t["executions"] >= args.examples for t in tallies.values()
        ):
            break
    elapsed = time.monotonic() - start
    for name, tally in tallies.items():
        outcomes = ", ".join(f"{k}={v}" for k, v in sorted(tally.items()) if k != "executions")
        print(f"{name}: {tally['executions']} executions in {elapsed:.0f} s ({outcomes})")
    print(f"failures: {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
