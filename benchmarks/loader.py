"""RoleSet against PEFT on a SmolLM2-135M-shaped model: switch, load, mix and mixed batches.

    python benchmarks/loader.py [--device cuda] [--repeat N] [--only load mix ...]

Every figure is measured in this one run and is the median of N samples; the contenders of
a row are sampled in turn, so a noisy, shared machine slows them alike. The model is
LlamaForCausalLM built from SmolLM2-135M's config with random weights (same shapes and cost
as the real one); the roles are rank-8 LoRA on q_proj/v_proj (the stance adapters), plus one
rank-64 all-linear adapter for the load rows, saved by PEFT itself and published to a
temporary local registry.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy
import peft
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from examples.stances import BASE_MODEL as HUB_ID  # noqa: E402
from examples.stances import SMOLLM2_135M  # noqa: E402
from registry.embedded import EmbeddedRegistry  # noqa: E402
from registry.loader import RoleSet  # noqa: E402
from registry.settings import Settings  # noqa: E402

COUNTS = (2, 10, 50)
SECTIONS = ("switch", "load", "mix", "batch", "forward", "half")


def smollm2_shaped(device: str) -> LlamaForCausalLM:
    config = copy.deepcopy(SMOLLM2_135M)
    config.name_or_path = HUB_ID
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device).eval()


def make_adapters(
    model: LlamaForCausalLM, root: Path, count: int, *, r: int = 8, targets: object = None
) -> list[Path]:
    """``count`` LoRA adapters with different random weights, each saved by PEFT itself."""
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets or ["q_proj", "v_proj"])
    peft_model = get_peft_model(copy.deepcopy(model).cpu(), config)
    lora = [p for name, p in peft_model.named_parameters() if "lora_" in name]
    folders = []
    for i in range(count):
        generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for p in lora:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
        folder = root / f"role-{i}"
        peft_model.save_pretrained(folder)
        saved = json.loads((folder / "adapter_config.json").read_text())
        saved["base_model_name_or_path"] = HUB_ID
        (folder / "adapter_config.json").write_text(json.dumps(saved))
        folders.append(folder)
    return folders


@dataclass
class Timed:
    """A contender: ``fn`` timed over ``number`` calls, or once then an untimed ``undo``."""

    fn: Callable[[], object]
    number: int = 1
    undo: Callable[[], object] | None = None

    def sample(self) -> float:
        start = time.perf_counter()
        for _ in range(self.number):
            self.fn()
        elapsed = (time.perf_counter() - start) / self.number
        if self.undo is not None:
            self.undo()
        return elapsed


def medians(*contenders: Timed, repeat: int) -> list[float]:
    """Median seconds per call of each contender, sampled in turn so noise hits all alike."""
    # The harness holds several models and PEFT's module trees: freeze them, so a collection
    # triggered inside a sample does not scan millions of objects that neither side made.
    gc.collect()
    gc.freeze()
    for contender in contenders:
        contender.sample()  # warm-up
    samples: list[list[float]] = [[] for _ in contenders]
    for _ in range(repeat):
        for contender, taken in zip(contenders, samples, strict=True):
            taken.append(contender.sample())
    return [statistics.median(taken) for taken in samples]


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:12.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:12.3f} ms"


def row(what: str, ours: float, theirs: float, target: str = "") -> None:
    print(f"{what:<48} {fmt(ours)} {fmt(theirs)} {theirs / ours:10.1f}x  {target}")


def floor_row(what: str, ours: float, floor: float) -> None:
    """Ours against a physical floor: the ratio is ours / floor (1.0x: nothing on top)."""
    print(f"{what:<48} {fmt(ours)} {fmt(floor)} {ours / floor:8.2f}x fl  within 2x: <= 2x")


class Bench:
    """One model under RoleSet and an identical copy under PEFT, 50 published rank-8 roles."""

    def __init__(self, device: str, repeat: int, root: Path) -> None:
        self.device, self.repeat, self.root = device, repeat, root
        self.cuda = device.startswith("cuda")
        self.model = smollm2_shaped(device)
        folders = make_adapters(self.model, root / "adapters", max(COUNTS))
        home = root / "home"
        self.registry = EmbeddedRegistry(
            Settings(
                home=home, database_url=f"sqlite:///{home / 'c.db'}", store=(home / "b").as_uri()
            )
        )
        self.names = [f"role-{i}" for i in range(len(folders))]
        for name, folder in zip(self.names, folders, strict=True):
            self.registry.publish(folder, f"{name}@1.0.0")
        self.cached = {n: self.registry.fetch(f"{n}@1.0.0") for n in self.names}
        self.roles = RoleSet(self.model, registry=self.registry)
        first = self.names[0]
        self.peft = PeftModel.from_pretrained(
            copy.deepcopy(self.model), self.cached[first], adapter_name=first
        ).eval()

    def timed(self, fn: Callable[[], object]) -> Callable[[], object]:
        """``fn`` followed by a device synchronisation, so GPU work is inside the timing."""

        def run() -> object:
            out = fn()
            if self.cuda:
                torch.cuda.synchronize()
            return out

        return run

    def resident(self, count: int) -> list[str]:
        """The first ``count`` roles, made resident on both sides (once)."""
        names = self.names[:count]
        for name in names:
            if name not in self.roles:
                self.roles.load(name)
            if name not in self.peft.peft_config:
                self.peft.load_adapter(self.cached[name], adapter_name=name)
        return names

    def switch(self) -> None:
        for count in COUNTS:
            names = self.resident(count)
            turn = itertools.cycle(names).__next__
            ours, theirs = medians(
                Timed(lambda turn=turn: self.roles.switch(turn()), number=1000),
                Timed(lambda turn=turn: self.peft.set_adapter(turn()), number=5),
                repeat=self.repeat,
            )
            row(f"switch, {count:2d} resident (PEFT set_adapter)", ours, theirs, ">= 50x, flat")

    def load(self, label: str, spec: str, folder: Path) -> None:
        """``RoleSet.load`` of a cached version against PEFT and the physical floors: the file
        read and copied to the device once (pinned: a lock's versions need no catalog), plus
        one ``resolve`` of the spec (by spec), each measured in this run."""
        roles = RoleSet(copy.deepcopy(self.model), registry=self.registry)
        pinned = RoleSet(copy.deepcopy(self.model), registry=self.registry)
        resolved = (self.registry.resolve(spec), folder)
        pinned._source = lambda _: resolved  # no catalog query: what a stance.lock will give
        reference = PeftModel.from_pretrained(copy.deepcopy(self.model), folder).eval()
        weights = folder / "adapter_model.safetensors"
        size = weights.stat().st_size
        staging = torch.empty(size, dtype=torch.uint8, pin_memory=self.cuda)
        target = torch.empty(size, dtype=torch.uint8, device=self.device)

        def floor() -> None:
            with weights.open("rb", buffering=0) as fh:
                fh.readinto(staging.numpy().data)
            if self.cuda:
                target.copy_(staging, non_blocking=True)
            else:  # one serial memcpy: torch's threaded copy costs more than the bytes here
                numpy.copyto(target.numpy(), staging.numpy())

        t_spec, t_pinned, t_peft, t_floor, t_resolve = medians(
            Timed(self.timed(lambda: roles.load(spec, name="x")), undo=lambda: roles.unload("x")),
            Timed(self.timed(lambda: pinned.load(spec, name="x")), undo=lambda: pinned.unload("x")),
            Timed(
                self.timed(lambda: reference.load_adapter(folder, adapter_name="x")),
                undo=lambda: reference.delete_adapter("x"),
            ),
            Timed(self.timed(floor)),
            Timed(lambda: self.registry.resolve(spec)),
            repeat=self.repeat,
        )
        print(
            f"  {label}: {size / 1e6:.1f} MB, {len(pinned._sites)} modules, "
            f"read + copy {fmt(t_floor).strip()}, one resolve {fmt(t_resolve).strip()}"
        )
        row("  load spec, cached (PEFT load_adapter)", t_spec, t_peft, ">= 3x")
        floor_row("  load spec, cached (floor: read+copy+resolve)", t_spec, t_floor + t_resolve)
        floor_row("  load pinned, no catalog (floor: read+copy)", t_pinned, t_floor)
        for each in (roles, pinned):
            each.close()

    def loads(self) -> None:
        self.load("rank-8 q/v", "role-1@1.0.0", self.cached["role-1"])
        big = make_adapters(self.model, self.root / "big", 1, r=64, targets="all-linear")[0]
        self.registry.publish(big, "big@1.0.0")
        self.load("rank-64 all-linear", "big@1.0.0", self.registry.fetch("big@1.0.0"))

    def mix(self) -> None:
        a, b = self.resident(2)
        ours, theirs = medians(
            Timed(self.timed(lambda: self.roles.mix({a: 0.7, b: 0.3})), number=20),
            Timed(
                self.timed(lambda: self.peft.add_weighted_adapter([a, b], [0.7, 0.3], "m", "cat")),
                undo=lambda: self.peft.delete_adapter("m"),
            ),
            repeat=self.repeat,
        )
        row("mix of two rank-8 (add_weighted_adapter cat)", ours, theirs, ">= 10x")
        self.peft.add_weighted_adapter([a, b], [0.7, 0.3], "m", combination_type="cat")
        self.peft.set_adapter("m")
        ids = torch.randint(0, 49152, (2, 16), device=self.device)
        diff = (self.roles.forward(ids).logits - self.peft(ids).logits).abs().max().item()
        print(f"  (mixture logits vs PEFT cat: max |diff| = {diff:.1e})")

    def batches(self) -> None:
        self.batch(32)
        self.batch(1)

    def batch(self, length: int) -> None:
        names = self.resident(4)
        rows = [names[i % 4] if i % 5 else "__base__" for i in range(8)]
        ids = torch.randint(0, 49152, (8, length), device=self.device)
        groups = {name: [i for i, r in enumerate(rows) if r == name] for name in rows}

        def looped() -> None:
            for name, picked in groups.items():
                self.roles.switch(name)
                self.model(ids[picked])

        mixed, loop, peft = medians(
            Timed(self.timed(lambda: self.roles.forward(ids, adapter_names=rows))),
            Timed(self.timed(looped)),
            Timed(self.timed(lambda: self.peft(ids, adapter_names=rows))),
            repeat=self.repeat,
        )
        what = f"mixed batch 8x{length}, 4 roles + base"
        row(f"{what} (loop per role)", mixed, loop)
        row(f"{what} (PEFT adapter_names)", mixed, peft)

    def single(self) -> None:
        self.resident(1)
        ids = torch.randint(0, 49152, (8, 32), device=self.device)
        self.roles.switch(self.names[0])
        self.peft.set_adapter(self.names[0])
        ours, theirs = medians(
            Timed(self.timed(lambda: self.model(ids))),
            Timed(self.timed(lambda: self.peft(ids))),
            repeat=self.repeat,
        )
        row("forward 8x32, one role active (PEFT)", ours, theirs, "no slower")

    def half(self) -> None:
        """A bfloat16 model: float32 adapters (the default, PEFT's numerics) cost against
        bfloat16 ones (``dtype=torch.bfloat16``), and against PEFT's default on the same model."""
        model = copy.deepcopy(self.model).to(torch.bfloat16)
        name = self.names[0]
        ids = torch.randint(0, 49152, (8, 32), device=self.device)
        default = RoleSet(copy.deepcopy(model), registry=self.registry)
        narrow = RoleSet(copy.deepcopy(model), registry=self.registry, dtype=torch.bfloat16)
        for roles in (default, narrow):
            roles.load(name)
            roles.switch(name)
        reference = PeftModel.from_pretrained(copy.deepcopy(model), self.cached[name]).eval()
        ours, bf16, theirs = medians(
            Timed(self.timed(lambda: default.model(ids))),
            Timed(self.timed(lambda: narrow.model(ids))),
            Timed(self.timed(lambda: reference(ids))),
            repeat=self.repeat,
        )
        row("forward 8x32 bf16 model: f32 vs bf16 adapters", ours, bf16, "cost of the numerics")
        row("forward 8x32 bf16 model: f32 adapters (PEFT)", ours, theirs, "no slower")
        for roles in (default, narrow):
            roles.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--only", choices=SECTIONS, nargs="+", default=SECTIONS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # PEFT's notes on adapter names are not results
    torch.set_grad_enabled(False)
    name = (
        torch.cuda.get_device_name(args.device)
        if args.device.startswith("cuda")
        else platform.machine()
    )
    print(
        f"{args.device} ({name}), torch {torch.__version__}, peft {peft.__version__}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, median of {args.repeat}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(args.device, args.repeat, Path(tmp))
        print(f"{'':<48} {'RoleSet':>15} {'other':>15} {'ratio':>11}  target")
        sections: dict[str, Callable[[], None]] = {
            "switch": bench.switch,
            "load": bench.loads,
            "mix": bench.mix,
            "batch": bench.batches,
            "forward": bench.single,
            "half": bench.half,
        }
        for section in args.only:
            sections[section]()
        bench.registry.close()


if __name__ == "__main__":
    main()
