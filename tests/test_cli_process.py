"""A few runs of the installed ``stance`` executable as a real process (stdout, stderr, exit)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from registry.settings import Settings

STANCE = str(Path(sys.executable).parent / "stance")


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STANCE, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_real_process_json_contract(settings: Settings, adapters: dict[str, Path]) -> None:
    published = run("publish", adapters["curious"], "proc@1.0.0", "--json")
    assert published.returncode == 0, published.stderr
    body = json.loads(published.stdout)
    assert set(body) == {"namespace", "name", "version", "digest"}

    resolved = run("resolve", "proc@^1", "--json")
    assert resolved.returncode == 0 and json.loads(resolved.stdout)["digest"] == body["digest"]

    missing = run("resolve", "proc@^2", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["code"] == "not_found"
    assert missing.stderr.strip().count("\n") == 0 and missing.stderr.startswith("error: ")

    usage = run("resolve")
    assert usage.returncode == 2
