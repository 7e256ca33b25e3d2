"""stance.toml -> stance.lock -> sync -> verify -> export, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from registry.settings import Settings
from registry.transfer.lockfile import read_lock

runner = CliRunner()


def stance(*args: object, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout + result.stderr


@pytest.fixture
def project(
    settings: Settings, adapters: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    stance("publish", adapters["curious"], "curious-uncertainty@1.2.0")
    stance("publish", adapters["confident"], "confident-expertise@1.0.0", "--alias", "prod")
    stance("publish", adapters["engaged"], "team-a/engaged-difficulty@0.3.0", "--alias", "prod")
    (tmp_path / "stance.toml").write_text(
        '[adapters]\ncurious-uncertainty = "^1.2"\nconfident-expertise = "prod"\n'
        '"team-a/engaged-difficulty" = "0.3.0"\n'
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_lock_is_exact_sorted_and_byte_stable(project: Path, adapters: dict[str, Path]) -> None:
    out = json.loads(stance("lock", "--json"))
    assert out["changed"] is True
    text = (project / "stance.lock").read_text()
    locked = read_lock(project / "stance.lock")
    assert [(e.namespace, e.name, e.requested, e.version) for e in locked.adapters] == [
        ("default", "confident-expertise", "prod", "1.0.0"),
        ("default", "curious-uncertainty", "^1.2", "1.2.0"),
        ("team-a", "engaged-difficulty", "0.3.0", "0.3.0"),
    ]
    entry = locked.find("curious-uncertainty")
    assert entry.base_model == "stance-test/tiny-llama"
    assert {f.path for f in entry.files} == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    assert json.loads(stance("lock", "--json"))["changed"] is False
    assert (project / "stance.lock").read_text() == text

    # New releases and alias moves do not move a lock until someone upgrades it.
    stance("publish", adapters["engaged"], "curious-uncertainty@1.3.0")
    stance("publish", adapters["curious"], "confident-expertise@1.1.0")
    stance("alias", "set", "confident-expertise", "prod", "1.1.0")
    stance("lock")
    assert (project / "stance.lock").read_text() == text
    stance("lock", "--upgrade", "curious-uncertainty")
    relocked = read_lock(project / "stance.lock")
    assert relocked.find("curious-uncertainty").version == "1.3.0"
    assert relocked.find("confident-expertise").version == "1.0.0"
    stance("lock", "--upgrade-all")
    assert read_lock(project / "stance.lock").find("confident-expertise").version == "1.1.0"

    # Changing a wish re-resolves that entry.
    (project / "stance.toml").write_text(
        '[adapters]\ncurious-uncertainty = "~1.2.0"\n"team-a/engaged-difficulty" = "prod"\n'
    )
    stance("lock")
    final = read_lock(project / "stance.lock")
    assert [(e.name, e.version) for e in final.adapters] == [
        ("curious-uncertainty", "1.2.0"),
        ("engaged-difficulty", "0.3.0"),
    ]


def test_sync_verify_and_tampering(project: Path, settings: Settings) -> None:
    stance("lock")
    missing = runner.invoke(app, ["verify", "--json"])
    assert missing.exit_code == 1 and "is not in the cache (run stance sync)" in missing.stderr
    synced = json.loads(stance("sync", "--json"))
    assert [s["name"] for s in synced] == [
        "default/confident-expertise",
        "default/curious-uncertainty",
        "team-a/engaged-difficulty",
    ]
    for item in synced:
        assert (Path(item["path"]) / "adapter_model.safetensors").is_file()
    assert "3 locked adapters verified" in stance("verify")

    weights = read_lock(project / "stance.lock").find("curious-uncertainty").files[2]
    blob = settings.cache_dir / "blobs" / weights.digest.removeprefix("sha256:")
    blob.chmod(0o644)
    blob.write_bytes(b"tampered")
    bad = runner.invoke(app, ["verify", "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["code"] == "integrity"
    assert f"adapter_model.safetensors: cached file {blob} hashes to" in bad.stderr
    assert f"expected {weights.digest}" in bad.stderr


def test_yanked_locked_version_installs_with_a_warning(project: Path) -> None:
    stance("lock")
    stance("yank", "curious-uncertainty@1.2.0", "--reason", "bad eval")
    result = runner.invoke(app, ["sync"])
    assert result.exit_code == 0
    assert "warning: default/curious-uncertainty@1.2.0 is yanked: bad eval" in result.stderr


def test_hand_edited_lock_is_refused(project: Path) -> None:
    stance("lock")
    path = project / "stance.lock"
    locked = read_lock(path)
    first = locked.adapters[0].files[0]
    path.write_text(path.read_text().replace(first.digest, "sha256:" + "0" * 64, 1))
    result = runner.invoke(app, ["sync", "--json"])
    assert result.exit_code == 1 and "the lock's files make manifest" in result.stderr


def test_export_formats(project: Path, settings: Settings) -> None:
    stance("lock")
    refused = runner.invoke(app, ["export", "--format", "vllm"])
    assert refused.exit_code == 1 and "run stance sync" in refused.stderr
    stance("sync")
    folders = settings.cache_dir / "versions"
    vllm = stance("export", "--format", "vllm")
    assert vllm.startswith("vllm serve stance-test/tiny-llama --enable-lora --max-lora-rank 8")
    curious = folders / "default" / "curious-uncertainty" / "1.2.0"
    assert f'{{"name": "curious-uncertainty", "path": "{curious}"' in vllm  # tests/serving parses
    lorax = [json.loads(line) for line in stance("export", "--format", "lorax").splitlines()]
    assert {x["adapter_source"] for x in lorax} == {"local"} and len(lorax) == 3
    peft = stance("export", "--format", "peft")
    assert (
        "PeftModel.from_pretrained(base, " in peft
        and "adapter_name='team-a/engaged-difficulty'" in peft
    )
    compile(peft, "<export>", "exec")


def test_bad_wishes_are_clear(project: Path) -> None:
    (project / "stance.toml").write_text("[adapters]\ncurious-uncertainty = 3\n")
    result = runner.invoke(app, ["lock"])
    assert result.exit_code == 1 and 'name = "selector" strings' in result.stderr
    (project / "stance.toml").write_text("[adapters\n")
    assert "is not valid TOML" in runner.invoke(app, ["lock"]).stderr
    (project / "stance.toml").write_text('[adapters]\n"Bad" = "1"\n')
    assert "invalid name 'bad'" in runner.invoke(app, ["lock"]).stderr.lower()
    assert not (project / "stance.lock").exists()
