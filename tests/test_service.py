"""The service layer on SQLite and PostgreSQL: publish, resolve, alias, yank, inside a rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.access import operator
from registry.catalog import queries, service
from registry.catalog.gc import watermark
from registry.catalog.models import AdapterTarget, AliasEvent, AuditEvent, Blob, Version
from registry.errors import Conflict, InvalidAdapter, InvalidSpec, NotFound
from registry.manifest import Manifest
from registry.schemas import SearchQuery
from registry.stores.local import LocalStore
from tests.factories import TINY_BASE, make_adapter


def pub(session: Session, store: LocalStore, folder: Path, target: str, **kw: object):
    mark = watermark(session)
    staged = service.stage_folder(store, folder, max_weights_bytes=10**9, mark=mark)
    return service.publish(session, staged, target=target, caller=operator("tester"), **kw)


def test_publish_records_version_and_blobs(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    result = pub(session, store, adapters["curious"], "curious@1.0.0")
    assert (result.namespace, result.name, result.version, result.created) == (
        "default",
        "curious",
        "1.0.0",
        True,
    )
    row = session.scalars(select(Version)).one()
    manifest = Manifest.model_validate_json(row.manifest)
    assert manifest.digest == row.digest == result.digest
    assert [f.path for f in manifest.files] == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    for entry in manifest.files:
        assert store.exists(entry.digest)
    assert row.info["r"] == 8 and row.base_model == "stance-test/tiny-llama"
    assert session.scalar(select(func.count()).select_from(AuditEvent)) == 1


def test_republish_identical_is_a_noop(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    first = pub(session, store, adapters["curious"], "curious@1.0.0")
    again = pub(session, store, adapters["curious"], "curious@1.0.0")
    assert not again.created and again.digest == first.digest
    assert session.scalar(select(func.count()).select_from(Version)) == 1


def test_republish_different_content_conflicts(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    pub(session, store, adapters["curious"], "curious@1.0.0")
    with pytest.raises(Conflict, match="already published with different content"):
        pub(session, store, adapters["confident"], "curious@1.0.0")


def test_identical_blobs_are_stored_once(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    pub(session, store, adapters["curious"], "curious@1.0.0")
    pub(session, store, adapters["curious"], "team-a/curious-copy@3.0.0")
    assert session.scalar(select(func.count()).select_from(Blob)) == 3
    assert len(list(store.iter())) == 3


def _publish_series(session: Session, store: LocalStore, adapters: dict[str, Path]) -> None:
    for version, key in [
        ("1.0.0", "curious"),
        ("1.2.0", "confident"),
        ("1.2.5", "engaged"),
        ("1.3.0-rc.1", "untrained"),
        ("2.0.0", "curious"),
    ]:
        pub(session, store, adapters[key], f"role@{version}")


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", "2.0.0"),
        ("@latest", "2.0.0"),
        ("@^1.2", "1.2.5"),
        ("@~1.2.0", "1.2.5"),
        ("@>=1.0 <2", "1.2.5"),
        ("@1.0.0", "1.0.0"),
        ("@1.3.0-rc.1", "1.3.0-rc.1"),
        ("@1", "1.2.5"),
    ],
)
def test_resolution(
    session: Session, store: LocalStore, adapters: dict[str, Path], selector: str, expected: str
) -> None:
    _publish_series(session, store, adapters)
    assert queries.resolve_spec(session, f"role{selector}").version == expected


def test_latest_skips_prereleases(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    pub(session, store, adapters["curious"], "role@1.0.0")
    pub(session, store, adapters["confident"], "role@2.0.0-beta.1")
    assert queries.resolve_spec(session, "role").version == "1.0.0"


def test_digest_resolution(session: Session, store: LocalStore, adapters: dict[str, Path]) -> None:
    _publish_series(session, store, adapters)
    digest = queries.resolve_spec(session, "role@1.2.0").digest
    assert queries.resolve_spec(session, f"role@{digest}").version == "1.2.0"
    # identical content under two versions: the digest names the highest
    curious = queries.resolve_spec(session, "role@1.0.0").digest
    assert queries.resolve_spec(session, f"role@{curious}").version == "2.0.0"
    with pytest.raises(NotFound, match="has no version with digest"):
        queries.resolve_spec(session, "role@sha256:" + "0" * 64)


def test_yank_semantics(session: Session, store: LocalStore, adapters: dict[str, Path]) -> None:
    _publish_series(session, store, adapters)
    yanked = service.yank(session, "role@2.0.0", reason="regressed", caller=operator("tester"))
    assert yanked.yanked
    assert queries.resolve_spec(session, "role").version == "1.2.5"
    with pytest.raises(NotFound, match="no non-yanked version matching"):
        queries.resolve_spec(session, "role@>=2")
    exact = queries.resolve_spec(session, "role@2.0.0")
    assert exact.yanked and exact.yanked_reason == "regressed"
    by_digest = queries.resolve_spec(session, f"role@{exact.digest}")
    assert by_digest.yanked
    assert session.scalar(select(func.count()).select_from(Version)) == 5  # never deleted
    service.unyank(session, "role@2.0.0", caller=operator("tester"))
    assert queries.resolve_spec(session, "role").version == "2.0.0"
    actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions[-2:] == ["yank", "unyank"]


def test_yank_needs_an_exact_version(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    pub(session, store, adapters["curious"], "role@1.0.0")
    with pytest.raises(InvalidSpec):
        service.yank(session, "role", caller=operator("tester"))
    with pytest.raises(NotFound):
        service.yank(session, "role@9.9.9", caller=operator("tester"))


def test_aliases_move_with_history(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    _publish_series(session, store, adapters)
    service.set_alias(session, "role", "prod", "1.0.0", caller=operator("alice"))
    assert queries.resolve_spec(session, "role@prod").version == "1.0.0"
    service.set_alias(session, "role", "prod", "1.2.0", caller=operator("bob"))
    service.set_alias(
        session, "role", "prod", "1.2.0", caller=operator("bob")
    )  # no-op, no history row
    assert queries.resolve_spec(session, "role@prod").version == "1.2.0"
    history = session.scalars(select(AliasEvent).order_by(AliasEvent.id)).all()
    assert [(h.from_version, h.to_version, h.actor) for h in history] == [
        (None, "1.0.0", "alice"),
        ("1.0.0", "1.2.0", "bob"),
    ]
    service.remove_alias(session, "role", "prod", caller=operator("carol"))
    with pytest.raises(NotFound, match="has no alias 'prod'"):
        queries.resolve_spec(session, "role@prod")
    assert (
        session.scalars(select(AliasEvent.to_version).order_by(AliasEvent.id.desc())).first()
        is None
    )


def test_alias_refusals(session: Session, store: LocalStore, adapters: dict[str, Path]) -> None:
    _publish_series(session, store, adapters)
    with pytest.raises(InvalidSpec):
        service.set_alias(session, "role", "1.0", "1.0.0", caller=operator("t"))
    with pytest.raises(NotFound):
        service.set_alias(session, "role", "prod", "9.0.0", caller=operator("t"))
    service.yank(session, "role@1.0.0", caller=operator("t"))
    with pytest.raises(Conflict, match="yanked"):
        service.set_alias(session, "role", "prod", "1.0.0", caller=operator("t"))
    with pytest.raises(NotFound):
        service.remove_alias(session, "role", "nope", caller=operator("t"))


def test_publish_with_alias(session: Session, store: LocalStore, adapters: dict[str, Path]) -> None:
    pub(session, store, adapters["curious"], "role@1.0.0", alias="prod")
    assert queries.resolve_spec(session, "role@prod").version == "1.0.0"


def test_search_filters_and_pages(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    pub(session, store, adapters["curious"], "curious-uncertainty@1.0.0")
    pub(session, store, adapters["confident"], "confident-expertise@1.0.0")
    pub(session, store, adapters["engaged"], "team-a/engaged-difficulty@0.1.0")
    names = lambda page: [f"{a.namespace}/{a.name}" for a in page.items]  # noqa: E731
    assert names(queries.search(session)) == [
        "default/confident-expertise",
        "default/curious-uncertainty",
        "team-a/engaged-difficulty",
    ]
    assert names(queries.search(session, SearchQuery(text="CURIOUS"))) == [
        "default/curious-uncertainty"
    ]
    assert names(queries.search(session, SearchQuery(rank=4))) == ["team-a/engaged-difficulty"]
    assert names(queries.search(session, SearchQuery(namespace="team-a"))) == [
        "team-a/engaged-difficulty"
    ]
    assert names(queries.search(session, SearchQuery(target="q_proj", base_model="nope"))) == []
    assert len(queries.search(session, SearchQuery(target="v_proj")).items) == 3
    first = queries.search(session, SearchQuery(limit=2))
    assert len(first.items) == 2 and first.next_cursor
    rest = queries.search(session, SearchQuery(limit=2, cursor=first.next_cursor))
    assert names(rest) == ["team-a/engaged-difficulty"] and rest.next_cursor is None
    summary = queries.search(session, SearchQuery(text="engaged")).items[0]
    assert (summary.latest, summary.r, summary.versions) == ("0.1.0", 4, 1)
    with pytest.raises(InvalidSpec, match="invalid cursor"):
        queries.search(session, SearchQuery(cursor="!!"))


def test_target_filters_follow_the_latest_release(
    session: Session, store: LocalStore, adapters: dict[str, Path], tmp_path: Path
) -> None:
    pub(session, store, adapters["curious"], "role@1.0.0")  # q_proj, v_proj
    other = make_adapter(tmp_path / "ko", r=4, target_modules=("k_proj",), base_model="org/other")
    pub(session, store, other, "role@1.1.0")

    def found(**filters: Any) -> bool:
        return [a.name for a in queries.search(session, SearchQuery(**filters)).items] == ["role"]

    newest = dict(target="k_proj", rank=4, base_model="org/other")
    oldest = dict(target="q_proj", rank=8, base_model=TINY_BASE)
    assert all(found(**{k: v}) for k, v in newest.items())
    assert not any(found(**{k: v}) for k, v in oldest.items())
    service.yank(session, "role@1.1.0", caller=operator("t"))
    assert all(found(**{k: v}) for k, v in oldest.items())
    assert not any(found(**{k: v}) for k, v in newest.items())
    service.unyank(session, "role@1.1.0", caller=operator("t"))
    assert found(**newest) and not found(**oldest)
    rows = session.execute(select(AdapterTarget.module)).scalars().all()
    assert rows == ["k_proj"]


def test_adapter_detail_orders_by_semver(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    _publish_series(session, store, adapters)
    detail = queries.adapter_detail(session, "role")
    assert [v.version for v in detail.versions] == [
        "2.0.0",
        "1.3.0-rc.1",
        "1.2.5",
        "1.2.0",
        "1.0.0",
    ]
    assert detail.latest == "2.0.0"


def test_stage_manifest_inspects_server_side(
    session: Session, store: LocalStore, adapters: dict[str, Path]
) -> None:
    from registry.lora.inspection import inspect_dir
    from registry.manifest import manifest_of

    manifest = manifest_of(inspect_dir(adapters["curious"]).files)
    with pytest.raises(NotFound, match="not uploaded"):
        service.stage_manifest(store, manifest, max_weights_bytes=10**9, mark=watermark(session))
    for entry in manifest.files:
        with (adapters["curious"] / entry.path).open("rb") as fh:
            store.put(entry.digest, fh)
    staged = service.stage_manifest(
        store, manifest, max_weights_bytes=10**9, mark=watermark(session)
    )
    assert staged.info.r == 8
    result = service.publish(session, staged, target="c@1.0.0", caller=operator("t"))
    assert result.digest == manifest.digest and result.created
    # A manifest that names the config's blob as the weights is inspected and refused.
    config = manifest.file("adapter_config.json")
    swapped = Manifest.of(
        [
            e
            if e.path != "adapter_model.safetensors"
            else e.model_copy(update={"digest": config.digest, "size": config.size})
            for e in manifest.files
        ]
    )
    with pytest.raises(InvalidAdapter, match="adapter_model.safetensors"):
        service.stage_manifest(store, swapped, max_weights_bytes=10**9, mark=watermark(session))
    extra = Manifest.of([*manifest.files, config.model_copy(update={"path": "run.sh"})])
    with pytest.raises(InvalidAdapter, match="unexpected files"):
        service.stage_manifest(store, extra, max_weights_bytes=10**9, mark=watermark(session))
