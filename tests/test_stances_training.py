"""The example experiment's training: on a tiny random model in seconds, on SmolLM2 (slow).

The tiny model and tokenizer (tests/tiny_lm.py) are what the training code needs from "any
causal LM and tokenizer", nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from examples.roles import answer
from examples.stances import STANCES, Example, examples
from examples.stances.train import (
    IGNORE,
    TrainSettings,
    collate,
    encode,
    mean_nll,
    train,
    train_stance,
)
from registry.embedded import EmbeddedRegistry
from registry.loader import RoleSet
from tests.tiny_lm import tiny_model, tiny_tokenizer

# Loud enough to learn in a few steps: at transformers' 0.02 init a 32-wide model's logits
# are near zero and frozen, so no adapter can move the loss far from log(vocab).
TINY = TrainSettings(steps=12, learning_rate=2e-2, max_length=512)
# The real model's reduced budget for the slow test (the demo trains 32 steps).
REDUCED = TrainSettings(steps=8)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny matrices: OpenMP's thread start-up and barriers cost more than the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_encode_puts_the_loss_on_the_response_only() -> None:
    tok = tiny_tokenizer()
    pair = Example(prompt="Why?", response="Because.")
    ids, labels = encode(tok, pair, max_length=512)
    assert len(ids) == len(labels)
    context = [i for i, label in zip(ids, labels, strict=True) if label == IGNORE]
    targets = [label for label in labels if label != IGNORE]
    assert tok.decode(context) == "<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(targets) == "Because.<|im_end|>\n"
    assert labels.index(targets[0]) == len(context)  # the targets follow the whole prompt
    short_ids, short_labels = encode(tok, pair, max_length=10)
    assert short_ids == ids[:10] and short_labels == labels[:10]


def test_training_lowers_the_loss_and_three_roles_answer_differently(
    tmp_path: Path, one_thread: None
) -> None:
    model, tok = tiny_model(), tiny_tokenizer()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runs = {s: train(model, tok, examples(s), TINY, tmp_path / s, name=s, log=lambda _: None)
            for s in STANCES}  # fmt: skip
    for run in runs.values():
        assert len(run.losses) == TINY.steps
        assert sum(run.losses[-3:]) / 3 < sum(run.losses[:3]) / 3 - 0.1
        config = json.loads((run.folder / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"]) == (8, 16)
        assert config["target_modules"] == ["q_proj", "v_proj"]
    assert not hasattr(model, "peft_config")  # the base model is handed back unwrapped
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    sets = {s: examples(s, "heldout") for s in STANCES}
    with EmbeddedRegistry() as registry, RoleSet(model, registry=registry) as roles:
        for stance, run in runs.items():
            registry.publish(run.folder, f"{stance}@1.0.0")
            roles.load(f"{stance}@1.0.0")
        base = mean_nll(roles, tok, sets[STANCES[0]])
        answers = {}
        for stance in STANCES:
            roles.switch(stance)
            answers[stance] = answer(roles, tok, "Why is the sky blue?", max_new_tokens=16)
            assert mean_nll(roles, tok, sets[stance]) < base + 0.5  # sane, finite, comparable
    assert len(set(answers.values())) == 3, answers


def test_a_second_run_reuses_the_cached_adapter(tmp_path: Path, one_thread: None) -> None:
    model, tok = tiny_model(), tiny_tokenizer()
    settings = TrainSettings(steps=2, max_length=512, checkpoints=(1,))
    logged: list[str] = []
    kwargs = {"base": "tiny", "cache": tmp_path / "cache", "log": logged.append}
    first = train_stance(model, tok, STANCES[1], settings, **kwargs)
    assert not first.cached and any("step   2/2" in line for line in logged)
    logged.clear()
    second = train_stance(model, tok, STANCES[1], settings, **kwargs)
    assert second.cached and logged == [
        f"  {STANCES[1]}: cached ({second.folder.parent.name}), "
        f"loss {first.losses[0]:.3f} -> {first.losses[-1]:.3f}"
    ]
    assert second.folder == first.folder and second.losses == first.losses
    assert (second.checkpoints[1] / "adapter_model.safetensors").is_file()
    other = train_stance(model, tok, STANCES[1], TrainSettings(steps=3, max_length=512), **kwargs)
    assert not other.cached and other.folder != first.folder  # other settings, other entry


@pytest.mark.slow
def test_real_model_each_role_fits_its_own_stance_best(tmp_path: Path) -> None:
    """SmolLM2 with the shipped data and a reduced budget (cached by the data's hash between
    runs, under ~/.cache/stance/stances): the held-out NLL matrix has its best on the
    diagonal, and a mixture at weight 1 or 0 is the single role."""
    from examples.smollm2 import HUB_ID, cache_root, converted, smollm2, tokenizer
    from examples.stances.measure import heldout, nll_matrix, own_best
    from examples.stances.train import pick_threads

    before = torch.get_num_threads()
    torch.set_num_threads(pick_threads("auto"))  # another xdist worker may hold a core
    try:
        model, tok = smollm2(), tokenizer()
        runs = {
            s: train_stance(
                model, tok, s, REDUCED,
                base=converted().name, cache=cache_root() / "stances", base_model=HUB_ID,
            )
            for s in STANCES
        }  # fmt: skip
        sets = heldout()
        with EmbeddedRegistry() as registry, RoleSet(model, registry=registry) as roles:
            for stance, run in runs.items():
                registry.publish(run.folder, f"{stance}@1.0.0")
                roles.load(f"{stance}@1.0.0")
            matrix = nll_matrix(roles, tok, {s: s for s in STANCES}, sets)
            assert own_best(matrix, STANCES) == {s: s for s in STANCES}, matrix
            rows = [encode(tok, pair, 256) for pair in sets[STANCES[0]][:2]]
            batch = collate(rows, tok.pad_token_id)
            del batch["labels"]
            first, second = STANCES[0], STANCES[1]
            alone = {}
            with torch.no_grad():
                for name in (first, second):
                    roles.switch(name)
                    alone[name] = roles(**batch).logits
            # The mixture sums over both roles' ranks (16, not 8): float32 sums in another
            # order, ~40 ulps of these logits after 30 layers. The roles themselves differ by
            # far more, so the tolerance still tells one role from the other.
            tolerance = 1e-3
            assert (alone[first] - alone[second]).abs().max() > 100 * tolerance
            for weight, single in ((1.0, first), (0.0, second)):
                roles.mix({first: weight, second: 1.0 - weight})
                with torch.no_grad():
                    mixed = roles(**batch).logits
                torch.testing.assert_close(mixed, alone[single], atol=tolerance, rtol=0)
    finally:
        torch.set_num_threads(before)
