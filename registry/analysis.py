"""Comparisons across adapters: exact diffs and "similar adapters", over the catalog and store."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy.orm import Session

from registry import queries
from registry.fingerprint import Similarity, similarity
from registry.inspect import CONFIG, LoraModule, read_config, read_modules
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


def load(
    session: Session, store: Store, spec_or_dir: str, *, max_weights_bytes: int
) -> tuple[str | None, list[LoraModule]]:
    """Base model and modules of an existing folder, else of a published version (verified)."""
    folder = Path(spec_or_dir)
    if folder.exists():
        return _read(folder, max_weights_bytes=max_weights_bytes)
    resolution = queries.resolve_spec(session, spec_or_dir)
    with tempfile.TemporaryDirectory(prefix="stance-load-") as tmp:
        copy_verified(store, resolution.files, Path(tmp))
        return _read(Path(tmp), max_weights_bytes=max_weights_bytes)


def _read(folder: Path, *, max_weights_bytes: int) -> tuple[str | None, list[LoraModule]]:
    modules = read_modules(folder, max_weights_bytes=max_weights_bytes)
    return read_config(folder / CONFIG).get("base_model_name_or_path"), modules


def diff(session: Session, store: Store, x: str, y: str, *, max_weights_bytes: int) -> Diff:
    """Exact similarity of two adapters (published specs or folders), module by module."""
    base_x, left = load(session, store, x, max_weights_bytes=max_weights_bytes)
    base_y, right = load(session, store, y, max_weights_bytes=max_weights_bytes)
    bases = [base_x, base_y]
    warnings = []
    if bases[0] != bases[1]:
        warnings.append(f"different base models ({bases[0]} vs {bases[1]}): compare with care")
    result = similarity(left, right)
    return Diff(**result.model_dump(), x=x, y=y, base_models=bases, warnings=warnings)


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
    _, mine = load(
        session,
        store,
        f"{query.adapter.namespace.name}/{query.adapter.name}@{query.version}",
        max_weights_bytes=max_weights_bytes,
    )
    out = []
    for approx, namespace, name, version in candidates:
        _, theirs = load(
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
