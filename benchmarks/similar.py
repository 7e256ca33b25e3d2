"""What "similar adapters" costs at 1,000 published adapters, against exact brute force.

    python benchmarks/similar.py [--adapters 1000] [--database-url URL]

Publishes N synthetic q/v rank-8 adapters (30 layers, SmolLM2-135M's 576/192 widths) into a
temporary registry, then times, in this one run: the sketch pass over every candidate, the
whole ``similar()`` call (sketch pass + exact re-scoring of the best ones from their weights),
and brute force (exact cosine against every candidate's weights). Medians of repeated runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synthetic import HIDDEN, LAYERS, R, write_adapter  # noqa: E402

from registry.catalog import analysis, queries  # noqa: E402
from registry.embedded import EmbeddedRegistry  # noqa: E402
from registry.lora.fingerprint import similarity  # noqa: E402
from registry.settings import Settings  # noqa: E402


def synth(folder: Path, rng: np.random.Generator, family: np.ndarray, mix: float) -> Path:
    """An adapter whose lora_B mixes a shared family direction with its own noise."""

    def factors(layer: int, _module: str, out: int) -> tuple[np.ndarray, np.ndarray]:
        own = rng.standard_normal((out, R)).astype(np.float32)
        shared = family[layer, : out * R].reshape(out, R)
        return family[layer, : R * HIDDEN].reshape(R, HIDDEN), (
            mix * shared + (1 - mix) * own
        ) * 0.01

    return write_adapter(folder, factors)


def median_s(fn: Callable[[], object], repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapters", type=int, default=1000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        settings = Settings(home=home, database_url=args.database_url)
        registry = EmbeddedRegistry(settings)
        families = [rng.standard_normal((LAYERS, HIDDEN * R)).astype(np.float32) for _ in range(10)]
        start = time.perf_counter()
        for i in range(args.adapters):
            folder = synth(home / "src" / str(i), rng, families[i % 10], mix=rng.uniform(0, 0.9))
            registry.publish(folder, f"role-{i:05d}@1.0.0")
        publish_s = time.perf_counter() - start
        limit = 10
        with registry.sessions() as session:
            sketch_s = median_s(
                lambda: queries.similar_candidates(session, "role-00000", limit=limit), args.repeat
            )
            full_s = median_s(
                lambda: analysis.similar(
                    session, registry.store, "role-00000", limit=limit, max_weights_bytes=10**9
                ),
                args.repeat,
            )
            top = analysis.similar(
                session, registry.store, "role-00000", limit=limit, max_weights_bytes=10**9
            )

            def brute() -> list[tuple[float, str]]:
                _, mine = analysis.load_spec(
                    session, registry.store, "role-00000", max_weights_bytes=10**9
                )
                scores = []
                for i in range(1, args.adapters):
                    _, theirs = analysis.load_spec(
                        session, registry.store, f"role-{i:05d}", max_weights_bytes=10**9
                    )
                    scores.append((similarity(mine, theirs).cosine, f"role-{i:05d}"))
                return sorted(scores, reverse=True)[:limit]

            start = time.perf_counter()
            exact_top = brute()
            brute_s = time.perf_counter() - start
        registry.close()
    found = [s.name for s in top]
    recall = len(set(found) & {name for _, name in exact_top}) / limit
    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"{args.adapters} adapters ({LAYERS} layers q/v r={R}, {backend}); "
        f"published in {publish_s:.0f} s; median of {args.repeat}"
    )
    print(f"  sketch pass over all candidates   {sketch_s * 1000:9.1f} ms")
    print(
        f"  similar(limit={limit}) incl. exact    {full_s * 1000:9.1f} ms   "
        f"(re-scores {analysis.RESCORE * limit} from their weights)"
    )
    print(f"  brute force, exact over all        {brute_s * 1000:9.1f} ms   (one run)")
    print(f"  speed-up vs brute force            {brute_s / full_s:9.1f}x")
    print(f"  top-{limit} agreement with brute force  {recall:.0%}")


if __name__ == "__main__":
    main()
