"""Per-row chunk grids for chunked fast-weight memories (used by memory/titans_layer.py).

The memory updates once per completed chunk of ``chunk`` tokens counted per row from its
episode start, so rows have different chunk grids. ``chunk_layout`` lays a call's tokens out on
one padded "virtual" grid for all rows: the tokens still waiting from the previous call first,
an episode start jumping to the next chunk boundary. Chunks can then be processed in order for
all rows at once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class ChunkLayout(NamedTuple):
    """Where each token of a call sits on the padded per-row chunk grid."""

    vpos: Tensor  # (B, T) slot of each call token
    real: Tensor  # (B, S) bool, slot holds a token (S = n_chunks * chunk)
    fresh: Tensor  # (B, N) bool, chunk begins an episode
    complete: Tensor  # (B, N) bool, chunk holds chunk_size tokens (it updates the memory)
    n_buffered: Tensor  # (B,) tokens from the previous call at slots 0..n_buffered-1
    tail_base: Tensor  # (B,) first slot of the row's unfinished chunk
    tail_count: Tensor  # (B,) tokens in it
    ep_slot: Tensor  # (B, S) long, episode index of each slot (counts fresh chunks)


def chunk_layout(episode_start: Tensor, count: Tensor, chunk: int) -> ChunkLayout:
    """Lay out a call's tokens on per-row chunk grids (see the module docstring).

    Args:
        episode_start: (B, T) bool.
        count: (B,) tokens of an unfinished chunk waiting from the previous call.
        chunk: chunk size.
    """
    b, t = episode_start.shape
    dev = episode_start.device
    n_buf = torch.where(episode_start[:, 0], 0, count)  # a start at 0 drops the waiting tokens
    ep = torch.cumsum(episode_start.long(), dim=1)  # (B, T) episode 0 runs in from before
    call_len = torch.zeros(b, t + 1, dtype=torch.long, device=dev)
    call_len.scatter_add_(1, ep, torch.ones_like(ep))
    first = torch.cumsum(call_len, 1) - call_len  # first call index of each episode
    ep_len = call_len.clone()
    ep_len[:, 0] += n_buf
    n_chunks = (ep_len + chunk - 1) // chunk
    base = (torch.cumsum(n_chunks, 1) - n_chunks) * chunk  # first slot of each episode
    steps = torch.arange(t, device=dev)
    vpos = base.gather(1, ep) + steps - first.gather(1, ep)
    vpos = vpos + torch.where(ep == 0, n_buf[:, None], 0)
    last = ep[:, -1:]
    last_len, last_base = ep_len.gather(1, last)[:, 0], base.gather(1, last)[:, 0]
    tail_count = last_len % chunk
    # One token always fits one chunk; knowing it spares acting a device-to-host sync.
    n_slots = chunk if t == 1 else int((base + n_chunks * chunk).max())
    real = torch.zeros(b, n_slots, dtype=torch.bool, device=dev).scatter(1, vpos, True)
    real |= torch.arange(n_slots, device=dev) < n_buf[:, None]
    start_at = torch.zeros(b, n_slots, dtype=torch.bool, device=dev)
    start_at = start_at.scatter(1, vpos, episode_start)
    fresh = start_at.view(b, -1, chunk)[:, :, 0]
    return ChunkLayout(
        vpos=vpos,
        real=real,
        fresh=fresh,
        complete=real.view(b, -1, chunk).all(-1),
        n_buffered=n_buf,
        tail_base=last_base + last_len - tail_count,
        tail_count=tail_count,
        ep_slot=torch.cumsum(fresh.long(), 1).repeat_interleave(chunk, dim=1),
    )
