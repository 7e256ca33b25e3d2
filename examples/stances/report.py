"""The experiment's report, measured on the published roles with the product's own tools.

    python -m examples.stances.report [--out DIR] [--training OUT/training.json]

Every figure comes from the registry (``Registry().compare``, ``Registry().show``'s
fingerprint) or the loader (``RoleSet``: switch, mix, forward, generate) on the real
SmolLM2-135M-Instruct; nothing is computed from the weights by hand here. Prints the report
as Markdown and writes it (``report.md`` and SVG figures drawn by ``registry.api.svg``, the
compare page's own charts) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from examples.roles import answer, switch_median_us
from examples.stances import STANCES
from examples.stances.measure import BASE, heldout, mixture_nll, nll_matrix, own_best
from examples.stances.train import pick_threads
from registry import Registry, RoleSet
from registry.api import svg
from registry.lora.compare import ComparedAdapter, Comparison

SPECS = {
    "curious-uncertainty": "curious-uncertainty@prod",
    "confident-expertise": "confident-expertise@prod",
    "engaged-difficulty": "team-a/engaged-difficulty@prod",
}
RANKS = {2: "curious-uncertainty-r2@1.0.0", 4: "curious-uncertainty-r4@1.0.0", 8: SPECS[STANCES[0]]}
HALF = 16  # train.py saves curious-uncertainty at half its 32 steps; the demo publishes it as 0.9.0
CHECKPOINT = "curious-uncertainty@0.9.0"
MIX = (0.0, 0.25, 0.5, 0.7, 0.75, 1.0)  # curious-uncertainty's weight; 0.7 is the seed's mix
PROMPT = "Why is the ocean salty?"


@dataclass
class Report:
    """Markdown lines and the SVG figures they link to."""

    lines: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.add("", "| " + " | ".join(header) + " |", "|" + "---|" * len(header))
        self.lines.extend("| " + " | ".join(row) + " |" for row in rows)
        self.add("")

    def figure(self, name: str, drawing: str, caption: str) -> None:
        self.figures[name] = drawing
        self.add(f"![{caption}]({name})", "")


def _span(values: Sequence[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"


def _cv(values: Sequence[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.pstdev(values) / mean if mean else 0.0


def training(report: Report, runs: list[dict[str, Any]]) -> None:
    """What training cost, and how the loss moved (from train.py's training.json)."""
    report.add("## 0. Training", "")
    rows = []
    for run in runs:
        losses = run["losses"]
        first, last = statistics.fmean(losses[:4]), statistics.fmean(losses[-4:])
        cost = [f"{run['wall_s']:.0f}", f"{run['cpu_s']:.0f}", str(run["threads"])]
        when = "cached (as trained)" if run["cached"] else "now"
        rows.append([run["name"], str(len(losses)), f"{first:.3f} -> {last:.3f}", *cost, when])
    header = ["adapter", "steps", "loss, mean of first 4 -> last 4", "wall s", "cpu s"]
    report.table([*header, "threads", "trained"], rows)
    report.add(
        "cpu s is the process's CPU time: on a shared machine it is what the training costs, "
        "wall s what it waited.",
        "",
    )
    series = [(r["name"], [(i + 1.0, v) for i, v in enumerate(r["losses"])]) for r in runs]
    report.figure(
        "loss.svg",
        svg.line_chart(series, css="loss", title="training loss", x_label="step", y_label="loss"),
        "training loss per step",
    )


def _norm_row(label: str, adapter: ComparedAdapter, fingerprint: dict) -> list[str]:
    """Raw ‖A‖ next to ‖dW‖ per layer, summarised: their ranges and spreads."""
    plain: dict[int, float] = {}
    for m in fingerprint["modules"]:  # the reading "3.28-3.30" adds module norms up
        plain[m["layer"]] = plain.get(m["layer"], 0.0) + m["a_norm"]
    ratio = adapter.layer_cv / adapter.a_layer_cv if adapter.a_layer_cv else math.inf
    return [
        label,
        _span([row.a_norm for row in adapter.layers]),
        f"{adapter.a_layer_cv:.4f}",
        _span(list(plain.values())),
        _span([row.delta_norm for row in adapter.layers]),
        f"{adapter.layer_cv:.3f}",
        f"{ratio:.1f}x",
    ]


def norms(
    report: Report, comparison: Comparison, fingerprints: dict[str, dict], steps: Comparison
) -> None:
    """Section 1: is the flat raw norm an artefact, and what does the real update look like?"""
    report.add("## 1. Raw ‖A‖_F against ‖dW‖_F per layer", "")
    r = comparison.adapters[0].r
    report.add(
        f"At PEFT's initialisation ‖A‖_F = sqrt(r/3) = {math.sqrt(r / 3):.3f} per module at "
        f"r = {r} whatever the width: {math.sqrt(2 * r / 3):.3f} per layer for q+v (root sum "
        f"of squares), {2 * math.sqrt(r / 3):.3f} as the plain sum ‖A_q‖ + ‖A_v‖."
    )
    rows = [
        _norm_row(s, a, fingerprints[s]) for s, a in zip(STANCES, comparison.adapters, strict=True)
    ]
    rows.append(
        _norm_row(f"{CHECKPOINT} (step {HALF})", steps.adapters[0], fingerprints[CHECKPOINT])
    )
    header = ["adapter", "raw ‖A‖ per layer", "CV", "‖A_q‖+‖A_v‖ per layer", "‖dW‖ per layer"]
    report.table([*header, "CV", "CV ratio"], rows)
    report.add(
        f"The half-way checkpoint and the final {STANCES[0]} point the same way: cosine "
        f"{steps.cosine[0][1]:+.3f}.",
        "",
    )
    per_layer = []
    for i, layer in enumerate(row.layer for row in comparison.adapters[0].layers):
        cells = [
            f"{a.layers[i].a_norm:.3f} / {a.layers[i].delta_norm:.3f}" for a in comparison.adapters
        ]
        per_layer.append([str(layer), *cells])
    report.table(["layer", *(f"{s}: ‖A‖ / ‖dW‖" for s in STANCES)], per_layer)
    for field_name, name, label in (
        ("delta_norm", "delta.svg", "‖dW‖_F"),
        ("a_norm", "raw.svg", "raw ‖A‖_F"),
    ):
        series = [
            (s, [(row.layer, getattr(row, field_name)) for row in a.layers])
            for s, a in zip(STANCES, comparison.adapters, strict=True)
        ]
        chart = svg.line_chart(
            series, css=name[:-4], title=f"{label} per layer", x_label="layer", y_label=label
        )
        report.figure(name, chart, f"{label} per layer (both from 0)")


def where(report: Report, comparison: Comparison) -> None:
    """Section 2: which layers carry each update, and do the stances point the same way?"""
    report.add("## 2. Where each update lives, and the cosine matrix", "")
    rows = []
    for stance, adapter in zip(STANCES, comparison.adapters, strict=True):
        energy = {row.layer: row.delta_norm**2 for row in adapter.layers}
        total = sum(energy.values())
        third = max(len(energy) // 3, 1)
        ordered = [energy[k] for k in sorted(energy)]
        thirds = [
            sum(ordered[i * third : (i + 1) * third if i < 2 else None]) / total for i in range(3)
        ]
        top = ", ".join(f"{k} ({math.sqrt(energy[k]):.3g})" for k in adapter.top_layers)
        share = sum(energy[k] for k in adapter.top_layers) / total
        rows.append([stance, top, f"{share:.0%}", " / ".join(f"{t:.0%}" for t in thirds)])
    report.table(
        [
            "stance",
            "top layers by ‖dW‖ (value)",
            "their share of ‖dW‖^2",
            "first / middle / last third",
        ],
        rows,
    )
    report.table(
        ["cosine", *STANCES],
        [
            [s, *(f"{v:+.3f}" for v in row)]
            for s, row in zip(STANCES, comparison.cosine, strict=True)
        ],
    )
    c = comparison.cosine
    report.add(
        f"confident-expertise vs engaged-difficulty: {c[1][2]:+.3f}; for contrast, "
        f"curious-uncertainty vs confident-expertise {c[0][1]:+.3f}, vs engaged-difficulty "
        f"{c[0][2]:+.3f}. All three start from the same lora_A (seed 0).",
        "",
    )
    report.figure(
        "cosine.svg", svg.cosine_matrix(list(STANCES), comparison.cosine), "cosine matrix"
    )


def behaviour(report: Report, matrix: dict[str, dict[str, float]]) -> None:
    """Section 3: does each role fit its own stance's held-out responses best?"""
    report.add("## 3. Held-out NLL (nats per response token): base and each role", "")
    best = own_best(matrix, list(STANCES))
    rows = []
    for row, values in matrix.items():
        cells = [f"**{v:.3f}**" if best[s] == row else f"{v:.3f}" for s, v in values.items()]
        rows.append([row, *cells])
    report.table(["role \\ held-out set", *STANCES], rows)
    hits = sum(best[s] == s for s in STANCES)
    gains = [1 - matrix[s][s] / matrix[BASE][s] for s in STANCES]
    report.add(
        f"Diagonal best (among the three roles) on {hits} of 3 sets; each role lowers its own "
        f"set's NLL below the base model's by {', '.join(f'{g:.0%}' for g in gains)}.",
        "",
    )


def composition(report: Report, mixed: dict[float, dict[str, float]], matrix: dict) -> None:
    """Section 4: does a mixture of two roles move between them?"""
    a, b = STANCES[0], STANCES[1]
    report.add(f"## 4. Composition: roles.mix({{{a}: w, {b}: 1 - w}})", "")
    report.table(
        ["w", f"NLL on {a} set", f"NLL on {b} set"],
        [[f"{w:g}", f"{v[a]:.3f}", f"{v[b]:.3f}"] for w, v in mixed.items()],
    )
    ends = max(abs(mixed[1.0][a] - matrix[a][a]), abs(mixed[0.0][b] - matrix[b][b]))
    falling = all(mixed[x][a] >= mixed[y][a] for x, y in zip(MIX, MIX[1:], strict=False))
    rising = all(mixed[x][b] <= mixed[y][b] for x, y in zip(MIX, MIX[1:], strict=False))
    falls = "falls monotonically" if falling else "does not fall monotonically"
    rises = "rises monotonically" if rising else "does not rise monotonically"
    report.add(
        f"w = 1 and w = 0 reproduce the single roles (largest NLL difference {ends:.1e}). As w "
        f"grows the NLL on the {a} set {falls} and on the {b} set {rises}.",
        "",
    )
    series = [(f"{s} set", [(w, v[s]) for w, v in mixed.items()]) for s in (a, b)]
    report.figure(
        "mix.svg",
        svg.line_chart(
            series,
            css="mix",
            title="NLL along the mixture",
            x_label=f"w ({a}'s weight)",
            y_label="NLL",
            from_zero=False,
        ),
        "NLL along the mixture",
    )


def rank(report: Report, comparison: Comparison, ranks: Comparison, nll: dict[int, float]) -> None:
    """Section 5: how much rank does each update use, and what do r=2 and r=4 lose?"""
    report.add("## 5. Minimum rank", "")
    rows = [
        [s, str(a.rank_90), str(a.rank_99), " ".join(f"{e:.2f}" for e in a.energy)]
        for s, a in zip(STANCES, comparison.adapters, strict=True)
    ]
    report.table(["stance (r=8)", "rank for 90% of ‖dW‖^2", "for 99%", "energy at k = 1..8"], rows)
    rows = [
        [
            f"r={r}",
            f"{nll[r]:.3f}",
            f"{a.total_norm:.3g}",
            str(a.rank_90),
            f"{ranks.cosine[i][-1]:+.3f}",
        ]
        for i, (r, a) in enumerate(zip(RANKS, ranks.adapters, strict=True))
    ]
    report.table(
        [f"{STANCES[0]}", "held-out NLL (own set)", "‖dW‖", "rank for 90%", "cosine with r=8"],
        rows,
    )
    series = [
        (s, [(k + 1.0, e) for k, e in enumerate(a.energy)])
        for s, a in zip(STANCES, comparison.adapters, strict=True)
    ]
    report.figure(
        "energy.svg",
        svg.line_chart(
            series,
            css="energy",
            title="energy kept at rank k",
            x_label="rank k",
            y_label="share of ‖dW‖^2",
        ),
        "energy kept at rank k",
    )


def switching(report: Report, answers: dict[str, str], median_us: float, prompt: str) -> None:
    """Section 6: the same prompt, greedily, under each role switched in place."""
    report.add("## 6. Switching", "", f"Prompt (held out): *{prompt}*", "")
    for role, text in answers.items():
        report.add(f"- **{role}**: {text}")
    report.add(
        "", f"Median `roles.switch` between the three resident roles: {median_us:.2f} us.", ""
    )


def measure(registry: Any, prompt: str) -> dict[str, Any]:
    """Everything the behavioural sections need, from one RoleSet on the real model."""
    from examples.smollm2 import smollm2, tokenizer

    model, tok = smollm2(), tokenizer()
    sets = heldout()
    with RoleSet(model, registry=registry) as roles:
        for stance, spec in SPECS.items():
            roles.load(spec, name=stance)
        for r, spec in RANKS.items():
            if r != 8:
                roles.load(spec, name=f"r{r}")
        names = {BASE: None, **{s: s for s in STANCES}}
        matrix = nll_matrix(roles, tok, names, sets)
        mixed = mixture_nll(
            roles, tok, STANCES[0], STANCES[1], MIX, {s: sets[s] for s in STANCES[:2]}
        )
        own = {STANCES[0]: sets[STANCES[0]]}
        by_rank = {r: nll_matrix(roles, tok, {"x": f"r{r}"}, own)["x"][STANCES[0]] for r in (2, 4)}
        by_rank[8] = matrix[STANCES[0]][STANCES[0]]
        answers = {}
        for row, role in names.items():
            roles.switch(role)
            answers[row] = answer(roles, tok, prompt)
        median = switch_median_us(roles, list(STANCES))
    return {
        "matrix": matrix,
        "mixed": mixed,
        "by_rank": by_rank,
        "answers": answers,
        "switch": median,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/stance-report"))
    parser.add_argument("--training", type=Path, help="training.json written by train.py")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--threads", default="auto", help="torch threads, or auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(pick_threads(args.threads))
    started = time.perf_counter()
    report = Report(["# The experiment, measured", ""])
    with Registry() as registry:
        comparison = registry.compare(list(SPECS.values()))
        ranks = registry.compare(list(RANKS.values()))
        steps = registry.compare([CHECKPOINT, SPECS[STANCES[0]]])
        fingerprints = {
            name: registry.show(spec).info["fingerprint"]
            for name, spec in [*SPECS.items(), (CHECKPOINT, CHECKPOINT)]
        }
        measured = measure(registry, args.prompt)
    if args.training and args.training.is_file():
        training(report, json.loads(args.training.read_text()))
    norms(report, comparison, fingerprints, steps)
    where(report, comparison)
    behaviour(report, measured["matrix"])
    composition(report, measured["mixed"], measured["matrix"])
    rank(report, comparison, ranks, measured["by_rank"])
    switching(report, measured["answers"], measured["switch"], args.prompt)
    cpu = time.process_time()
    report.add(f"Report measured in {time.perf_counter() - started:.0f} s ({cpu:.0f} s of CPU).")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, drawing in report.figures.items():
        (args.out / name).write_text(drawing)
    text = "\n".join(report.lines) + "\n"
    (args.out / "report.md").write_text(text)
    print(text)
    print(f"written: {args.out / 'report.md'} (+ {len(report.figures)} SVG figures)")


if __name__ == "__main__":
    main()
