"""RoleSet against PEFT on many seeded random scenarios: the cases, the failures, the worst errors.

    python benchmarks/roleset_vs_peft.py [--scenarios 84] [--seed 0] [--families llama,opt]
                                         [--dtypes float32,bfloat16,float16]

The longer run of the suite's differential test (``tests/loader/test_vs_peft.py`` runs a few
seeds): each scenario is a tiny random model of one family (Llama, Qwen2, Mistral, GPT-2, OPT,
Phi, GPT-NeoX), one dtype and three random PEFT adapters published to a temporary registry,
checked case by case (base, single roles, switches, mixtures, mixed batches, evictions). Float32:
error = max |RoleSet - PEFT| / max |PEFT|, bound 1e-4. Half precision: error = max |RoleSet -
float32 reference|, bound twice PEFT's own. "same": cases bit for bit equal to one of PEFT's
answers. Exits 1 when a case fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from registry.embedded import EmbeddedRegistry  # noqa: E402
from registry.settings import Settings  # noqa: E402
from tests.loader.differential import DTYPES, FAMILIES, Case, Scenario  # noqa: E402


def summary(cases: list[Case]) -> None:
    """Per dtype and kind: cases, failures, exact matches, the worst error and its bound."""
    groups: dict[tuple[str, str], list[Case]] = defaultdict(list)
    for case in cases:
        groups[case.dtype, case.kind].append(case)
    print(f"{'dtype':<9} {'kind':<7} {'cases':>6} {'failed':>6} {'same':>6} "
          f"{'worst error':>12} {'its bound':>10} {'ours/PEFT median':>17}")  # fmt: skip
    for (dtype, kind), group in sorted(groups.items()):
        worst = max(group, key=lambda c: c.error / c.bound)
        exact = sum(c.identical for c in group)
        ratios = [c.error / c.peft_error for c in group if c.peft_error]
        median = f"{statistics.median(ratios):17.3f}" if ratios else f"{'-':>17}"
        failed = sum(not c.ok for c in group)
        print(f"{dtype:<9} {kind:<7} {len(group):6d} {failed:6d} {exact:6d} "
              f"{worst.error:12.3g} {worst.bound:10.3g} {median}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", type=int, default=84)
    parser.add_argument("--seed", type=int, default=0, help="the first scenario's seed")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument(
        "--model-dtype-adapters",
        action="store_true",
        help="RoleSet(dtype=the model's dtype): half-precision LoRA maths, the old default",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # PEFT's and transformers' notes are not results
    torch.set_num_threads(1)  # 32-wide models: thread barriers cost more than the maths
    families, dtypes = tuple(args.families.split(",")), tuple(args.dtypes.split(","))
    cases: list[Case] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        settings = Settings(
            home=home, database_url=f"sqlite:///{home / 'c.db'}", store=(home / "b").as_uri()
        )
        with EmbeddedRegistry(settings) as registry:
            for seed in range(args.seed, args.seed + args.scenarios):
                scenario = Scenario(
                    seed, registry, Path(tmp) / "adapters", families=families, dtypes=dtypes
                )
                if args.model_dtype_adapters:
                    scenario.adapter_dtype = scenario.dtype
                found = scenario.run()
                cases += found
                for case in found:
                    if not case.ok:
                        print(f"FAIL {case}")
    failed = sum(not c.ok for c in cases)
    print(
        f"{args.scenarios} scenarios, {len(cases)} cases, {failed} failed, "
        f"{time.perf_counter() - start:.0f} s; families {args.families}; dtypes {args.dtypes}"
    )
    summary(cases)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
