"""Blockwise windowed attention: each block of queries reads only the keys in its window.

Every query of the Transformer-XL family (trxl, gtrxl, compressive) sees a fixed window of keys:
its memory and its own recent past. Attending over all K keys of a T-step call and masking the
rest costs O(T x K), which grows with the square of T. Instead the T queries are cut into
blocks of ``size`` consecutive queries; block b reads the keys ``index[b]`` only (the union of
its queries' windows, a fixed width W), and the blocks become batch entries of one attention
call. Cost and memory are O(T x W): linear in T. The mask inside each block is the same as the
dense mask restricted to those keys, so the numbers are the same up to rounding.

A call with ``size >= T`` is one block over every key (``index`` None): the dense attention of
old, which short calls and acting steps use, and ``inspect`` to show weights over every key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from mnemo.memory.attention import RelFn


def window_index(n: int, size: int, start: int, width: int, length: int) -> tuple[Tensor, Tensor]:
    """Key indices of ``n`` windows, block b reading ``start + b * size + 0..width-1``.

    Returns the indices (n, width), clamped into [0, length), and where they were inside
    (n, width) bool: clamped entries repeat a real key and must be masked. A window as wide as
    the whole key list is the whole list, for every block (short calls, acting steps).
    """
    if width >= length:
        return torch.arange(length).expand(n, length), torch.ones(n, length, dtype=torch.bool)
    idx = start + size * torch.arange(n)[:, None] + torch.arange(width)[None, :]
    inside = (idx >= 0) & (idx < length)
    return idx.clamp(0, max(length - 1, 0)), inside


def n_blocks(t: int, size: int) -> tuple[int, int]:
    """Queries per block and number of blocks for a call over ``t`` steps (one block if short)."""
    q = max(1, min(size, t))
    return q, math.ceil(t / q)


def split_queries(x: Tensor, size: int) -> Tensor:
    """(B, T, ...) -> (B, n, size, ...), zero-padded at the end to a whole number of blocks."""
    b, t = x.shape[:2]
    pad = -t % size
    if pad:
        x = torch.cat([x, x.new_zeros(b, pad, *x.shape[2:])], dim=1)
    return x.view(b, -1, size, *x.shape[2:])


@dataclass(frozen=True)
class Windows:
    """How the T queries of a call read K keys, block by block.

    Attributes:
        t: queries in the call.
        size: queries per block (Q); the last block is padded.
        index: (n, W) key index of each block's window, the same for every batch row, or
            (B, n, W) one per row (the compressive core's formed blocks differ by row), or None:
            one block over every key.
        mask: (B * n, Q, W) bool, True where a query may attend the key. Padded query rows see
            every key of their window (finite numbers, dropped by ``merge``).
        rel: maps position scores (B * n, H, Q, P) to scores by key (B * n, H, Q, W).
        rel_masks: ``rel`` also masks (it reads the position scores' masked column, index P,
            at hidden keys), so attention need not apply ``mask`` again.
    """

    t: int
    size: int
    index: Tensor | None
    mask: Tensor
    rel: RelFn
    rel_masks: bool = False

    @property
    def attention_mask(self) -> Tensor | None:
        """The mask attention still has to apply (None: ``rel`` applies it)."""
        return None if self.rel_masks else self.mask

    @property
    def n(self) -> int:
        return 1 if self.index is None else self.index.shape[-2]

    def queries(self, x: Tensor) -> Tensor:
        """(B, T, F) -> (B * n, Q, F)."""
        return split_queries(x, self.size).flatten(0, 1)

    def keys(self, x: Tensor) -> Tensor:
        """(B, K, F) -> (B * n, W, F): each block's window of keys (one gather, linear backward)."""
        if self.index is None:
            return x
        b, k, f = x.shape
        idx = self.index.to(x.device)
        if idx.dim() == 3:  # rows of one flat list: whole rows copied, not an index per number
            rows = idx.flatten(1) + k * torch.arange(b, device=x.device)[:, None]
            return x.reshape(b * k, f).index_select(0, rows.flatten()).view(b * self.n, -1, f)
        return x.index_select(1, idx.flatten()).view(b * self.n, -1, f)

    def merge(self, y: Tensor) -> Tensor:
        """(B * n, Q, F) -> (B, T, F)."""
        return y.view(-1, self.n * self.size, y.shape[-1])[:, : self.t]

    def sum_into_keys(self, per_key: Tensor, n_keys: int) -> Tensor:
        """(B * n, W) amounts on each block's keys -> (B, K) summed per key over all blocks."""
        if self.index is None:
            return per_key
        b = per_key.shape[0] // self.n
        out = per_key.new_zeros(b, n_keys)
        idx = self.index.to(per_key.device)
        idx = idx.flatten(1) if idx.dim() == 3 else idx.flatten().expand(b, -1)
        return out.scatter_add(1, idx, per_key.view(b, -1))


def blocked(x: Tensor, size: int) -> Tensor:
    """Per-query values (B, T) -> (B, n, Q, 1), padded, ready to broadcast against keys."""
    return split_queries(x, size)[..., None]


def finish_mask(visible: Tensor, inside: Tensor, t: int, flat: bool = True) -> Tensor:
    """(B, n, Q, W) visibility -> the ``Windows.mask`` (B * n, Q, W), or (B, n, Q, W) if not
    ``flat``: keys outside the sequence are hidden and padded query rows see every real key (so
    their softmax stays finite). ``inside``: (n, W), or (B, n, W) for windows per row."""
    _, n, q, _ = visible.shape
    inside = inside.to(visible.device).unsqueeze(-2)
    seen = visible & inside
    if n * q > t:
        padded = (torch.arange(n * q, device=visible.device) >= t).view(n, q, 1)
        seen = torch.where(padded, inside, seen)
    return seen.flatten(0, 1) if flat else seen
