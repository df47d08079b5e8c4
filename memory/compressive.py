"""Compressive Transformer memory core.

Rae et al. 2020, "Compressive Transformers for Long-Range Sequence Modelling".

Each layer keeps a FIFO memory of the ``n_mem`` most recent hidden states entering it and a
compressed memory of ``n_cmem`` slots. States evicted from the memory are compressed at rate
``compression_rate`` (c) into one compressed slot per c states; the compressed memory drops its
oldest slot. Compression functions (``compression``): ``conv`` (conv1d, kernel = stride = c,
the paper's best), ``max`` and ``mean`` pooling, and ``most_used`` (the evicted states are
ranked by the attention they received and the most used 1/c of them are kept). Attention spans
[compressed | memory | segment] with Transformer-XL relative positions (``memory.attention``):
memory at distances 1..n_mem, compressed slot k (newest first) at n_mem + 1 + k. The
attention-reconstruction loss ||attn(h, old_mem) - attn(h, f_c(old_mem))||^2, with the layer's
attention weights and the inputs detached, is returned as ``aux_loss``: it trains the
compressors and nothing else. A call is computed in blocks of ``query_block`` queries, each
reading only its window of keys (``memory.blockwise``): the cost is linear in its length.

Departures from the paper, and why:
- Memory moves every step, not every segment: each query sees itself, the ``n_mem`` steps before
  it and the last ``n_cmem`` compressed slots *as of its own step*, so a T-step call equals T
  one-step calls (the core contract). For ``conv``/``max``/``mean``, evicted states wait in a
  buffer (the oldest c - 1 slots of the stored ``raw`` window) until c states of one episode are
  available: no zero padding, and a block never mixes episodes. Buffered states are not
  attended (Rae et al. never have any: their segment length is a multiple of c).
- ``most_used``: Rae et al. sort the states a segment evicts by usage and keep the most used.
  Here the compressed memory of each step is the ``n_cmem`` most used of the c x ``n_cmem``
  states of its episode evicted last (ranked all together, kept in time order): what the paper
  keeps right after a segment that evicts c x ``n_cmem`` states, made to slide one step at a
  time for the core contract. So a state ranked below the cut can enter later, when better
  ones age out of that span; the ``raw`` window holds the whole span (n_mem + c x n_cmem).
  Usage is the attention a state received (averaged over heads, summed over the n_mem + 1
  queries that saw it, so the ranking is that of the average) in a first pass over the raw
  memory only, which ignores the compressed slots: it is then final when the state is evicted,
  so every step's ranking is computed in parallel. The paper does not pin down the normaliser.
- The task loss does not reach the compressors (compressed slots are used under stop-gradient),
  as in the paper where they are only ever read from the memory of the next segment.
- The reconstruction loss is computed per block of ``query_block`` steps (their queries against
  the states evicted during them), as if those blocks were the paper's segments: a call's loss
  then costs linear time (it is the same as one block over the call when T <= query_block).
- Episodes: slots from an earlier episode are masked; blocks are formed per episode.
- Keys/values of both memories are cached in the state (``cache_kv``) and used when no
  gradient is needed, as in ``trxl``: an acting step projects only the new step and block
  (``most_used``: only the new step; a kept state's keys are those it had as raw memory).
- ``aux_loss`` is computed only when gradients are enabled (it has nothing to train otherwise).
- The blocks are the trxl/gtrxl blocks (``gated``/``pre_ln`` options); no dropout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnemo.memory.attention import BlockOptions
from mnemo.memory.base import CoreOutput, MemoryCore, State
from mnemo.memory.blockwise import n_blocks, split_queries
from mnemo.memory.compressive_windows import UsagePlan, block_plan
from mnemo.memory.options import option
from mnemo.memory.registry import register_core
from mnemo.memory.transformer_block import TransformerBlock

COMPRESSIONS = ("conv", "max", "mean", "most_used")


@dataclass(frozen=True)
class CompressiveOptions(BlockOptions):
    """Options of ``compressive``: the block options of ``trxl`` plus its two memories."""

    n_mem: int = option(32, at_least=1)
    """FIFO memory length (raw states) per layer."""
    n_cmem: int = option(32, at_least=1)
    """Compressed memory length per layer."""
    compression_rate: int = option(4, at_least=1)
    """c: states per compressed slot."""
    compression: str = option("conv", choices=COMPRESSIONS)
    """The compression function f_c: conv1d (kernel = stride = c), max or mean pooling, or
    the most attended 1/c of the evicted states (ranked together)."""


class Compressor(nn.Module):
    """f_c: (B, N, c, D) windows of c consecutive states -> (B, N, D) compressed states."""

    def __init__(self, d_model: int, rate: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.conv = nn.Conv1d(d_model, d_model, kernel_size=rate, stride=rate)

    def forward(self, windows: Tensor) -> Tensor:
        if self.kind == "conv":  # conv1d with kernel = stride = c, one output per window
            w = self.conv.weight.flatten(1)  # (D, D * c), input-channel major
            return F.linear(windows.transpose(-1, -2).flatten(-2), w, self.conv.bias)
        if self.kind == "max":
            return windows.amax(dim=-2)
        return windows.mean(dim=-2)


@register_core("compressive")
class CompressiveCore(MemoryCore):
    """Compressive Transformer: per layer ``n_mem`` raw states + ``n_cmem`` compressed slots.

    State (batch-first, fixed shapes; R raw slots: n_mem + c - 1, the oldest c - 1 of which
    are the eviction buffer, or n_mem + c x n_cmem for ``most_used``, whose compressed memory
    is chosen among the c x n_cmem evicted states):
        ``raw``: (B, n_layers, R, D) hidden states entering each layer, oldest first;
        ``cmem``: (B, n_layers, n_cmem, D) compressed slots, oldest first (invalid ones zero);
            for ``most_used``, the states the next step reads as compressed memory;
        ``cvalid``: (B, n_cmem) bool, compressed slot belongs to the current episode;
        ``ep_t``: (B,) long, episode time of the last step (-1: nothing seen yet);
        ``raw_kv``, ``cmem_kv`` (if ``cache_kv``): their keys and values, (..., 2D);
        ``usage`` (``most_used`` only): (B, n_layers, R) attention received by each raw state.

    Args:
        d_model: width of inputs, outputs and every layer.
        opts: ``CompressiveOptions`` (checked by ``make_core``).
    """

    options_type = CompressiveOptions
    query_block = 64
    """Queries per block of a long call (``memory.blockwise``)."""

    def __init__(self, d_model: int, opts: CompressiveOptions) -> None:
        super().__init__()
        n_mem, n_cmem, compression_rate = opts.n_mem, opts.n_cmem, opts.compression_rate
        self.d_model, self.n_layers = d_model, opts.n_layers
        self.n_mem, self.n_cmem, self.rate = n_mem, n_cmem, compression_rate
        self.most_used = opts.compression == "most_used"
        buffer = compression_rate * n_cmem if self.most_used else compression_rate - 1
        self.n_raw = n_mem + buffer
        self.compression, self.memory_dtype = opts.compression, opts.storage_dtype
        self.cache_kv = opts.cache_kv
        self.pre_ln = opts.norm_first
        self.blocks = nn.ModuleList(TransformerBlock(d_model, opts) for _ in range(opts.n_layers))
        self.compressors = nn.ModuleList(
            Compressor(d_model, compression_rate, opts.compression)
            for _ in range(0 if self.most_used else opts.n_layers)
        )
        self.ln_out = nn.LayerNorm(d_model) if self.pre_ln else nn.Identity()
        self.register_buffer("pos", torch.arange(n_mem + n_cmem + 1.0), persistent=False)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        b, n, d, dt = batch_size, self.n_layers, self.d_model, self.memory_dtype
        state = {
            "raw": torch.zeros(b, n, self.n_raw, d, device=device, dtype=dt),
            "cmem": torch.zeros(b, n, self.n_cmem, d, device=device, dtype=dt),
            "cvalid": torch.zeros(b, self.n_cmem, dtype=torch.bool, device=device),
            "ep_t": torch.full((b,), -1, dtype=torch.long, device=device),
        }
        if self.cache_kv:
            state["raw_kv"] = torch.zeros(b, n, self.n_raw, 2 * d, device=device, dtype=dt)
            state["cmem_kv"] = torch.zeros(b, n, self.n_cmem, 2 * d, device=device, dtype=dt)
        if self.most_used:
            state["usage"] = torch.zeros(b, n, self.n_raw, device=device)
        return state

    def forward(
        self, x: Tensor, state: State, episode_start: Tensor, trace: list[Tensor] | None = None
    ) -> CoreOutput:
        """Run the core over a segment (``MemoryCore.forward``).

        Args:
            trace: if given, the call is one block over every key and the last layer's
                attention weights (B, H, T, K) are appended to it (what ``inspect`` shows).
        """
        size = x.shape[1] if trace is not None else self.query_block
        run = self.run_most_used if self.most_used else self.run_blocks
        h, new, aux = run(x, state, episode_start, size, trace)
        new = {k: new[k].to(self.memory_dtype) if k in STORED else new[k] for k in state}
        return CoreOutput(self.ln_out(h), new, aux)

    def run_blocks(
        self, x: Tensor, state: State, episode_start: Tensor, size: int, trace: list | None
    ) -> tuple[Tensor, State, Tensor]:
        """``conv``, ``max``, ``mean``: every c evicted states of an episode make one slot."""
        t, c, ncm = x.shape[1], self.rate, self.n_cmem
        plan = block_plan(state, episode_start, self.n_mem, ncm, c, size)
        keep = plan["keep"]
        use_cache = self.cache_kv and not torch.is_grad_enabled()
        recon = torch.is_grad_enabled() and self.compression == "conv"  # the aux loss
        new: dict[str, list[Tensor]] = {k: [] for k in ("raw", "cmem", "raw_kv", "cmem_kv")}
        aux = x.new_zeros(())
        cvalid = plan["cvalid"][..., None]  # (B, ncm, 1)
        made_at = formed_first(plan["formed"], c)  # (B, M): only these candidates are compressed
        h = x
        for i, (block, comp) in enumerate(zip(self.blocks, self.compressors)):
            raw = state["raw"][:, i].to(x.dtype)  # (B, R, D)
            cm = state["cmem"][:, i].to(x.dtype)  # (B, ncm, D)
            stream = torch.cat([raw, h.detach()], dim=1)  # (B, R + T, D), stop-gradient
            windows = take(stream, made_at[..., None] + torch.arange(c, device=x.device))
            made = comp(windows)  # (B, M, D) from (B, M, c, D); only the aux loss reaches comp
            made_kv = None  # the compressions' keys/values for the reconstruction loss
            if use_cache:  # acting: keys/values of the memory were computed when it was written
                kv_made = spread(block.kv_of(made), made_at, t)
                kv_mem = [state["cmem_kv"][:, i], kv_made, state["raw_kv"][:, i]]
                kv_ctx = [z.to(x.dtype) for z in kv_mem]
            else:
                kv_made, made_kv = (
                    kv_both_ways(block, made) if recon else (block.kv_of(made.detach()), None)
                )
                kv_ctx = [block.kv_of(cm), spread(kv_made, made_at, t), block.kv_of(raw)]
            traced = trace is not None and i == self.n_layers - 1
            hn = block.attend_input(h)
            kv = torch.cat([*kv_ctx, block.attn.kv(hn)], dim=1)  # (B, K, 2D)
            q = block.attn.q(hn)  # also the reconstruction loss's queries
            a, w = block.attend(hn, kv, self.pos, plan["win"], traced, q)
            if traced:
                trace.append(w)
            if made_kv is not None:
                stream_kv = kv[:, ncm + t :].detach()  # (B, R + T, 2D): the stream's own
                formed = plan["formed"]
                aux = aux + self.reconstruction_loss(
                    block, q.detach(), stream_kv, made_kv, formed, c, size
                )
            blocks = spread(made.detach(), made_at, t)  # (B, T, D), zero where not formed
            new["raw"].append(stream[:, -self.n_raw :])
            new["cmem"].append(take(torch.cat([cm, blocks], dim=1), keep) * cvalid)
            if self.cache_kv:
                kv = kv.detach()  # (B, ncm + T + R + T, 2D)
                new["raw_kv"].append(kv[:, ncm + t :][:, -self.n_raw :])
                new["cmem_kv"].append(take(kv, keep) * cvalid)  # keep: among the first ncm + T
            h = block.finish(h, a)
        stacked = {k: torch.stack(v, 1) for k, v in new.items() if v}
        return h, {**stacked, "cvalid": plan["cvalid"], "ep_t": plan["ep_t"]}, aux / self.n_layers

    def run_most_used(
        self, x: Tensor, state: State, episode_start: Tensor, size: int, trace: list | None
    ) -> tuple[Tensor, State, Tensor]:
        """``most_used``: the compressed memory of each step is the n_cmem most attended of the
        c x n_cmem states evicted before it (``UsagePlan``); nothing is projected but the
        segment (keys/values of evicted states are those they had in the raw memory)."""
        plan = UsagePlan(state, episode_start, self.n_mem, self.n_cmem, self.rate, size)
        use_cache = self.cache_kv and not torch.is_grad_enabled()
        new: dict[str, list[Tensor]] = {
            k: [] for k in ("raw", "cmem", "usage", "raw_kv", "cmem_kv")
        }
        h, cvalid = x, None
        for i, block in enumerate(self.blocks):
            raw = state["raw"][:, i].to(x.dtype)  # (B, R, D)
            stream = torch.cat([raw, h.detach()], dim=1)  # (B, R + T, D), stop-gradient
            hn = block.attend_input(h)
            kv_raw = state["raw_kv"][:, i].to(x.dtype) if use_cache else block.kv_of(raw)
            kv = torch.cat([kv_raw, block.attn.kv(hn)], dim=1)  # (B, R + T, 2D)
            with torch.no_grad():  # usage: attention over the raw memory only
                w_raw = block.attention_weights(hn, kv, self.pos, plan.usage_win)
                usage = plan.usage(w_raw, state["usage"][:, i])
            traced = trace is not None and i == self.n_layers - 1
            a, w = block.attend(hn, kv, self.pos, plan.main_windows(usage), traced)
            if traced:
                trace.append(w)
            nxt, cvalid = plan.next_compressed(usage)
            new["raw"].append(stream[:, -self.n_raw :])
            new["usage"].append(usage[:, -self.n_raw :])
            new["cmem"].append(take(stream, nxt) * cvalid[..., None])
            if self.cache_kv:
                kv = kv.detach()
                new["raw_kv"].append(kv[:, -self.n_raw :])
                new["cmem_kv"].append(take(kv, nxt) * cvalid[..., None])
            h = block.finish(h, a)
        stacked = {k: torch.stack(v, 1) for k, v in new.items() if v}
        return h, {**stacked, "cvalid": cvalid, "ep_t": plan.stream.ep_t}, self.zero_aux(x)

    @torch.no_grad()
    def inspect(self, x: Tensor, state: State, episode_start: Tensor) -> dict[str, Tensor]:
        """Last layer's attention (T, K) for row 0, averaged over heads (MemoryCore.inspect).

        Keys: the ``n_cmem`` compressed slots, the T blocks compressed during this call, the
        raw-memory slots, then the T steps of ``x``; for ``most_used`` the R raw slots (the
        compressed memory among them) then the T steps. Masked keys get weight 0.
        """
        seen: list[Tensor] = []
        self(x, state, episode_start, trace=seen)
        return {"attention": seen[0][0].mean(0)}

    @staticmethod
    def reconstruction_loss(
        block: TransformerBlock,
        hq: Tensor,
        stream_kv: Tensor,
        made_kv: Tensor,
        formed: Tensor,
        c: int,
        size: int,
    ) -> Tensor:
        """||attn(h, old_mem) - attn(h, f_c(old_mem))||^2 over the blocks formed in this call.

        The states of each block of ``size`` steps query the states evicted during those steps
        (as they were) and their compressions, through this layer's attention with every weight
        detached (Rae et al. 2020, Alg. 2, with blocks of steps as the segments).

        ``hq`` (B, T, D): the layer's queries of the call, detached. ``stream_kv``
        (B, R + T, 2D): keys/values of the stream, detached; candidate k
        compresses stream[k : k + c], so a block of Q candidates covers Q + c - 1 states; formed
        windows never overlap, so attending over those states, masked to the formed windows, is
        attending over the formed windows (and projects each state once, not c times).
        ``made_kv`` (B, M, 2D): keys/values of the compressions at the candidates of
        ``formed_first``, through the layer's weights detached (``kv_both_ways``); each block
        reads its own formed ones only.
        """
        if not bool(formed.any()):
            return hq.new_zeros(())
        b, t = formed.shape
        q, n = n_blocks(t, size)
        real = (torch.arange(n * q, device=hq.device) < t).view(1, n, q).expand(b, n, q)
        real = real.flatten(0, 1)  # (B * n, Q)
        hq = split_queries(hq, q).flatten(0, 1)
        f = split_queries(formed, q).flatten(0, 1)  # (B * n, Q)
        covered = f.new_zeros(b * n, q + c - 1)
        for o in range(c):
            covered[:, o : o + q] |= f
        pad = n * q + c - 1 - stream_kv.shape[1]
        if pad > 0:
            stream_kv = torch.cat([stream_kv, stream_kv.new_zeros(b, pad, stream_kv.shape[2])], 1)
        old_kv = stream_kv[:, : n * q + c - 1].unfold(1, q + c - 1, q)  # (B, n, 2D, Q + c - 1)
        old_kv = old_kv.transpose(-1, -2).flatten(0, 1)  # (B * n, Q + c - 1, 2D)
        old = block.frozen_content_attention(hq, old_kv, covered)
        # Block j's formed candidates are made[rank_j : rank_j + count_j] (time order).
        ranks = torch.cat([formed.new_zeros(b, 1, dtype=torch.long), formed.long().cumsum(1)], 1)
        edges = ranks[:, [min(j * q, t) for j in range(n + 1)]]  # (B, n + 1)
        count = edges[:, 1:] - edges[:, :-1]  # (B, n)
        width = max(int(count.max()), 1)
        slot = torch.arange(width, device=hq.device)
        idx = (edges[:, :-1, None] + slot).clamp(max=made_kv.shape[1] - 1)  # (B, n, width)
        new_kv = take(made_kv, idx.flatten(1)).view(b * n, width, -1)
        new = block.frozen_content_attention(hq, new_kv, (slot < count[..., None]).flatten(0, 1))
        err = ((old - new).square().mean(-1) * real).sum(-1) / real.sum(-1)  # (B * n,)
        used = f.any(dim=1)  # blocks that compressed something
        return (err * used).sum() / used.sum()


STORED = ("raw", "cmem", "raw_kv", "cmem_kv")
"""State entries kept in ``memory_dtype``."""


def kv_both_ways(block: TransformerBlock, made: Tensor) -> tuple[Tensor, Tensor]:
    """Keys/values (B, M, 2D) of the compressions ``made`` twice: for attention (the gradient
    reaches the layer's weights, not the compressor) and for the reconstruction loss (it
    reaches the compressor, not the weights: ``frozen_projection``). The same numbers; a
    post-LN block computes them in one product (``ProjectedTwice``)."""
    if block.pre_ln:
        return block.kv_of(made.detach()), block.frozen_projection(made, block.attn.kv.weight)
    return ProjectedTwice.apply(made, block.attn.kv.weight)


class ProjectedTwice(torch.autograd.Function):
    """``F.linear(x, weight)`` once, returned twice: the gradient of the first goes to
    ``weight`` only, that of the second to ``x`` only (as ``F.linear(x.detach(), weight)`` and
    ``F.linear(x, weight.detach())``, with the same products in the backward pass)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(x, weight)
        y = F.linear(x, weight)
        return y, y.clone()

    @staticmethod
    def backward(
        ctx: Any, to_weight: Tensor | None, to_x: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors  # under autocast: in the outputs' dtype, as it would
        dx = None if to_x is None else to_x.matmul(weight.to(to_x.dtype)).to(x.dtype)
        dw = None
        if to_weight is not None:
            z = x.flatten(0, -2).to(to_weight.dtype)
            dw = to_weight.flatten(0, -2).t().mm(z).to(weight.dtype)
        return dx, dw


def take(x: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx`` (B, N, ...) of ``x`` (B, L, ...) -> (B, N, ..., ...), whole rows copied (an
    index per row, not one per number: 8x faster than a gather at the LM step's shapes)."""
    b, length = x.shape[:2]
    rows = idx + length * torch.arange(b, device=idx.device).view(b, *(1,) * (idx.dim() - 1))
    picked = x.reshape(b * length, *x.shape[2:]).index_select(0, rows.flatten())
    return picked.view(*idx.shape, *x.shape[2:])


def formed_first(formed: Tensor, c: int) -> Tensor:
    """Candidate positions (B, M): each row's formed candidates in time order, then others (so
    rows line up; never read) up to the most any row formed. Only these are compressed and
    projected (1 in c of a long call). A call of at most c steps keeps every candidate (no
    host sync in acting)."""
    order = torch.sort((~formed).to(torch.uint8), dim=1, stable=True).indices
    t = formed.shape[1]
    m = t if t <= c else max(int(formed.sum(1).max()), 1)
    return order[:, :m]


def spread(rows: Tensor, at: Tensor, t: int) -> Tensor:
    """Rows (B, M, F) placed at positions ``at`` (B, M, distinct) of zeros (B, t, F) (whole rows,
    as ``take``)."""
    b, m, f = rows.shape
    at = (at + t * torch.arange(b, device=at.device)[:, None]).flatten()
    return rows.new_zeros(b * t, f).index_copy(0, at, rows.reshape(b * m, f)).view(b, t, f)
