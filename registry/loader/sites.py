"""Per-module stacked LoRA buffers and the forward hook that reads them.

Every adapted module is a ``Site``: one buffer ``a`` of shape (slots, R, d_in) and one ``b`` of
shape (slots, d_out, R), where a slot holds one resident role (zero-padded to the site's
largest rank R) and slot 0 is the base model, zeros everywhere. A hook on the module adds the
active role's update to the module's output, reading a shared ``State``. Switching writes the
state's slot index and nothing else: no allocation, no walk over modules, the same cost with 2
or 200 roles resident. The buffers are views of their device's ``Arena``, which grows
(reallocates) only while a role is being loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from registry.errors import RegistryError

BASE, ONE, MIX, ROWS = range(4)
_NUMPY_DTYPES = {torch.float16, torch.float32, torch.float64}
_PARALLEL = 32768  # at::internal::GRAIN_SIZE: torch splits larger CPU copies across threads


def _host(tensor: torch.Tensor, dtype: torch.dtype) -> bool:
    return (
        tensor.device.type == "cpu"
        and tensor.dtype == dtype
        and dtype in _NUMPY_DTYPES
        and tensor.numel() > _PARALLEL
    )


def copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst.copy_(src)``, through numpy for large same-dtype CPU tensors.

    torch runs each copy above its grain size in an OpenMP region; on oversubscribed cores
    (a shared CI box) each region's barrier costs milliseconds, numpy's serial copy does not
    (measured: 420 copies of a rank-64 adapter, 63 ms with torch, 8 ms with numpy). Smaller
    copies are serial in torch too, and cheaper there.
    """
    if _host(dst, src.dtype) and src.device.type == "cpu":
        np.copyto(dst.numpy(), src.numpy())
    else:
        dst.copy_(src, non_blocking=True)


def zero(tensor: torch.Tensor) -> None:
    """``tensor.zero_()``, through numpy on the CPU for the same reason as ``copy_into``."""
    if _host(tensor, tensor.dtype):
        tensor.numpy().fill(0)
    else:
        tensor.zero_()


def batch_rows(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The batch size of a ``forward``/``generate`` call, when its inputs show it."""
    for given in (args[0] if args else None, kwargs.get("input_ids"), kwargs.get("inputs_embeds")):
        if isinstance(given, torch.Tensor) and given.dim() >= 2:
            return int(given.shape[0])
    return None


def fill(sites: Sequence[tuple[Site, int, float]], slot: int) -> None:
    """Record a role whose weights were just copied into ``slot``: (site, rank, scaling) each.

    One loop over a list made once per layout, not a method call per site: on a small adapter
    the per-site Python work was most of what a load cost beyond reading and copying it.
    """
    for site, rank, scaling in sites:
        site.rank_of[slot], site.scale[slot] = rank, scaling
        site.lora[slot] = site.view(slot, rank)
        site.scales = None


def clear(sites: Sequence[Site], slot: int) -> None:
    """Forget a freed slot at each site (the arena zeroes its weights)."""
    for site in sites:
        site.rank_of[slot], site.scale[slot] = 0, 0.0
        site.lora[slot] = None
        site.scales = None


class State:
    """What every hook reads on each forward; a switch writes ``mode`` and ``slot`` only."""

    __slots__ = ("mode", "slot", "rows", "expand", "_rows_on")

    def __init__(self) -> None:
        self.mode = BASE
        self.slot = 0
        self.rows: list[int] = []
        self.expand = False
        self._rows_on: dict[tuple[torch.device, int, bool], torch.Tensor] = {}

    def set_rows(self, rows: list[int], *, expand: bool) -> None:
        self.rows, self.expand = rows, expand
        self._rows_on.clear()

    def rows_on(self, device: torch.device, count: int, *, flat: bool, where: str) -> torch.Tensor:
        """The slot of each of a module's ``count`` input rows, made once per batch and device.

        generate() repeats each prompt for beams or return sequences, row by row; modules that
        see flattened tokens (OPT's fc1/fc2 get (batch * seq, d)) get each row's tokens in turn.
        """
        key = (device, count, flat)
        rows = self._rows_on.get(key)
        if rows is None:
            n = len(self.rows)
            repeat = count // n if (self.expand or flat) and count % n == 0 else 1
            if n * repeat != count:
                raise RegistryError(
                    f"adapter_names has {n} entries but {where} sees {count} rows, which do not "
                    "split into one run per entry; give one name per row of the batch"
                )
            rows = torch.tensor(self.rows, device=device).repeat_interleave(repeat)
            self._rows_on[key] = rows
        return rows


class Site:
    """One adapted module: all resident roles' A and B, stacked by slot, as views of an arena."""

    def __init__(
        self, module: nn.Module, d_in: int, d_out: int, *, state: State, path: str = ""
    ) -> None:
        self.d_in, self.d_out, self.path = d_in, d_out, path or type(module).__name__
        self.state = state
        self.a = torch.zeros(0, 0, d_in)  # bound to the arena's views before the first role
        self.b = torch.zeros(0, d_out, 0)
        self.rank = 0  # R: the largest rank resident here; smaller ones are zero-padded to it
        self.rank_of: list[int] = []
        self.scale: list[float] = []
        # Per-slot (A, B) views made at load, so the hot path indexes a list and slices nothing.
        self.lora: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self.whole: list[tuple[torch.Tensor, torch.Tensor]] = []  # each slot at full rank R
        self.scales: torch.Tensor | None = None  # device copy of ``scale`` for mixed batches
        self.mix: tuple[torch.Tensor, torch.Tensor] | None = None
        self.handle = module.register_forward_hook(self)

    def bind(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Move to new buffers (more slots or a larger R), keeping every resident role."""
        n, r = min(a.shape[0], self.a.shape[0]), min(a.shape[1], self.rank)
        if n and r:
            a[:n, :r] = self.a[:n, :r]
            b[:n, :, :r] = self.b[:n, :, :r]
        self.a, self.b, self.rank = a, b, a.shape[1]
        grow = a.shape[0] - len(self.rank_of)
        self.rank_of += [0] * grow
        self.scale += [0.0] * grow
        self.lora += [None] * grow
        self.whole = list(zip(a.unbind(0), b.unbind(0), strict=True))
        for slot, k in enumerate(self.rank_of):
            if k:
                self.lora[slot] = self.view(slot, k)
        self.scales = None

    def view(self, slot: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slot ``slot``'s A and B at ``rank`` (made once at load: the hook slices nothing)."""
        if rank == self.rank:
            return self.whole[slot]
        return self.a[slot, :rank], self.b[slot, :, :rank]

    def set_mix(self, parts: list[tuple[int, float]]) -> None:
        """PEFT's ``combination_type="cat"``: A rows scaled by weight * scaling, B side by side."""
        a_parts, b_parts = [], []
        for slot, weight in parts:
            lora = self.lora[slot]
            if lora is not None:
                a_parts.append(lora[0] * weight * self.scale[slot])
                b_parts.append(lora[1])
        self.mix = (torch.cat(a_parts), torch.cat(b_parts, dim=1)) if a_parts else None

    def _mixed(self, x: torch.Tensor) -> torch.Tensor:
        """Each row through its own role in one batched product; base rows hit the zero slot."""
        n = x.shape[0]
        rows = self.state.rows_on(self.a.device, n, flat=x.dim() == 2, where=self.path)
        if self.scales is None:
            with torch.inference_mode(False):  # cached: must outlive an inference-mode call
                self.scales = torch.tensor(self.scale, dtype=self.a.dtype, device=self.a.device)
        a = self.a.index_select(0, rows).transpose(1, 2)  # (n, d_in, R)
        b = self.b.index_select(0, rows).transpose(1, 2)  # (n, R, d_out)
        z = torch.matmul(torch.matmul(x.reshape(n, -1, self.d_in).to(a.dtype), a), b)
        # Scaled after B, as PEFT's _mixed_batch_forward does.
        return (z * self.scales.index_select(0, rows).view(n, 1, 1)).reshape(
            *x.shape[:-1], self.d_out
        )

    def __call__(self, module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> Any:
        # PEFT's lora.Linear.forward: x cast to the adapter's dtype, ``B(A(x)) * scaling`` in
        # it, added to the base output in the wider of the two dtypes, the sum cast back once.
        state = self.state
        mode = state.mode
        if mode == ONE:
            slot = state.slot
            lora = self.lora[slot]
            if lora is None:
                return None
            a, b = lora
            delta = F.linear(F.linear(args[0].to(a.dtype), a), b) * self.scale[slot]
            return (out + delta).to(out.dtype)
        if mode == MIX:
            if self.mix is None:
                return None
            a, b = self.mix
            return (out + F.linear(F.linear(args[0].to(a.dtype), a), b)).to(out.dtype)
        if mode == ROWS:
            # Rounded once, as for a role alone: each row gets the bits it gets on its own
            # (PEFT's mixed batches round the update first, a little further from float32).
            return (out + self._mixed(args[0])).to(out.dtype)
        return None
