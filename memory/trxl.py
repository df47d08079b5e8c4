"""Transformer-XL and GTrXL memory cores.

Dai et al. 2019, "Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context";
Parisotto et al. 2020, "Stabilizing Transformers for Reinforcement Learning" (GTrXL).

Each layer keeps a memory of the ``mem_len`` hidden states that entered it most recently, under
stop-gradient, and attends over [memory | segment] with relative positions: sinusoid R, learned
biases u and v and a projection W_kR (``memory.attention``). The causal mask is aligned
bottom-right, so query t of a T-step segment sits at key index ``mem_len + t``. A long call is
computed in blocks of ``query_block`` queries, each reading only the ``mem_len + query_block``
keys of its window (``memory.blockwise``), so its cost is linear in T.

``trxl`` is Dai's post-LN block; ``gtrxl`` is Parisotto et al.'s: identity-map reordering
(pre-LN), ReLU on sub-layer outputs, GRU gates with bias ``gate_bias`` (b_g = 2) in place of
both residuals. ``pre_ln=True`` without gates gives their TrXL-I.

Departures from the papers, and why:
- Every query attends to exactly itself and the ``mem_len`` steps before it (a sliding window,
  Dai's ``same_length`` evaluation mode), where Dai's training lets query t of a segment see
  ``mem_len + t`` keys. This makes a T-step call equal T one-step calls (the project's core
  contract), so acting with memory M sees what training saw.
- Episodes: the state carries a validity mask; slots from an earlier episode are masked out
  (never attended as zeros) and an episode start inside a segment blocks attention across it.
- Keys/values of the memory are cached in the state (``cache_kv``) and used when no gradient is
  needed, so one acting step costs O(mem_len x d) per layer instead of re-projecting the memory
  (O(mem_len x d^2)). With gradients enabled they are recomputed from the stored hidden states,
  as in Dai, so W_k and W_v learn from mnemo.memory keys too.
- u and v are per layer (Dai's ``untie_r``); no dropout; pre-LN variants end with a LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mnemo.memory.attention import BlockOptions, RelFn, rel_shift
from mnemo.memory.base import CoreOutput, MemoryCore, State
from mnemo.memory.blockwise import Windows, blocked, finish_mask, n_blocks, window_index
from mnemo.memory.options import option
from mnemo.memory.registry import register_core
from mnemo.memory.transformer_block import TransformerBlock


@dataclass(frozen=True)
class TrXLOptions(BlockOptions):
    """Options of ``trxl`` and ``gtrxl`` (``gtrxl`` presets ``gated`` and ``pre_ln``)."""

    mem_len: int = option(64, at_least=1)
    """Memory length M: each step sees itself and the M steps before it."""


def last_start(episode_start: Tensor) -> Tensor:
    """(B, T) bool -> (B, T) long: index of the latest episode start at or before t, or -1."""
    t = torch.arange(episode_start.shape[1], device=episode_start.device)
    return torch.where(episode_start.bool(), t, -1).cummax(dim=1).values


@register_core("gtrxl", gated=True, pre_ln=True)
@register_core("trxl")
class TransformerXLCore(MemoryCore):
    """A stack of Transformer-XL (or GTrXL) layers with per-layer memory of ``mem_len`` steps.

    State (all batch-first, fixed shapes):
        ``mem``: (B, n_layers, mem_len, D) hidden states entering each layer, oldest first;
        ``valid``: (B, mem_len) bool, False for empty slots and slots of an earlier episode;
        ``kv`` (if ``cache_kv``): (B, n_layers, mem_len, 2D) their keys and values.
    Invalid slots keep whatever they held (zeros, or an earlier episode): they are masked, and
    not rewriting them keeps an acting step to one copy of the memory.

    Args:
        d_model: width of inputs, outputs and every layer.
        opts: ``TrXLOptions`` (checked by ``make_core``).
    """

    options_type = TrXLOptions
    query_block = 64
    """Queries per block of a long call (``memory.blockwise``): each block reads M + 64 keys."""

    def __init__(self, d_model: int, opts: TrXLOptions) -> None:
        super().__init__()
        mem_len = opts.mem_len
        self.d_model, self.n_layers, self.mem_len = d_model, opts.n_layers, mem_len
        self.cache_kv, self.memory_dtype = opts.cache_kv, opts.storage_dtype
        self.pre_ln = opts.norm_first
        self.blocks = nn.ModuleList(TransformerBlock(d_model, opts) for _ in range(opts.n_layers))
        self.ln_out = nn.LayerNorm(d_model) if self.pre_ln else nn.Identity()
        # Distances M, M-1, ..., 0: the window, largest first as rel_shift wants.
        self.register_buffer("pos", torch.arange(mem_len, -1, -1.0), persistent=False)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        b, n, m, d = batch_size, self.n_layers, self.mem_len, self.d_model
        state = {
            "mem": torch.zeros(b, n, m, d, device=device, dtype=self.memory_dtype),
            "valid": torch.zeros(b, m, dtype=torch.bool, device=device),
        }
        if self.cache_kv:
            state["kv"] = torch.zeros(b, n, m, 2 * d, device=device, dtype=self.memory_dtype)
        return state

    def windows(self, valid: Tensor, episode_start: Tensor, size: int) -> tuple[Windows, Tensor]:
        """Who sees what, in blocks of ``size`` queries, and the validity (B, M) of the next memory.

        Key j of [memory | segment] is visible to query t when it is valid, lies in t's episode
        and within its window: max(t, episode-start index) <= j <= M + t. The queries of a block
        starting at step a can only see keys a .. a + M + Q - 1: that is the block's window.
        """
        b, t = episode_start.shape
        m, dev = self.mem_len, valid.device
        q, n = n_blocks(t, size)
        idx, inside = window_index(n, q, 0, m + q, m + t)
        last = last_start(episode_start)  # (B, T)
        first = torch.where(last >= 0, last + m, 0)  # first key of t's episode
        key_valid = torch.cat([valid, valid.new_ones(b, t)], dim=1)  # (B, M + T)
        steps = blocked(torch.arange(t, device=dev).expand(b, t), q)  # (B, n, Q, 1)
        keys = idx.to(dev)[:, None]  # (n, 1, W)
        lo = torch.maximum(blocked(first, q), steps)
        visible = key_valid[:, keys] & (keys >= lo) & (keys <= steps + m)  # (B, n, Q, W)
        index = None if n == 1 and idx.shape[1] == m + t else idx
        win = Windows(t, q, index, finish_mask(visible, inside, t), rel_shift_window(q))
        keys_all = torch.arange(m + t, device=dev)
        keep = key_valid & (keys_all >= first[:, -1:])
        return win, keep[:, -m:]

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> CoreOutput:
        m = self.mem_len
        win, new_valid = self.windows(state["valid"], episode_start, self.query_block)
        use_cache = self.cache_kv and not torch.is_grad_enabled()
        mems, kvs = [], []
        h = x
        for i, block in enumerate(self.blocks):
            ctx = state["mem"][:, i].to(x.dtype)  # (B, M, D)
            kv_ctx = state["kv"][:, i].to(x.dtype) if use_cache else block.kv_of(ctx)
            # Memory is under stop-gradient (Dai): store what enters the layer, detached.
            mems.append(torch.cat([ctx, h.detach()], dim=1)[:, -m:])
            h, kv, _ = block(h, kv_ctx, self.pos, win)
            if self.cache_kv:
                kvs.append(kv.detach()[:, -m:])
        new = {"mem": torch.stack(mems, 1).to(self.memory_dtype), "valid": new_valid}
        if self.cache_kv:
            new["kv"] = torch.stack(kvs, 1).to(self.memory_dtype)
        return CoreOutput(self.ln_out(h), new, self.zero_aux(x))

    @torch.no_grad()
    def inspect(self, x: Tensor, state: State, episode_start: Tensor) -> dict[str, Tensor]:
        """Last layer's attention (T, M + T) for row 0, averaged over heads (MemoryCore.inspect).

        Keys are the M memory slots, then the T steps of ``x``; masked keys get weight 0.
        """
        win, _ = self.windows(state["valid"], episode_start, x.shape[1])  # one block: all keys
        h, w = x, None
        for i, block in enumerate(self.blocks):
            kv_ctx = block.kv_of(state["mem"][:, i].to(x.dtype))
            h, _, w = block(h, kv_ctx, self.pos, win, need_weights=i == self.n_layers - 1)
        return {"attention": w[0].mean(0)}


def rel_shift_window(t: int) -> RelFn:
    """Scores over distances (M..0) -> over the M + T keys: pad the distances beyond the window
    (masked anyway) with zeros, then Dai's rel-shift."""

    def rel(scores: Tensor) -> Tensor:  # (B, H, T, M + 1) -> (B, H, T, M + T)
        if t > 1:
            scores = torch.cat([scores.new_zeros(*scores.shape[:-1], t - 1), scores], dim=-1)
        return rel_shift(scores)

    return rel
