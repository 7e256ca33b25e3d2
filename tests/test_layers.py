"""The rooms of ``registry/`` and the one direction of imports between them.

Every import counts: module level, inside functions and under ``TYPE_CHECKING``. A module in
no room, an import against the order, or a cycle fails here, naming the file and the line.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "registry"

BASE = {"errors", "settings", "spec", "semver", "manifest", "schemas", "access"}
# Each room and the rooms it may import (besides itself). Peers (lora/transfer, embedded/
# remote, api/loader) never import each other; the remote registry never sees the catalog.
ALLOWED: dict[str, set[str]] = {
    "base": set(),
    "lora": {"base"},
    "transfer": {"base"},
    "interfaces": {"base", "lora", "transfer"},
    "stores": {"base", "lora", "transfer", "interfaces"},
    "catalog": {"base", "lora", "transfer", "interfaces", "stores"},
    "embedded": {"base", "lora", "transfer", "interfaces", "stores", "catalog"},
    "remote": {"base", "lora", "transfer", "interfaces"},
    "connect": {"base", "lora", "transfer", "interfaces", "embedded", "remote"},
    "api": {"base", "lora", "transfer", "interfaces", "stores", "catalog"},
    "loader": {"base", "lora", "transfer", "interfaces", "connect"},
    "serving": {"base", "lora", "transfer", "interfaces", "connect"},
}


def room_of(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return "root"
    head = parts[0]
    if head in BASE:
        return "base"
    if head in ALLOWED:
        return head
    raise AssertionError(f"{module} is in no room: add it to tests/test_layers.py")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """Every registry module that ``module`` imports, with the line of the import."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [
                f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.append((target, node.lineno))
    return out


def test_every_import_follows_the_order_of_the_rooms() -> None:
    known = modules()
    wrong = []
    for module, path in sorted(known.items()):
        room = room_of(module)
        for target, line in imports(module, path, known):
            other = room_of(target)
            if other == "root":
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports the package root")
            elif room not in ("root", other) and other not in ALLOWED[room]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {room} imports {other} ({target})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    known = modules()
    edges = {m: {t for t, _ in imports(m, p, known)} for m, p in known.items()}
    edges["registry"] = set()  # the lazy root imports only under TYPE_CHECKING, on demand
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_order_test_sees_a_violation(tmp_path: Path) -> None:
    """The checks above can fail: a lora module importing the catalog is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from registry.catalog import queries\n")
    found = imports("registry.lora.bad", bad, {**modules(), "registry.lora.bad": bad})
    assert [room_of(t) for t, _ in found] == ["catalog"]
    assert "catalog" not in ALLOWED["lora"]


def test_importing_the_core_loads_no_database_http_or_torch() -> None:
    banned = ("sqlalchemy", "httpx", "torch", "numpy", "alembic")
    code = f"import sys, registry.spec; print(*[m for m in {banned!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "", f"import registry.spec loaded {out.stdout.strip()}"
