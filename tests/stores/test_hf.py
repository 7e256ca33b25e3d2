"""The ``hf://`` store against our stand-in for the Hub's HTTP API (tests/hub_standin.py).

What a plain PEFT user sees is checked with PEFT itself, in a child process that knows nothing
of stance: ``PeftModel.from_pretrained(base, repo, revision=sha)`` with ``HF_ENDPOINT`` set.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import RepositoryNotFoundError
from peft import PeftModel
from safetensors.torch import load_file
from typer.testing import CliRunner

from cli.main import app
from registry import Registry
from registry.catalog import service
from registry.catalog.gc import Watermark, collect_garbage
from registry.embedded import EmbeddedRegistry
from registry.errors import Conflict, Forbidden, IntegrityError, InvalidSpec, Unauthorized
from registry.manifest import Manifest, digest_bytes
from registry.settings import Settings
from registry.stores import blob_key, open_store
from registry.stores.hf import HfStore
from tests.api.conftest import Server
from tests.conftest import snapshot
from tests.factories import make_adapter, tiny_llama
from tests.stores.conftest import HUB_TOKEN

SPEC = "curious@1.0.0"
ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors"]

PLAIN_PEFT_USER = """
import sys

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

base_dir, repo, revision, out = sys.argv[1:]
base = AutoModelForCausalLM.from_pretrained(base_dir)
model = PeftModel.from_pretrained(base, repo, revision=revision).eval()
with torch.no_grad():
    logits = model(torch.arange(12).reshape(1, 12)).logits
save_file({"logits": logits.contiguous()}, out)
"""


@pytest.fixture
def hf_registry(settings: Settings, hf_url: str) -> Iterator[EmbeddedRegistry]:
    """``STANCE_STORE=hf://owner``; endpoint and token come from ``HF_ENDPOINT``/``HF_TOKEN``."""
    registry = EmbeddedRegistry(Settings(store=hf_url), actor="test")
    assert isinstance(registry.store, HfStore)
    yield registry
    registry.close()


def hub(endpoint: str) -> HfApi:
    return HfApi(endpoint=endpoint, token=HUB_TOKEN)


def hub_state(api: HfApi, repo: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Branch and tag targets, and the commits on main: what a refusal must leave alone."""
    try:
        refs = api.list_repo_refs(repo)
    except RepositoryNotFoundError:  # no repo at all is a state too
        return [], []
    targets = [(r.ref, r.target_commit) for r in [*refs.branches, *refs.tags]]
    return sorted(targets), [c.commit_id for c in api.list_repo_commits(repo)]


def other_catalog(tmp_path: Path, hf_url: str, monkeypatch: pytest.MonkeyPatch) -> EmbeddedRegistry:
    """A second catalog on the same Hub owner (another team's registry)."""
    monkeypatch.setenv("STANCE_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    return EmbeddedRegistry(Settings(store=hf_url, home=tmp_path / "other-home"), actor="test")


def released(registry: EmbeddedRegistry, folder: Path, endpoint: str) -> tuple[HfApi, str]:
    """Publish ``folder`` as SPEC through an hf:// store: the Hub API and the adapter's repo."""
    registry.publish(folder, SPEC)
    repo = registry.resolve(SPEC).hub_repo
    assert repo is not None
    return hub(endpoint), repo


def test_publish_releases_a_tagged_repo_that_plain_peft_loads(
    hf_registry: EmbeddedRegistry, adapters: dict[str, Path], hf_env: str, tmp_path: Path
) -> None:
    result = hf_registry.publish(adapters["curious"], SPEC)
    assert result.created
    found = hf_registry.resolve(SPEC)
    owner = hf_registry.store.url.removeprefix("hf://")
    assert found.hub_repo == f"{owner}/curious"
    api = hub(hf_env)
    tags = {t.name: t.target_commit for t in api.list_repo_refs(found.hub_repo).tags}
    assert tags == {"v1.0.0": found.hub_revision}
    assert found.hub_revision is not None and len(found.hub_revision) == 40
    files = set(api.list_repo_files(found.hub_repo, revision=found.hub_revision))
    assert files == {".gitattributes", *ADAPTER_FILES, "README.md", "stance.json"}
    record = json.loads(
        Path(
            api.hf_hub_download(found.hub_repo, "stance.json", revision=found.hub_revision)
        ).read_text()
    )
    assert record["digest"] == found.digest and record["version"] == "1.0.0"
    card = Path(api.hf_hub_download(found.hub_repo, "README.md", revision=found.hub_revision))
    assert "library_name: peft" in card.read_text()

    base_dir = tmp_path / "base"
    tiny_llama().save_pretrained(base_dir)
    out = tmp_path / "logits.safetensors"
    env = {**os.environ, "HF_HOME": str(tmp_path / "peft-user-hf")}
    subprocess.run(
        [sys.executable, "-c", PLAIN_PEFT_USER, str(base_dir), found.hub_repo, found.hub_revision]
        + [str(out)],
        env=env,
        check=True,
        timeout=300,
    )
    local = PeftModel.from_pretrained(tiny_llama(), str(adapters["curious"])).eval()
    with torch.no_grad():
        expected = local(torch.arange(12).reshape(1, 12)).logits
    assert torch.equal(load_file(out)["logits"], expected)


def test_versions_share_one_repo_and_each_tag_keeps_its_files(
    hf_registry: EmbeddedRegistry, adapters: dict[str, Path], hf_env: str, tmp_path: Path
) -> None:
    carded = tmp_path / "carded"
    shutil.copytree(adapters["curious"], carded)
    (carded / "README.md").write_text("---\nlibrary_name: peft\n---\n# our own card\n")
    first = hf_registry.publish(carded, "team-a/curious@1.0.0")
    second = hf_registry.publish(adapters["confident"], "team-a/curious@1.1.0")
    assert first.created and second.created
    v1, v2 = (hf_registry.resolve(f"team-a/curious@{v}") for v in ("1.0.0", "1.1.0"))
    assert v1.hub_repo == v2.hub_repo and v1.hub_repo is not None
    assert v1.hub_repo.endswith("/team-a__curious")
    api = hub(hf_env)
    readme = "README.md"
    assert (
        "our own card"
        in Path(api.hf_hub_download(v1.hub_repo, readme, revision=v1.hub_revision)).read_text()
    )
    assert (
        "our own card"
        not in Path(api.hf_hub_download(v2.hub_repo, readme, revision=v2.hub_revision)).read_text()
    )
    main = api.list_repo_refs(v1.hub_repo).branches[0].target_commit
    assert main == v2.hub_revision  # main follows the latest publish; tags stay put
    for found, folder in ((v1, carded), (v2, adapters["confident"])):
        for name in ADAPTER_FILES:
            got = api.hf_hub_download(found.hub_repo, name, revision=found.hub_revision)
            assert Path(got).read_bytes() == (folder / name).read_bytes()


def test_republish_is_a_no_op_and_other_content_changes_nothing(
    hf_registry: EmbeddedRegistry, adapters: dict[str, Path], hf_env: str, tmp_path: Path
) -> None:
    api, repo = released(hf_registry, adapters["curious"], hf_env)
    before = hub_state(api, repo)
    assert not hf_registry.publish(adapters["curious"], SPEC).created
    assert hub_state(api, repo) == before

    with pytest.raises(Conflict, match="already published with different content"):
        hf_registry.publish(adapters["confident"], SPEC)
    assert hub_state(api, repo) == before


def test_a_tag_holding_other_content_is_a_conflict(
    hf_registry: EmbeddedRegistry,
    adapters: dict[str, Path],
    hf_url: str,
    hf_env: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two catalogs on one Hub owner: the Hub's tag keeps versions immutable across both."""
    api, repo = released(hf_registry, adapters["curious"], hf_env)
    before = hub_state(api, repo)

    with other_catalog(tmp_path, hf_url, monkeypatch) as other:
        catalog = snapshot(other.settings.catalog_url, tmp_path / "no-local-store")
        with pytest.raises(Conflict, match="already has tag v1.0.0"):
            other.publish(adapters["confident"], SPEC)
        assert snapshot(other.settings.catalog_url, tmp_path / "no-local-store") == catalog
        assert hub_state(api, repo) == before
        # The same content is recognised, and recorded with the same commit.
        assert other.publish(adapters["curious"], SPEC).created
        assert other.resolve(SPEC).hub_revision == hf_registry.resolve(SPEC).hub_revision
    assert hub_state(api, repo) == before


@pytest.fixture
def untagged(
    hf_registry: EmbeddedRegistry, adapters: dict[str, Path], hf_env: str
) -> tuple[HfApi, str, str]:
    """curious@1.0.0 committed to main but not tagged: a racing publisher about to tag it,
    or one that died before it could. The Hub API, the repo, and the untagged commit."""
    api, repo = released(hf_registry, adapters["curious"], hf_env)
    api.delete_tag(repo, tag="v1.0.0")
    return api, repo, api.list_repo_refs(repo).branches[0].target_commit


def test_a_racing_release_of_the_same_version_is_not_overwritten(
    untagged: tuple[HfApi, str, str],
    adapters: dict[str, Path],
    hf_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first publisher's commit is on main, its tag not yet made: other content for that
    version is refused without a commit; the same content is tagged at that very commit."""
    api, repo, head = untagged
    before = hub_state(api, repo)
    with other_catalog(tmp_path, hf_url, monkeypatch) as other:
        with pytest.raises(Conflict, match="another publisher is releasing"):
            other.publish(adapters["confident"], SPEC)
        assert hub_state(api, repo) == before
        assert other.publish(adapters["curious"], SPEC).created
        assert other.resolve(SPEC).hub_revision == head
    refs = api.list_repo_refs(repo)
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1.0.0", head)]
    assert hub_state(api, repo)[1] == before[1]  # no new commit


def test_a_release_its_publisher_never_tagged_is_committed_over_once_abandoned(
    untagged: tuple[HfApi, str, str], adapters: dict[str, Path], hf_url: str, tmp_path: Path
) -> None:
    api, repo, head = untagged
    owner = hf_url.removeprefix("hf://")
    store = HfStore(owner, token=HUB_TOKEN, abandoned_after=timedelta(0))
    with pytest.raises(Conflict, match="another publisher is releasing"):
        HfStore(owner, token=HUB_TOKEN).release(
            "default", "curious", "1.0.0", staged(store, adapters["confident"]), None
        )
    release = store.release(
        "default", "curious", "1.0.0", staged(store, adapters["confident"]), None
    )
    assert release.revision != head
    tags = api.list_repo_refs(repo).tags
    assert [(t.name, t.target_commit) for t in tags] == [("v1.0.0", release.revision)]


def staged(store: HfStore, folder: Path) -> Manifest:
    return service.stage_folder(
        store, folder, max_weights_bytes=10**9, mark=Watermark(0, frozenset())
    ).manifest


def test_a_repo_that_is_not_ours_is_never_written(
    hf_registry: EmbeddedRegistry, adapters: dict[str, Path], settings: Settings, hf_env: str
) -> None:
    owner = hf_registry.store.url.removeprefix("hf://")
    api = hub(hf_env)
    api.create_repo(f"{owner}/curious")
    api.create_commit(
        f"{owner}/curious",
        [CommitOperationAdd("config.json", b'{"model_type": "llama"}')],
        commit_message="somebody's own model",
    )
    before = hub_state(api, f"{owner}/curious")
    catalog = snapshot(settings.catalog_url, settings.home / "no-local-store")
    with pytest.raises(Conflict, match="is not the repo of default/curious"):
        hf_registry.publish(adapters["curious"], SPEC)
    assert hub_state(api, f"{owner}/curious") == before
    assert snapshot(settings.catalog_url, settings.home / "no-local-store") == catalog


def test_a_wrong_token_is_refused_and_changes_nothing(
    hf_registry: EmbeddedRegistry,
    adapters: dict[str, Path],
    settings: Settings,
    hf_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_token")
    catalog = snapshot(settings.catalog_url, settings.home / "no-local-store")
    with EmbeddedRegistry(Settings(store=hf_url), actor="test") as wrong:
        with pytest.raises(Unauthorized, match="401"):
            wrong.publish(adapters["curious"], SPEC)
        assert list(wrong.store.iter()) == []
    assert snapshot(settings.catalog_url, settings.home / "no-local-store") == catalog


@pytest.mark.parametrize("url", ["hf://", "hf://owner/extra", "hf://bad--owner"])
def test_bad_hf_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidSpec):
        open_store(url)


def test_a_name_the_hub_cannot_hold_is_refused(
    hf_registry: EmbeddedRegistry, adapters: dict[str, Path], settings: Settings
) -> None:
    catalog = snapshot(settings.catalog_url, settings.home / "no-local-store")
    with pytest.raises(InvalidSpec, match="no valid Hub repo name"):
        hf_registry.publish(adapters["curious"], "curious--role@1.0.0")
    assert snapshot(settings.catalog_url, settings.home / "no-local-store") == catalog
    assert list(hf_registry.store.iter()) == []  # refused before any upload


def test_pull_gc_and_reclaim_on_the_hub(
    hf_registry: EmbeddedRegistry, adapters: dict[str, Path], hf_env: str, tmp_path: Path
) -> None:
    hf_registry.publish(adapters["curious"], SPEC)
    out = hf_registry.fetch(SPEC, tmp_path / "out")
    for name in ADAPTER_FILES:
        assert (out / name).read_bytes() == (adapters["curious"] / name).read_bytes()

    store = hf_registry.store
    orphan = b"uploaded by a publish that never committed"
    store.put(digest_bytes(orphan), io.BytesIO(orphan))
    referenced = {f.digest for f in hf_registry.resolve(SPEC).files}
    assert collect_garbage(hf_registry.sessions, store).count == 0  # young: in the grace period
    result = collect_garbage(hf_registry.sessions, store, grace=timedelta(0))
    assert result.digests == [digest_bytes(orphan)]
    assert {b.digest for b in store.iter()} == referenced
    assert isinstance(store, HfStore)
    history = hub(hf_env).list_repo_commits(store.blobs, repo_type="dataset")
    assert len(history) == 1  # squashed, so the Hub can free the removed bytes
    again = hf_registry.fetch(SPEC, tmp_path / "again")
    assert (again / ADAPTER_FILES[1]).read_bytes() == (out / ADAPTER_FILES[1]).read_bytes()


def test_lock_and_export_pin_the_hub_commit(
    hf_registry: EmbeddedRegistry,
    adapters: dict[str, Path],
    settings: Settings,
    hf_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hf_registry.publish(adapters["curious"], SPEC)
    found = hf_registry.resolve(SPEC)
    monkeypatch.setenv("STANCE_STORE", hf_url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stance.toml").write_text('[adapters]\ncurious = "^1.0"\n')
    runner = CliRunner()
    assert runner.invoke(app, ["lock"]).exit_code == 0
    assert f'hub_revision = "{found.hub_revision}"' in (tmp_path / "stance.lock").read_text()
    exported = runner.invoke(app, ["export", "--format", "peft", "--hub"])
    assert exported.exit_code == 0, exported.output
    assert (
        f"PeftModel.from_pretrained(base, {found.hub_repo!r}, "
        f"revision={found.hub_revision!r}, adapter_name='curious')"
    ) in exported.stdout
    shown = runner.invoke(app, ["show", SPEC])
    assert f"on the Hub: {found.hub_repo} at {found.hub_revision}" in shown.stdout
    refused = runner.invoke(app, ["export", "--format", "vllm", "--hub"])
    assert refused.exit_code == 2


def test_export_hub_refuses_versions_not_on_the_hub(
    registry: EmbeddedRegistry,
    adapters: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry.publish(adapters["curious"], SPEC)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stance.toml").write_text('[adapters]\ncurious = "1.0.0"\n')
    runner = CliRunner()
    assert runner.invoke(app, ["lock"]).exit_code == 0
    refused = runner.invoke(app, ["export", "--format", "peft", "--hub"])
    assert refused.exit_code == 1
    assert "not released to the Hub: default/curious@1.0.0" in refused.stderr


def test_a_different_adapter_is_its_own_repo(
    hf_registry: EmbeddedRegistry, tmp_path: Path, hf_env: str
) -> None:
    folder = make_adapter(tmp_path / "engaged", seed=7, r=4)
    hf_registry.publish(folder, "engaged@0.1.0")
    found = hf_registry.resolve("engaged@0.1.0")
    assert found.hub_repo is not None and found.hub_repo.endswith("/engaged")


def test_a_server_on_the_hub_releases_what_clients_publish(
    serve: Callable[..., Server],
    operator: EmbeddedRegistry,
    adapters: dict[str, Path],
    hf_url: str,
    hf_env: str,
    tmp_path: Path,
) -> None:
    """``stance serve`` with ``STANCE_STORE=hf://owner``: HTTP clients publish, the Hub gets the
    tagged release, and a token that may only read changes nothing anywhere."""
    server = serve(STANCE_STORE=hf_url, HF_ENDPOINT=hf_env, HF_TOKEN=HUB_TOKEN, HF_HUB_OFFLINE="0")
    client = Settings(home=tmp_path / "client")
    reader = operator.create_token("read").token
    with Registry(server.url, settings=client, token=reader) as remote, pytest.raises(Forbidden):
        remote.publish(adapters["curious"], SPEC)
    owner = hf_url.removeprefix("hf://")
    assert hub_state(hub(hf_env), f"{owner}/curious") == ([], [])
    publisher = operator.create_token("publish").token
    with Registry(server.url, settings=client, token=publisher) as remote:
        assert remote.publish(adapters["curious"], SPEC).created
        found = remote.resolve(SPEC)
        pulled = remote.fetch(SPEC, tmp_path / "pulled")
    assert found.hub_repo == f"{owner}/curious"
    tags = hub(hf_env).list_repo_refs(found.hub_repo).tags
    assert [(t.name, t.target_commit) for t in tags] == [("v1.0.0", found.hub_revision)]
    for name in ADAPTER_FILES:
        assert (pulled / name).read_bytes() == (adapters["curious"] / name).read_bytes()
    page = httpx.get(f"{server.url}/adapters/default/curious/1.0.0").text
    assert (
        f"PeftModel.from_pretrained(base, &#34;{found.hub_repo}&#34;, "
        f"revision=&#34;{found.hub_revision}&#34;)"
    ) in page


def test_a_corrupted_blob_on_the_hub_is_refused_and_nothing_is_written(
    hf_registry: EmbeddedRegistry, adapters: dict[str, Path], hf_env: str, tmp_path: Path
) -> None:
    hf_registry.publish(adapters["curious"], SPEC)
    store = hf_registry.store
    assert isinstance(store, HfStore)
    weights = next(f for f in hf_registry.resolve(SPEC).files if f.path.endswith(".safetensors"))
    hub(hf_env).create_commit(  # someone with write access overwrites the blob
        store.blobs,
        [CommitOperationAdd(blob_key(weights.digest), b"\0tampered")],
        commit_message="overwrite",
        repo_type="dataset",
    )
    out = tmp_path / "out"
    with pytest.raises(IntegrityError, match=f"expected {weights.digest}"):
        hf_registry.fetch(SPEC, out)
    assert list(out.iterdir()) == []
    with pytest.raises(IntegrityError):
        hf_registry.fetch(SPEC)  # into the shared cache: nothing lands there either
    assert not hf_registry.cache.blob_path(weights.digest).exists()
