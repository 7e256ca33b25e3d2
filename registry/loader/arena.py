"""One buffer per device holding every site's A and B, so that a role's slot is one row.

Each ``Site``'s ``a`` (slots, R, d_in) and ``b`` (slots, d_out, R) are views of an arena of
shape (slots, L): row ``s`` holds slot ``s`` of every site, site after site, A then B. A role's
weights then lie in one contiguous row, and the sites are laid out in the order of the first
adapter's file, which is the order PEFT saves every adapter of the same shape in. Loading such
an adapter is one copy from the file's bytes to the device, not one per tensor: 120 tensors for
rank-8 q/v on a 30-layer model, each copy costing more in overhead than in bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from registry.errors import IntegrityError
from registry.loader.adapter import AdapterPlan, ModulePlan, TensorRef
from registry.loader.sites import Site, copy_into, zero

_generations = itertools.count()  # unique across arenas: a cached layout never matches anew


@dataclass(frozen=True)
class Copy:
    """Bytes of the file (``source``) into a row, from element ``start``; ``padded`` gives
    (d_out, R) when ``source`` is a lora_B of rank below the site's R (a strided copy)."""

    start: int
    source: TensorRef
    padded: tuple[int, int] | None = None

    def into(self, row: torch.Tensor, source: torch.Tensor) -> None:
        if self.padded is None:
            copy_into(row[self.start : self.start + source.numel()], source)
        else:
            d_out, rank = self.padded
            place = row[self.start : self.start + d_out * rank].view(d_out, rank)
            copy_into(place[:, : source.shape[1]], source)

    def joined(self, after: Copy) -> Copy | None:
        """One copy doing both when they are contiguous in the file and in the row."""
        a, b = self.source, after.source
        if self.padded or after.padded or a.dtype != b.dtype or a.end != b.start:
            return None
        if self.start + (a.end - a.start) // a.dtype.itemsize != after.start:
            return None
        return Copy(self.start, TensorRef(a.start, b.end, a.dtype, (a.shape[0] + b.shape[0],)))


def _flat(ref: TensorRef) -> TensorRef:
    return TensorRef(ref.start, ref.end, ref.dtype, ((ref.end - ref.start) // ref.dtype.itemsize,))


class Arena:
    """The sites on one device and the buffer they view; relaid out only while loading."""

    def __init__(self, *, slots: int, device: torch.device, dtype: torch.dtype) -> None:
        self.slots, self.device, self.dtype = slots, device, dtype
        self.sites: list[Site] = []
        self.offsets: dict[Site, int] = {}
        self.data = torch.zeros(slots, 0, device=device, dtype=dtype)
        self.generation = next(_generations)

    def fit(self, wants: Sequence[tuple[Site, int]]) -> None:
        """Make room for each (site, rank): new sites go last, a larger rank widens its site."""
        ranks = {site: site.rank for site in self.sites}
        changed = False
        for site, rank in wants:
            if site not in ranks:
                self.sites.append(site)
            if rank > ranks.get(site, -1):
                ranks[site], changed = rank, True
        if changed:
            self._layout(self.slots, ranks)

    def resize(self, slots: int) -> None:
        """Grow to ``slots`` slots, keeping every resident role."""
        self._layout(slots, {site: site.rank for site in self.sites})

    def clear(self, slot: int) -> None:
        """Zero a freed slot, so padded ranks and mixed batches never see stale weights."""
        zero(self.data[slot])

    def copies(self, modules: Sequence[tuple[ModulePlan, Site]]) -> list[Copy]:
        """The copies filling a slot with these modules' weights, contiguous runs joined."""
        done: list[Copy] = []
        for module, site in modules:
            start = self.offsets[site]
            b_start = start + site.rank * site.d_in
            b = (
                Copy(b_start, _flat(module.b))
                if module.rank == site.rank
                else Copy(b_start, module.b, (site.d_out, site.rank))
            )
            for copy in (Copy(start, _flat(module.a)), b):
                joined = done[-1].joined(copy) if done else None
                if joined is None:
                    done.append(copy)
                else:
                    done[-1] = joined
        return done

    def _layout(self, slots: int, ranks: dict[Site, int]) -> None:
        offsets, width = {}, 0
        for site in self.sites:
            offsets[site] = width
            width += ranks[site] * (site.d_in + site.d_out)
        data = torch.zeros(slots, width, device=self.device, dtype=self.dtype)
        for site in self.sites:
            rank, start = ranks[site], offsets[site]
            middle = start + rank * site.d_in
            a = data[:, start:middle].view(slots, rank, site.d_in)
            b = data[:, middle : middle + site.d_out * rank].view(slots, site.d_out, rank)
            site.bind(a, b)
        self.slots, self.offsets, self.data = slots, offsets, data
        self.generation = next(_generations)


class Staging:
    """One reusable host buffer that adapter files are read into, page-locked for GPU copies."""

    def __init__(self, *, pin: bool) -> None:
        self.pin = pin
        self._buffer: torch.Tensor | None = None

    def clear(self) -> None:
        self._buffer = None

    def read(self, path: Path, size: int) -> tuple[torch.Tensor, bool]:
        """The whole file as the buffer's first ``size`` bytes, and whether the buffer grew."""
        buffer, grown = self._buffer, False
        if buffer is None or buffer.numel() < size:
            buffer = self._buffer = torch.empty(size, dtype=torch.uint8, pin_memory=self.pin)
            grown = True
        data = buffer[:size]
        view = data.numpy().data
        with path.open("rb", buffering=0) as fh:
            done = 0
            while done < size:
                got = fh.readinto(view[done:])
                if not got:
                    raise IntegrityError(f"{path}: file ended after {done} of {size} bytes")
                done += got
        return data, grown


@dataclass
class Planned:
    """A checked copy plan; once arranged, its sites (with each one's rank and scaling, what
    ``sites.fill`` records) and the copies into its arenas (valid while their generations
    hold), and the copies' sources as views of the staging buffer (each read refills the
    buffer; making 120 views cost as much as copying a small adapter)."""

    plan: AdapterPlan
    folder: Path  # where it was read from: the cache's folder object, compared on each load
    sites: list[Site] = field(default_factory=list)
    fills: list[tuple[Site, int, float]] = field(default_factory=list)
    copies: list[tuple[Arena, int, list[Copy]]] | None = None
    views: list[list[torch.Tensor]] | None = None

    def sources(self, data: torch.Tensor) -> list[list[torch.Tensor]]:
        """Each copy's source as a view of ``data``, the staging buffer."""
        if self.views is not None:
            return self.views
        copies = [copies for _, _, copies in self.copies or []]
        views = [[copy.source.view(data) for copy in each] for each in copies]
        sources = [copy.source for each in copies for copy in each]
        if all(ref.start % ref.dtype.itemsize == 0 for ref in sources):
            self.views = views  # a misaligned tensor is a copy: such views are taken anew
        return views
