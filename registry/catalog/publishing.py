"""The one publish sequence, shared by the embedded registry and ``POST .../versions``.

The order is what keeps a publish safe against a concurrent ``stance gc``: the gc watermark is
read before the store is checked for the blobs, the blobs are staged (uploaded or found) with
no catalog lock held, a releasing store (the Hub) commits next, and only then one write
transaction records the version. A crash anywhere leaves at most unreferenced blobs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from registry.access import Caller, Scope
from registry.catalog import service
from registry.catalog.db import transaction
from registry.catalog.gc import Watermark, watermark
from registry.manifest import Manifest
from registry.schemas import PublishResult
from registry.spec import parse_publish_target, validate_alias
from registry.stores import Store


def _publish(
    sessions: sessionmaker[Session],
    store: Store,
    stage: Callable[[Watermark], service.Staged],
    *,
    target: str,
    alias: str | None,
    caller: Caller,
) -> PublishResult:
    with sessions() as session:
        mark = watermark(session)  # before the store is checked for the blobs
    staged = stage(mark)
    with sessions() as session:
        staged = service.release(session, store, staged, target=target, caller=caller)
    with transaction(sessions) as session:
        return service.publish(session, staged, target=target, alias=alias, caller=caller)


def publish_folder(
    sessions: sessionmaker[Session],
    store: Store,
    folder: Path,
    *,
    target: str,
    alias: str | None,
    caller: Caller,
    max_weights_bytes: int,
) -> PublishResult:
    """Publish a PEFT folder on this machine: its blobs are uploaded to ``store`` first."""
    service.check_target(store, target)
    if alias is not None:
        validate_alias(alias)

    def stage(mark: Watermark) -> service.Staged:
        return service.stage_folder(store, folder, max_weights_bytes=max_weights_bytes, mark=mark)

    return _publish(sessions, store, stage, target=target, alias=alias, caller=caller)


def publish_manifest(
    sessions: sessionmaker[Session],
    store: Store,
    manifest: Manifest,
    *,
    target: str,
    alias: str | None,
    caller: Caller,
    max_weights_bytes: int,
) -> PublishResult:
    """Publish a manifest whose blobs a client uploaded; they are inspected here, never trusted."""
    namespace, _, _ = parse_publish_target(target)
    caller.authorize(Scope.PUBLISH, namespace)  # before any work on the blobs

    def stage(mark: Watermark) -> service.Staged:
        return service.stage_manifest(
            store, manifest, max_weights_bytes=max_weights_bytes, mark=mark
        )

    return _publish(sessions, store, stage, target=target, alias=alias, caller=caller)
