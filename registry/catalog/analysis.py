"""Comparisons across adapters: exact diffs and "similar adapters", over the catalog and store."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy.orm import Session

from registry.catalog import queries
from registry.lora.fingerprint import Similarity, similarity
from registry.lora.inspection import CONFIG, LoraModule, read_config, read_modules
from registry.stores import Store, copy_verified

# Exact re-scoring reads each candidate's weights; the sketch pass narrows them to this many.
RESCORE = 2


class Diff(Similarity):
    """``stance diff``: the exact cosine of two updates, per module, and what each side is."""

    x: str
    y: str
    base_models: list[str | None]
    warnings: list[str] = []


class SimilarAdapter(BaseModel):
    namespace: str
    name: str
    version: str
    cosine: float
    sketch_cosine: float


Side = tuple[str | None, list[LoraModule]]  # (base model id, modules)


def read_folder(folder: Path, *, max_weights_bytes: int) -> Side:
    """Base model and validated modules of an adapter folder."""
    modules = read_modules(folder, max_weights_bytes=max_weights_bytes)
    return read_config(folder / CONFIG).get("base_model_name_or_path"), modules


def load_spec(session: Session, store: Store, spec: str, *, max_weights_bytes: int) -> Side:
    """Base model and modules of a published version, its files verified on the way."""
    resolution = queries.resolve_spec(session, spec)
    with tempfile.TemporaryDirectory(prefix="stance-load-") as tmp:
        copy_verified(store, resolution.files, Path(tmp))
        return read_folder(Path(tmp), max_weights_bytes=max_weights_bytes)


def compare(x: str, left: Side, y: str, right: Side) -> Diff:
    """The exact diff of two loaded adapters, warning when their base models differ."""
    bases = [left[0], right[0]]
    warnings = []
    if bases[0] != bases[1]:
        warnings.append(f"different base models ({bases[0]} vs {bases[1]}): compare with care")
    result = similarity(left[1], right[1])
    return Diff(**result.model_dump(), x=x, y=y, base_models=bases, warnings=warnings)


def diff(
    session: Session, store: Store, x: str, y: str, *, folders: bool, max_weights_bytes: int
) -> Diff:
    """Exact similarity of two published specs, or (``folders``) of local folders too.

    Only local callers pass ``folders=True``: a server never reads paths its clients name.
    """

    def side(value: str) -> Side:
        if folders and Path(value).exists():
            return read_folder(Path(value), max_weights_bytes=max_weights_bytes)
        return load_spec(session, store, value, max_weights_bytes=max_weights_bytes)

    return compare(x, side(x), y, side(y))


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
