"""Sliding-window multi-head attention with an explicit, fixed-size KV cache.

A reusable piece for cores that need short-term attention with a state (Titans' MAG and MAL
variants; anything else that wants local attention). Each token attends to itself and to the
``window - 1`` tokens before it of the same episode, plus an optional ``prefix`` of
always-visible context tokens (e.g. Titans' persistent memory). Positions: rotary (RoFormer) on
the queries and keys of the window, so a score depends on the distance between query and key;
prefix tokens have no position (their scores use the unrotated query), so they read the same
from every query.

The state is batch-first: projected keys and values of the last ``window - 1`` tokens and a
validity mask. A slot is valid only while it belongs to the episode still running, so slots from
a previous episode are never attended, and invalid slots hold zeros so that a state does not
depend on what came before a reset. Calling with T=1 repeatedly gives the same numbers as one call
over T (the mask is the same; only the batching of the softmax differs).

Long calls are processed in blocks of queries, each seeing ``window - 1`` keys before it, so cost
and memory are linear in T.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mnemo.memory.rotary import rotate


class SlidingWindowAttention(nn.Module):
    """Multi-head attention over a sliding window of ``window`` tokens (self included).

    Args:
        d_model: width of inputs and outputs.
        n_heads: number of heads; must divide ``d_model``.
        window: how many tokens a query sees, itself included (>= 1).
        block: queries per block in long calls (memory is O(block * (block + window))).
    """

    def __init__(self, d_model: int, n_heads: int, window: int, block: int = 256) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.d_model, self.n_heads, self.window = d_model, n_heads, window
        self.d_head = d_model // n_heads
        self.block = max(block, 1)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    @property
    def cache_len(self) -> int:
        return self.window - 1

    def initial_state(self, batch_size: int, device: torch.device | str) -> dict[str, Tensor]:
        """Empty cache: keys/values (B, window-1, H, Dh), valid (B, window-1)."""
        kv = torch.zeros(batch_size, self.cache_len, self.n_heads, self.d_head, device=device)
        valid = torch.zeros(batch_size, self.cache_len, dtype=torch.bool, device=device)
        return {"k": kv, "v": kv.clone(), "valid": valid}

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, D) -> keys and values (B, N, H, Dh)."""
        b, n, _ = x.shape
        kv = self.kv_proj(x).view(b, n, 2, self.n_heads, self.d_head)
        return kv[:, :, 0], kv[:, :, 1]

    def attend(
        self,
        xq: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor,
        q_pos: Tensor,
        k_pos: Tensor,
        prefix: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Masked attention of queries from ``xq`` over given keys and values.

        Args:
            xq: (B, Q, D) query inputs.
            k, v: (B, N, H, Dh) keys and values (from ``keys_values``), not yet rotated.
            mask: (B, Q, N) bool, True where a query may attend. Every row needs a True
                (among these keys or in ``prefix``).
            q_pos, k_pos: (Q,) and (N,) positions of queries and keys (rotary; only their
                differences matter).
            prefix: optional keys and values (B or 1, P, H, Dh) that every query sees, without
                a position.

        Returns:
            (B, Q, D) projected outputs.
        """
        b, nq, _ = xq.shape
        q = self.q_proj(xq).view(b, nq, self.n_heads, self.d_head).transpose(1, 2)  # (B,H,Q,Dh)
        kr, v = rotate(k.transpose(1, 2), k_pos), v.transpose(1, 2)  # (B, H, N, Dh)
        scores = rotate(q, q_pos) @ kr.transpose(-1, -2)  # (B, H, Q, N)
        scores = scores.masked_fill(~mask[:, None], -torch.inf)
        if prefix is not None:
            kp, vp = (t.expand(b, -1, -1, -1).transpose(1, 2) for t in prefix)
            scores = torch.cat([q @ kp.transpose(-1, -2), scores], dim=-1)
            v = torch.cat([vp, v], dim=2)
        attn = torch.softmax(scores * self.d_head**-0.5, dim=-1)
        y = attn @ v  # (B, H, Q, Dh)
        return self.out_proj(y.transpose(1, 2).reshape(b, nq, self.d_model))

    def forward(
        self,
        x: Tensor,
        state: dict[str, Tensor],
        episode_start: Tensor,
        prefix: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Attend causally within the window and the episode.

        Args:
            x: (B, T, D) inputs.
            state: cache from ``initial_state`` or a previous call.
            episode_start: (B, T) bool.
            prefix: optional (B or 1, P, D) tokens every query may attend (never cached).

        Returns:
            y (B, T, D) and the new state.
        """
        w1 = self.cache_len
        if x.shape[1] == 0:
            return self.out_proj(x), state
        k_new, v_new = self.keys_values(x)  # (B, T, H, Dh)
        # Episode index of every key: cache slots belong to episode 0 (the one running into
        # this call) when valid, -1 otherwise; new tokens count starts seen so far.
        ep_new = torch.cumsum(episode_start.long(), dim=1)  # (B, T)
        k_prev, v_prev = state["k"], state["v"]  # (B, W-1, H, Dh): keys before the block
        ep_prev = torch.where(state["valid"], 0, -1)  # (B, W-1)
        pkv = self.keys_values(prefix) if prefix is not None else None
        ys = []
        # Split once and roll the previous keys along: slicing the whole sequence in the loop
        # would make backward quadratic in T.
        pieces = zip(*(z.split(self.block, dim=1) for z in (x, k_new, v_new, ep_new)))
        for xq, kq, vq, eq in pieces:
            q_len = xq.shape[1]
            ks, vs = torch.cat([k_prev, kq], 1), torch.cat([v_prev, vq], 1)  # (B, W-1+Q, H, Dh)
            eps = torch.cat([ep_prev, eq], 1)  # (B, W-1+Q)
            kpos = torch.arange(w1 + q_len, device=x.device)  # the cache, then the block
            qpos = kpos[w1:]
            dist = qpos[:, None] - kpos[None, :]  # (Q, K)
            in_window = (dist >= 0) & (dist < self.window)
            mask = in_window[None] & (eps[:, None, :] == eq[:, :, None])  # (B, Q, K)
            k_prev, v_prev = ks[:, ks.shape[1] - w1 :], vs[:, vs.shape[1] - w1 :]
            ep_prev = eps[:, eps.shape[1] - w1 :]
            ys.append(self.attend(xq, ks, vs, mask, qpos, kpos, pkv))
        y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)

        # The new cache keeps the last W-1 keys that belong to the episode still running.
        valid = (ep_prev == ep_new[:, -1:]) & (ep_prev >= 0)
        keep = valid[..., None, None]
        new_state = {
            "k": torch.where(keep, k_prev, 0.0),
            "v": torch.where(keep, v_prev, 0.0),
            "valid": valid,
        }
        return y, new_state
