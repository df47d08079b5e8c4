"""Rotary position embedding (Su et al. 2021, "RoFormer", arXiv 2104.09864).

Rotating queries and keys by angles proportional to their positions makes the attention score
of a query at i and a key at j depend on i - j only, so a caller may number positions from any
origin (e.g. from the start of a block of queries and the cache before it) and get the same
scores, up to rounding, as with absolute positions. Pairs are the two halves of the head
(GPT-NeoX layout); an odd last channel is left unrotated.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotate(x: Tensor, pos: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate (..., N, Dh) queries or keys by their positions ``pos`` (N,)."""
    half = x.shape[-1] // 2
    if half == 0:
        return x
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    angle = pos.to(torch.float32)[:, None] * inv_freq  # (N, half)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half : 2 * half], x[..., 2 * half :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)
