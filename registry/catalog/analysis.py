"""Comparisons across adapters: exact diffs, N-way comparisons and "similar adapters", over the
catalog and store."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from registry.catalog import queries
from registry.lora.compare import (
    Comparison,
    Diff,
    Side,
    check_count,
    compare,
    compare_many,
    read_folder,
)
from registry.lora.fingerprint import similarity
from registry.schemas import SimilarAdapter
from registry.stores import Store, copy_verified

# Exact re-scoring reads each candidate's weights; the sketch pass narrows them to this many.
RESCORE = 2


def load_spec(session: Session, store: Store, spec: str, *, max_weights_bytes: int) -> Side:
    """Base model and modules of a published version, its files verified on the way."""
    resolution = queries.resolve_spec(session, spec)
    with tempfile.TemporaryDirectory(prefix="stance-load-") as tmp:
        copy_verified(store, resolution.files, Path(tmp))
        return read_folder(Path(tmp), max_weights_bytes=max_weights_bytes)


def _side(
    session: Session, store: Store, value: str, *, folders: bool, max_weights_bytes: int
) -> Side:
    """A published spec, or (``folders``) a local folder when one exists at that path.

    Only local callers pass ``folders=True``: a server never reads paths its clients name.
    """
    if folders and Path(value).exists():
        return read_folder(Path(value), max_weights_bytes=max_weights_bytes)
    return load_spec(session, store, value, max_weights_bytes=max_weights_bytes)


def diff(
    session: Session, store: Store, x: str, y: str, *, folders: bool, max_weights_bytes: int
) -> Diff:
    """Exact similarity of two published specs, or (``folders``) of local folders too."""
    left = _side(session, store, x, folders=folders, max_weights_bytes=max_weights_bytes)
    right = _side(session, store, y, folders=folders, max_weights_bytes=max_weights_bytes)
    return compare(x, left, y, right)


def compare_specs(
    session: Session, store: Store, specs: list[str], *, folders: bool, max_weights_bytes: int
) -> Comparison:
    """``stance compare``: the cosine matrix and per-layer norms of 2 to 8 specs (or folders)."""
    check_count(specs)
    sides = [
        (spec, _side(session, store, spec, folders=folders, max_weights_bytes=max_weights_bytes))
        for spec in specs
    ]
    return compare_many(sides)


def similar(
    session: Session, store: Store, spec: str, *, limit: int = 10, max_weights_bytes: int
) -> list[SimilarAdapter]:
    """Adapters on the same base model whose updates point the same way as ``spec``'s.

    Every candidate is ranked by its sketch (fast, approximate); the best ``RESCORE * limit``
    are re-scored exactly from their weights, so the cosines returned are exact.
    """
    query, candidates = queries.similar_candidates(session, spec, limit=RESCORE * limit)
    if not candidates:
        return []
    _, mine = load_spec(
        session,
        store,
        f"{query.adapter.namespace.name}/{query.adapter.name}@{query.version}",
        max_weights_bytes=max_weights_bytes,
    )
    out = []
    for approx, namespace, name, version in candidates:
        _, theirs = load_spec(
            session, store, f"{namespace}/{name}@{version}", max_weights_bytes=max_weights_bytes
        )
        exact = similarity(mine, theirs).cosine
        out.append(
            SimilarAdapter(
                namespace=namespace, name=name, version=version, cosine=exact, sketch_cosine=approx
            )
        )
    out.sort(key=lambda s: -s.cosine)
    return out[:limit]
