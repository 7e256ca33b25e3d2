"""Train the stances as PEFT LoRA adapters on any causal LM (SmolLM2-135M-Instruct by default).

    python -m examples.stances.train OUT_DIR [--steps N] [--threads auto|N]

Honest and small: LoRA r=8, alpha 16 on q_proj/v_proj, the model's own chat template, the
loss on the response tokens only (the prompt and system turn are context, never targets),
AdamW with a short warm-up and a linear decay, fixed seeds, a bounded number of steps, the
loss curve printed. The same code trains the r=2 and r=4 variants of curious-uncertainty
for the minimum-rank question, and saves its half-way checkpoint (published as 0.9.0).

Each run is cached under ``~/.cache/stance/stances/`` by the hash of its data, settings,
seed, base model and library versions, so a second run (and the demo re-run) reuses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from filelock import FileLock
from peft import LoraConfig, get_peft_model
from torch.nn import functional

from examples.stances import BASE_MODEL, STANCES, Example, data_digest, examples

IGNORE = -100  # label of tokens that are context, not targets (PyTorch's ignore_index)
Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the trained weights (with the data, base model and libraries)."""

    r: int = 8
    lora_alpha: float = 16.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    steps: int = 32
    batch_size: int = 4
    learning_rate: float = 3e-3
    warmup_steps: int = 3
    seed: int = 0
    max_length: int = 256
    checkpoints: tuple[int, ...] = ()


@dataclass
class Run:
    """A trained adapter: its folder, the loss per step, and what the training cost."""

    folder: Path
    losses: list[float]
    wall_s: float
    cpu_s: float
    threads: int
    cached: bool = False
    checkpoints: dict[int, Path] = field(default_factory=dict)


def encode(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat turn, and labels that are IGNORE except on the response."""
    prompt = [{"role": "user", "content": example.prompt}]
    turn = [*prompt, {"role": "assistant", "content": example.response}]
    head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(turn, tokenize=False)
    if not whole.startswith(head):
        raise ValueError("the chat template renders the prompt differently inside a full turn")
    ids = tokenizer(whole, add_special_tokens=False)["input_ids"]
    context = tokenizer(head, add_special_tokens=False)["input_ids"]
    if ids[: len(context)] != context:
        raise ValueError("the prompt's tokens change when the response follows them")
    ids = ids[:max_length]
    return ids, ([IGNORE] * len(context) + ids[len(context) :])[: len(ids)]


def _pad_id(tokenizer: Any) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding is masked out of attention and of the loss."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(rows):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_labels)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def mean_nll(
    forward: Callable[..., Any],
    tokenizer: Any,
    pairs: Sequence[Example],
    *,
    max_length: int = 256,
    batch_size: int = 8,
) -> float:
    """Mean negative log-likelihood (nats per response token) of the reference responses.

    ``forward`` is whatever computes logits: a model, or a ``RoleSet`` with a role active.
    """
    rows = [encode(tokenizer, pair, max_length) for pair in pairs]
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start : start + batch_size], _pad_id(tokenizer))
        logits = forward(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE
        scores = logits[:, :-1][keep].float()
        total += float(functional.cross_entropy(scores, targets[keep], reduction="sum"))
        count += int(keep.sum())
    return total / count


def _batches(count: int, size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Endless batches of example indices: one seeded shuffle per epoch."""
    while True:
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, count - size + 1, size):
            yield order[start : start + size]


def _schedule(settings: TrainSettings) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / (settings.warmup_steps + 1)
        rest = max(settings.steps - settings.warmup_steps, 1)
        return max(0.0, 1.0 - (step - settings.warmup_steps) / rest)

    return factor


def _save(peft_model: Any, dest: Path, *, base_model: str | None, card: str) -> Path:
    peft_model.save_pretrained(dest)
    config_path = dest / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model
    # PEFT writes target_modules from a set, in an order that changes with each process's
    # string hashing: sorted, the same adapter is the same bytes (and a re-publish a no-op).
    config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    (dest / "README.md").write_text(card)
    return dest


def _card(name: str, settings: TrainSettings, losses: list[float], digest: str) -> str:
    """A model card with what decides the weights (no timings: the same run is the same bytes)."""
    return (
        f"# {name}\n\nA LoRA adapter of the stance registry's example experiment "
        "(examples/stances). Hand-written prompt/response pairs in this stance's voice; "
        "the loss on response tokens only.\n\n"
        f"- r={settings.r}, lora_alpha={settings.lora_alpha:g}, "
        f"targets {', '.join(settings.target_modules)}\n"
        f"- {len(losses)} steps of {settings.batch_size} examples, AdamW lr "
        f"{settings.learning_rate:g}, seed {settings.seed}\n"
        f"- training loss {losses[0]:.3f} (first step) to {losses[-1]:.3f} (last step)\n"
        f"- data sha256 {digest}\n"
    )


def _steps(
    peft_model: Any,
    rows: list[tuple[list[int], list[int]]],
    settings: TrainSettings,
    *,
    pad: int,
    on_step: Callable[[int, float], None],
) -> None:
    """The optimisation itself: seeded batches, AdamW, clipped gradients, the schedule."""
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings))
    batches = _batches(len(rows), settings.batch_size, torch.Generator().manual_seed(settings.seed))
    for step in range(1, settings.steps + 1):
        loss = peft_model(**collate([rows[i] for i in next(batches)], pad)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        on_step(step, float(loss.detach()))


def train(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[Example],
    settings: TrainSettings,
    dest: Path,
    *,
    name: str = "adapter",
    base_model: str | None = None,
    log: Log = print,
) -> Run:
    """Train one LoRA adapter on ``model`` (left as it was afterwards) into ``dest/adapter``.

    ``dest/step-N`` holds the checkpoints asked for, ``dest/run.json`` the record of the run.
    """
    if len(pairs) < settings.batch_size:
        raise ValueError(f"{len(pairs)} examples cannot fill a batch of {settings.batch_size}")
    rows = [encode(tokenizer, pair, settings.max_length) for pair in pairs]
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(p) for p in pairs]).encode()).hexdigest()
    torch.manual_seed(settings.seed)  # PEFT draws lora_A from torch's global generator
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.lora_alpha,
        target_modules=list(settings.target_modules),
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    losses: list[float] = []
    checkpoints: dict[int, Path] = {}
    wall, cpu = time.perf_counter(), time.process_time()

    def on_step(step: int, loss: float) -> None:
        losses.append(loss)
        if step % 4 == 0 or step in (1, settings.steps):
            elapsed = time.perf_counter() - wall
            log(f"  {name} step {step:3d}/{settings.steps}  loss {loss:.3f}  {elapsed:5.1f} s")
        if step in settings.checkpoints:
            card = _card(f"{name} (step {step})", settings, losses, digest)
            folder = dest / f"step-{step}"
            checkpoints[step] = _save(peft_model, folder, base_model=base_model, card=card)

    peft_model.train()
    try:
        _steps(peft_model, rows, settings, pad=_pad_id(tokenizer), on_step=on_step)
        run = Run(
            folder=dest / "adapter",
            losses=losses,
            wall_s=time.perf_counter() - wall,
            cpu_s=time.process_time() - cpu,
            threads=torch.get_num_threads(),
            checkpoints=checkpoints,
        )
        card = _card(name, settings, losses, digest)
        _save(peft_model, run.folder, base_model=base_model, card=card)
    finally:
        peft_model.eval()
        peft_model.unload()  # the base model without LoRA layers, ready for the next stance
    record = {**dataclasses.asdict(run), "folder": "adapter", "checkpoints": sorted(checkpoints)}
    (dest / "run.json").write_text(json.dumps(record, indent=2))
    return run


def cache_key(data: str, settings: TrainSettings, base: str) -> str:
    """What decides the weights: the data's digest, the settings and seed, the base model and
    the libraries that compute them."""
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    versions["peft"] = peft.__version__
    identity = {"data": data, "settings": dataclasses.asdict(settings), "base": base}
    text = json.dumps({**identity, "versions": versions, "format": 1}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _cached(entry: Path) -> Run:
    record = json.loads((entry / "run.json").read_text())
    steps = {int(s): entry / f"step-{s}" for s in record["checkpoints"]}
    record |= {"folder": entry / "adapter", "checkpoints": steps, "cached": True}
    return Run(**record)


def train_stance(
    model: Any,
    tokenizer: Any,
    stance: str,
    settings: TrainSettings,
    *,
    base: str,
    cache: Path,
    name: str | None = None,
    base_model: str | None = None,
    log: Log = print,
) -> Run:
    """Train ``stance`` on its shipped data, or reuse the cached run of the same inputs.

    ``base`` names the base model's weights in the cache key (a model file's identity).
    """
    name = name or stance
    key = cache_key(data_digest(stance), settings, base)
    entry = cache / f"{name}-{key[:16]}"
    if not (entry / "run.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{entry}.lock"):
            if not (entry / "run.json").is_file():
                tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}-"))
                try:
                    pairs = examples(stance)
                    train(
                        model,
                        tokenizer,
                        pairs,
                        settings,
                        tmp,
                        name=name,
                        base_model=base_model,
                        log=log,
                    )
                    os.replace(tmp, entry)  # readers see a whole run or none
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                return dataclasses.replace(_cached(entry), cached=False)
    run = _cached(entry)
    log(f"  {name}: cached ({entry.name}), loss {run.losses[0]:.3f} -> {run.losses[-1]:.3f}")
    return run


def jobs(steps: int = TrainSettings.steps) -> list[tuple[str, str, TrainSettings]]:
    """(adapter name, stance, settings): the three stances at r=8 (curious-uncertainty with its
    half-way checkpoint), and curious-uncertainty at r=2 and r=4 with the same alpha / r."""
    base = TrainSettings(steps=steps)
    half = dataclasses.replace(base, checkpoints=(steps // 2,))
    runs = [(stance, stance, half if stance == STANCES[0] else base) for stance in STANCES]
    for r in (2, 4):
        runs.append(
            (f"{STANCES[0]}-r{r}", STANCES[0], dataclasses.replace(base, r=r, lora_alpha=2 * r))
        )
    return runs


def pick_threads(value: str) -> int:
    """``auto``: the cores nobody else is using. OpenMP threads spin at every barrier, so on a
    shared, oversubscribed machine two threads measured 4 to 50 times slower than one."""
    cores = os.cpu_count() or 1
    if value != "auto":
        return max(1, int(value))
    return max(1, min(cores, cores - round(os.getloadavg()[0])))


def _publishable(run: Run, out: Path, name: str) -> dict[str, Any]:
    """Copy the run's adapter (and checkpoints) to ``out``; its summary for training.json."""
    shutil.copytree(run.folder, out / name, dirs_exist_ok=True)
    for step, folder in run.checkpoints.items():
        shutil.copytree(folder, out / f"{name}-step{step}", dirs_exist_ok=True)
    keep = ("losses", "wall_s", "cpu_s", "threads", "cached")
    return {"name": name, **{k: getattr(run, k) for k in keep}}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where the adapter folders are copied")
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    parser.add_argument("--threads", default="auto", help="torch threads, or auto")
    parser.add_argument("--only", action="append", help="train only this adapter (repeatable)")
    args = parser.parse_args(argv)
    from examples.smollm2 import cache_root, converted, smollm2, tokenizer

    torch.set_num_threads(pick_threads(args.threads))
    model, tok = smollm2(), tokenizer()
    summary = []
    for name, stance, settings in jobs(args.steps):
        if args.only and name not in args.only:
            continue
        print(
            f"{name}: r={settings.r} alpha={settings.lora_alpha:g} on "
            f"{'/'.join(settings.target_modules)}, {settings.steps} steps of "
            f"{settings.batch_size}, {torch.get_num_threads()} thread(s)"
        )
        run = train_stance(
            model,
            tok,
            stance,
            settings,
            base=converted().name,
            cache=cache_root() / "stances",
            name=name,
            base_model=BASE_MODEL,
        )
        summary.append(_publishable(run, args.out, name))
    print(f"\n{'adapter':24} {'loss, first 4 -> last 4':>24} {'wall s':>7} {'cpu s':>7}  threads")
    for row in summary:
        losses = row["losses"]
        first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
        cost = f"{row['wall_s']:7.1f} {row['cpu_s']:7.1f}  {row['threads']}"
        cost += "  (cached: as trained)" if row["cached"] else ""
        print(f"{row['name']:24} {first:13.3f} -> {last:6.3f}  {cost}")
    (args.out / "training.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
