"""RoleSet against PEFT on seeded random scenarios: the differential test's engine (issue 21).

A scenario is one tiny random model of a family (hidden 32, 2 layers), a model dtype, and three
adapters with random LoRA options (rank 1-16, alpha, rsLoRA, rank/alpha patterns,
layers_to_transform, exclude_modules, list, regex and all-linear targets, file dtype), saved by
PEFT and published to a real registry. Each case runs the same thing through RoleSet and PEFT:
the base model, each role, switches, weighted mixtures (PEFT with the adapters active together,
each scaling times its weight, and add_weighted_adapter "cat" where that is the same), mixed
batches and evictions. Float32 cases must agree within 1e-4 relative. Half-precision cases are
judged against a float32 reference (PEFT on the same base weights in float32): RoleSet's error
may be at most twice PEFT's own. ``tests/loader/test_vs_peft.py`` runs a few seeds in the suite;
``benchmarks/roleset_vs_peft.py --scenarios N`` runs many.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from registry.interfaces import AdapterRegistry
from registry.loader import BASE_NAME, RoleSet
from tests.factories import make_adapter

LAYERS, HIDDEN, VOCAB = 2, 32, 128
ADAPTERS = 3
RELATIVE = 1e-4  # float32: max |RoleSet - PEFT| over max |PEFT|
HALF_FACTOR = 2.0  # half precision: RoleSet's error against float32 at most 2x PEFT's own
Answer = tuple[torch.Tensor, torch.Tensor | None]  # PEFT in the model's dtype, and in float32
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DECODER = {
    "hidden_size": HIDDEN,
    "intermediate_size": 2 * HIDDEN,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 4,
    "vocab_size": VOCAB,
    "max_position_embeddings": 64,
    "initializer_range": 0.1,
}
_LLAMA_LIKE = {**_DECODER, "num_key_value_heads": 2}
_LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    """A transformers architecture as the test builds it: tiny, random, float32."""

    name: str
    build: Callable[[], PreTrainedModel]
    linear: tuple[str, ...]
    flat: frozenset[str] = frozenset()  # modules that see (batch * seq, d): PEFT's batches fail
    conv1d: bool = False


FAMILIES = {
    family.name: family
    for family in (
        Family("llama", lambda: LlamaForCausalLM(LlamaConfig(**_LLAMA_LIKE)), _LLAMA_LINEAR),
        Family("qwen2", lambda: Qwen2ForCausalLM(Qwen2Config(**_LLAMA_LIKE)), _LLAMA_LINEAR),
        Family("mistral", lambda: MistralForCausalLM(MistralConfig(**_LLAMA_LIKE)), _LLAMA_LINEAR),
        Family(
            "gpt2",
            lambda: GPT2LMHeadModel(
                GPT2Config(
                    n_embd=HIDDEN,
                    n_layer=LAYERS,
                    n_head=4,
                    vocab_size=VOCAB,
                    n_positions=64,
                    initializer_range=0.1,
                    bos_token_id=0,
                    eos_token_id=0,
                )
            ),
            ("c_attn", "c_proj", "c_fc"),
            conv1d=True,
        ),
        Family(
            "opt",
            lambda: OPTForCausalLM(
                OPTConfig(
                    hidden_size=HIDDEN,
                    ffn_dim=2 * HIDDEN,
                    num_hidden_layers=LAYERS,
                    num_attention_heads=4,
                    vocab_size=VOCAB,
                    max_position_embeddings=64,
                    word_embed_proj_dim=HIDDEN,
                    init_std=0.1,
                )
            ),
            ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
            flat=frozenset({"fc1", "fc2"}),
        ),
        Family(
            "phi",
            lambda: PhiForCausalLM(PhiConfig(**_DECODER)),
            ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
        ),
        Family(
            "gpt_neox",
            lambda: GPTNeoXForCausalLM(GPTNeoXConfig(**_DECODER)),
            ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
        ),
    )
}


@dataclass(frozen=True)
class Case:
    """One comparison: ``error`` against ``bound`` (relative in float32, absolute in half)."""

    scenario: int
    family: str
    dtype: str
    kind: str
    error: float
    bound: float
    peft_error: float = 0.0  # half precision: PEFT's own distance to the float32 reference
    identical: bool = False  # bit for bit one of PEFT's answers

    @property
    def ok(self) -> bool:
        return self.error <= self.bound

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAIL"
        return (
            f"seed {self.scenario} {self.family}/{self.dtype} {self.kind}: error {self.error:.3g}"
            f" (bound {self.bound:.3g}, PEFT's own {self.peft_error:.3g}) {verdict}"
        )


def random_lora(rng: random.Random, family: Family) -> dict[str, Any]:
    """LoraConfig options drawn at random: the variety that PEFT users save."""
    pick = rng.sample(family.linear, rng.randint(1, len(family.linear)))
    lora: dict[str, Any] = {
        "r": rng.choice([1, 2, 4, 8, 16, rng.randint(1, 16)]),
        "lora_alpha": rng.choice([1, 8, 16, 32]),
        "use_rslora": rng.random() < 0.3,
        "fan_in_fan_out": family.conv1d,
    }
    roll = rng.random()
    if roll < 0.15:
        lora["target_modules"] = "all-linear"
    elif roll < 0.3:
        lora["target_modules"] = rf".*\.({'|'.join(pick)})"
    else:
        lora["target_modules"] = pick
        if rng.random() < 0.25:
            lora["layers_to_transform"] = [rng.randrange(LAYERS)]
        elif rng.random() < 0.15:
            lora["exclude_modules"] = rf".*\.0\..*\b{rng.choice(pick)}"
    if rng.random() < 0.3:
        lora["rank_pattern"] = {rng.choice(pick): rng.randint(1, 16)}
    if rng.random() < 0.3:
        lora["alpha_pattern"] = {rng.choice(pick): rng.choice([2, 8, 64])}
    return lora


@torch.no_grad()
def logits(forward: Callable[..., Any], ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    return forward(ids, **kwargs).logits.float()


@contextmanager
def weighted(ref: PeftModel, weights: dict[str, float]) -> Iterator[None]:
    """PEFT with several adapters active together, each scaling times its weight."""
    ref.base_model.set_adapter(list(weights))
    saved = []
    for module in ref.modules():
        if isinstance(module, LoraLayer):
            for name, weight in weights.items():
                if name in module.scaling:
                    saved.append((module, name, module.scaling[name]))
                    module.scaling[name] *= weight
    try:
        yield
    finally:
        for module, name, value in saved:
            module.scaling[name] = value


def cat_is_exact(configs: list[dict[str, Any]]) -> bool:
    """PEFT's cat copies its first adapter's config: rsLoRA rescales the mixture by
    sqrt(total rank), the first's layers_to_transform/exclude_modules drop the others' modules,
    and another's leave modules that no adapter has (PEFT then raises)."""
    # PEFT turns "all-linear" into a set of names; a regex stays a string.
    kinds = {c["target_modules"] != "all-linear" and isinstance(c["target_modules"], str)
             for c in configs}  # fmt: skip
    limited = any("layers_to_transform" in c or "exclude_modules" in c for c in configs)
    return len(kinds) == 1 and not limited and not configs[0]["use_rslora"]


class Scenario:
    """One seeded scenario; ``run`` returns its cases."""

    def __init__(
        self,
        seed: int,
        registry: AdapterRegistry,
        root: Path,
        *,
        families: tuple[str, ...],
        dtypes: tuple[str, ...],
        adapter_dtype: torch.dtype | None = None,
    ) -> None:
        self.seed, self.rng = seed, random.Random(seed)
        self.adapter_dtype = adapter_dtype  # RoleSet's dtype=...; None: its default
        self.family = FAMILIES[self.rng.choice(families)]
        self.dtype_name = self.rng.choice(dtypes)
        self.dtype = DTYPES[self.dtype_name]
        self.half = self.dtype != torch.float32
        self.model_id = f"stance-test/diff-{self.family.name}"
        torch.manual_seed(seed)
        # Half-precision scenarios: base weights that half precision holds exactly, so the
        # float32 reference differs only in how the adapters are computed.
        self.base = self.family.build().to(self.dtype).float().eval()
        self.ids = torch.randint(0, VOCAB, (4, 6), generator=torch.Generator().manual_seed(seed))
        self.names = [f"s{seed}-{i}" for i in range(ADAPTERS)]
        self.configs = [random_lora(self.rng, self.family) for _ in self.names]
        self.folders = {}
        for i, (name, lora) in enumerate(zip(self.names, self.configs, strict=True)):
            file_dtype = self.rng.choice([torch.float32, torch.bfloat16])
            self.folders[name] = make_adapter(
                root / name, seed=seed * 10 + i, model=copy.deepcopy(self.base),
                base_model=self.model_id, dtype=file_dtype, std=0.2, **lora,
            )  # fmt: skip
            registry.publish(self.folders[name], f"{name}@1.0.0")
        self.registry = registry
        self.cases: list[Case] = []
        self.peft = self.reference(self.dtype)
        self.ref32 = self.reference(torch.float32) if self.half else None

    def model(self, dtype: torch.dtype) -> PreTrainedModel:
        model = copy.deepcopy(self.base).to(dtype)
        model.config.name_or_path = self.model_id
        return model

    def reference(self, dtype: torch.dtype) -> PeftModel:
        """PEFT with every adapter, PEFT's defaults (float32 adapters on a half model)."""
        first, *rest = self.names
        ref = PeftModel.from_pretrained(self.model(dtype), self.folders[first], adapter_name=first)
        for name in rest:
            ref.load_adapter(self.folders[name], adapter_name=name)
        return ref.eval()

    def judge(self, kind: str, ours: torch.Tensor, *answers: Answer) -> None:
        """One case from PEFT's answers to the same request (a mixed batch: PEFT's own and
        each row alone). Half precision: PEFT's own error is its worst answer's; tiny
        differences grow through the layers, and PEFT's two answers alone can differ 7x."""
        if self.half:
            ref32 = answers[0][1]
            own = max((peft - ref32).abs().max().item() for peft, _ in answers)
            error = (ours - ref32).abs().max().item()
            bound = HALF_FACTOR * own + 1e-6
        else:
            own, bound = 0.0, RELATIVE
            error = max(
                ((ours - peft).abs().max() / peft.abs().max().clamp_min(1e-12)).item()
                for peft, _ in answers
            )
        identical = any(torch.equal(ours, peft) for peft, _ in answers)
        self.cases.append(
            Case(self.seed, self.family.name, self.dtype_name, kind, error, bound, own, identical)
        )

    def on_refs(self, fn: Callable[[PeftModel], torch.Tensor]) -> Answer:
        """The same PEFT call on the model's dtype and, for half precision, on float32."""
        return fn(self.peft), fn(self.ref32) if self.ref32 is not None else None

    def run(self) -> list[Case]:
        model = self.model(self.dtype)
        with RoleSet(model, registry=self.registry, dtype=self.adapter_dtype) as roles:
            for name in self.names:
                roles.load(f"{name}@1.0.0", name=name)
            expected = self.singles(roles)
            self.switches(roles, expected)
            self.mixes(roles)
            self.batches(roles, expected)
        self.evictions(model, expected)
        return self.cases

    def singles(self, roles: RoleSet) -> dict[str, Answer]:
        """Each role alone, and the base model, against PEFT; kept for later cases."""
        expected: dict[str, Answer] = {}

        def base(ref: PeftModel) -> torch.Tensor:
            with ref.disable_adapter():
                return logits(ref, self.ids)

        roles.switch(None)
        expected[BASE_NAME] = self.on_refs(base)
        self.judge("base", logits(roles, self.ids), expected[BASE_NAME])
        for name in self.names:

            def single(ref: PeftModel, name: str = name) -> torch.Tensor:
                ref.set_adapter(name)
                return logits(ref, self.ids)

            roles.switch(name)
            expected[name] = self.on_refs(single)
            self.judge("single", logits(roles, self.ids), expected[name])
        return expected

    def switches(self, roles: RoleSet, expected: dict[str, Answer]) -> None:
        for _ in range(4):
            name = self.rng.choice([*self.names, BASE_NAME])
            roles.switch(name)
            self.judge("switch", logits(roles, self.ids), expected[name])

    def mixes(self, roles: RoleSet) -> None:
        for _ in range(2):
            chosen = self.rng.sample(self.names, self.rng.randint(2, len(self.names)))
            weights = {name: round(self.rng.uniform(-1.0, 1.5), 3) for name in chosen}

            def together(ref: PeftModel, weights: dict[str, float] = weights) -> torch.Tensor:
                with weighted(ref, weights):
                    return logits(ref, self.ids)

            roles.mix(weights)
            ours = logits(roles, self.ids)
            self.judge("mix", ours, self.on_refs(together))
            configs = [self.configs[self.names.index(name)] for name in chosen]
            if cat_is_exact(configs) and not self.half:

                def cat(ref: PeftModel, weights: dict[str, float] = weights) -> torch.Tensor:
                    ref.add_weighted_adapter(list(weights), list(weights.values()), "cat", "cat")
                    ref.set_adapter("cat")
                    out = logits(ref, self.ids)
                    ref.delete_adapter("cat")
                    return out

                # Float32 only: in half precision cat is another summation than PEFT's adapters
                # active together, whose bits the mixture matches.
                self.judge("cat", ours, self.on_refs(cat))

    def batches(self, roles: RoleSet, expected: dict[str, Answer]) -> None:
        """Mixed batches against each row run alone, and against PEFT's own mixed batches where
        PEFT runs them (not on modules that see flattened tokens)."""
        flat = any(
            isinstance(module, LoraLayer) and path.rsplit(".", 1)[-1] in self.family.flat
            for path, module in self.peft.named_modules()
        )
        for _ in range(2):
            rows = [self.rng.choice([*self.names, BASE_NAME]) for _ in range(len(self.ids))]
            ours = logits(roles, self.ids, adapter_names=rows)
            peft = torch.stack([expected[r][0][i] for i, r in enumerate(rows)])
            ref32 = (
                torch.stack([expected[r][1][i] for i, r in enumerate(rows)]) if self.half else None
            )
            answers = [(peft, ref32)]
            if not flat:
                answers.append(
                    self.on_refs(lambda ref, rows=rows: logits(ref, self.ids, adapter_names=rows))
                )
            self.judge("batch", ours, *answers)

    def evictions(self, model: PreTrainedModel, expected: dict[str, Any]) -> None:
        """Two slots for three roles: each load evicts the least recently used inactive role."""
        first, second, third = self.names
        with RoleSet(
            model, registry=self.registry, max_resident=2, dtype=self.adapter_dtype
        ) as roles:
            roles.load(f"{first}@1.0.0", name=first)
            roles.load(f"{second}@1.0.0", name=second)
            roles.switch(first)
            roles.load(f"{third}@1.0.0", name=third)
            if list(roles.resident) != [first, third]:
                raise AssertionError(f"evicted the wrong role: {list(roles.resident)}")
            roles.switch(third)
            self.judge("evict", logits(roles, self.ids), expected[third])
            roles.load(f"{second}@1.0.0", name=second)  # evicts the first, takes its slot
            roles.switch(second)
            self.judge("evict", logits(roles, self.ids), expected[second])
