"""Compressive Transformer memory core.

Rae et al. 2020, "Compressive Transformers for Long-Range Sequence Modelling".

Each layer keeps a FIFO memory of the ``n_mem`` most recent hidden states entering it and a
compressed memory of ``n_cmem`` slots. States evicted from the memory are compressed at rate
``compression_rate`` (c) into one compressed slot per c states; the compressed memory drops its
oldest slot. Compression functions (``compression``): ``conv`` (conv1d, kernel = stride = c,
the paper's best), ``max`` and ``mean`` pooling, and ``most_used`` (keep the state that received
the most attention). Attention spans [compressed | memory | segment] with Transformer-XL
relative positions (``memory.attention``): memory at distances 1..n_mem, compressed slot k
(newest first) at n_mem + 1 + k. The attention-reconstruction loss
||attn(h, old_mem) - attn(h, f_c(old_mem))||^2, with the layer's attention weights and the
inputs detached, is returned as ``aux_loss``: it trains the compressors and nothing else.

Departures from the paper, and why:
- Memory moves every step, not every segment: each query sees itself, the ``n_mem`` steps before
  it and the last ``n_cmem`` compressed slots *as of its own step*, so a T-step call equals T
  one-step calls (the core contract). Evicted states wait in a buffer (the oldest c - 1 slots of
  the stored ``raw`` window) until c states of one episode are available: no zero padding, and
  a block never mixes episodes. Buffered states are not attended (Rae et al. never have any:
  their segment length is a multiple of c).
- The task loss does not reach the compressors (compressed slots are used under stop-gradient),
  as in the paper where they are only ever read from the memory of the next segment.
- ``most_used`` scores usage by attention over the raw memory only (a first pass that ignores
  the compressed slots); the paper does not pin down the normaliser.
- Episodes: slots from an earlier episode are masked; blocks are formed per episode.
- Keys/values of both memories are cached in the state (``cache_kv``) and used when no
  gradient is needed, as in ``trxl``: an acting step projects only the new step and block.
- ``aux_loss`` is computed only when gradients are enabled (it has nothing to train otherwise).
- The blocks are the trxl/gtrxl blocks (``gated``/``pre_ln`` options); no dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnemo.memory.attention import BlockOptions, TransformerBlock, gather_rel
from mnemo.memory.base import CoreOutput, MemoryCore, State
from mnemo.memory.options import option
from mnemo.memory.registry import register_core
from mnemo.memory.trxl import last_start

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
    the most attended state of each block."""


class Compressor(nn.Module):
    """f_c: (B, N, c, D) windows of c consecutive states -> (B, N, D) compressed states."""

    def __init__(self, d_model: int, rate: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.conv = nn.Conv1d(d_model, d_model, kernel_size=rate, stride=rate)

    def forward(self, windows: Tensor, usage: Tensor | None = None) -> Tensor:
        if self.kind == "conv":  # conv1d with kernel = stride = c, one output per window
            w = self.conv.weight.flatten(1)  # (D, D * c), input-channel major
            return F.linear(windows.transpose(-1, -2).flatten(-2), w, self.conv.bias)
        if self.kind == "max":
            return windows.amax(dim=-2)
        if self.kind == "mean":
            return windows.mean(dim=-2)
        idx = usage.argmax(dim=-1)  # (B, N) most attended state of each window
        return windows.gather(-2, idx[..., None, None].expand(*idx.shape, 1, windows.shape[-1]))[
            ..., 0, :
        ]


@register_core("compressive")
class CompressiveCore(MemoryCore):
    """Compressive Transformer: per layer ``n_mem`` raw states + ``n_cmem`` compressed slots.

    State (batch-first, fixed shapes; R = n_mem + c - 1 raw slots, the oldest c - 1 of which
    are the eviction buffer):
        ``raw``: (B, n_layers, R, D) hidden states entering each layer, oldest first;
        ``cmem``: (B, n_layers, n_cmem, D) compressed slots, oldest first (invalid ones zero);
        ``cvalid``: (B, n_cmem) bool, compressed slot belongs to the current episode;
        ``ep_t``: (B,) long, episode time of the last step (-1: nothing seen yet);
        ``raw_kv``, ``cmem_kv`` (if ``cache_kv``): their keys and values, (..., 2D);
        ``usage`` (``most_used`` only): (B, n_layers, R) attention received by each raw state.

    Args:
        d_model: width of inputs, outputs and every layer.
        opts: ``CompressiveOptions`` (checked by ``make_core``).
    """

    options_type = CompressiveOptions

    def __init__(self, d_model: int, opts: CompressiveOptions) -> None:
        super().__init__()
        n_mem, n_cmem, compression_rate = opts.n_mem, opts.n_cmem, opts.compression_rate
        self.d_model, self.n_layers = d_model, opts.n_layers
        self.n_mem, self.n_cmem, self.rate = n_mem, n_cmem, compression_rate
        self.n_raw = n_mem + compression_rate - 1
        self.compression, self.memory_dtype = opts.compression, opts.storage_dtype
        self.cache_kv = opts.cache_kv
        self.pre_ln = opts.norm_first
        self.blocks = nn.ModuleList(TransformerBlock(d_model, opts) for _ in range(opts.n_layers))
        self.compressors = nn.ModuleList(
            Compressor(d_model, compression_rate, opts.compression) for _ in range(opts.n_layers)
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
        if self.compression == "most_used":
            state["usage"] = torch.zeros(b, n, self.n_raw, device=device)
        return state

    def plan(self, state: State, episode_start: Tensor) -> dict[str, Tensor]:
        """Everything about who sees what, shared by all layers (all in call-relative time).

        Stream: the R stored raw states (times -R..-1) then the T segment steps (0..T-1).
        Potential blocks end at times e = -n_mem .. T-1-n_mem (evicted during this call); the
        one ending at e is formed when its episode time is c-1 mod c and its episode is still
        current when it is evicted (after step e + n_mem).
        """
        b, t = episode_start.shape
        nm, ncm, c, r = self.n_mem, self.n_cmem, self.rate, self.n_raw
        dev = episode_start.device
        ep_t, steps = state["ep_t"], torch.arange(t, device=dev)
        ls = last_start(episode_start)  # (B, T)
        pre = -(ep_t + 1)[:, None]  # (B, 1) start time of the episode running into the call
        q_start = torch.where(ls >= 0, ls, pre)  # (B, T) episode start of each step
        seg_tau = torch.where(ls >= 0, steps - ls, ep_t[:, None] + 1 + steps)
        raw_t = torch.arange(-r, t, device=dev)  # (R + T,) stream times
        tau = torch.cat([ep_t[:, None] + 1 + raw_t[:r], seg_tau], dim=1)  # (B, R + T)
        start = torch.cat([pre.expand(b, r), q_start], dim=1)
        valid = tau >= 0
        # Potential blocks: stream index p = c - 1 + k ends at time e = p - R; evicted after p + nm.
        p = torch.arange(c - 1, c - 1 + t, device=dev)
        tau_e = tau[:, p]
        formed = valid[:, p] & (tau_e >= c - 1) & (tau_e % c == c - 1)
        formed &= start[:, p] == start[:, p + nm]
        # Old compressed slots: the newest ended at the last block-ending time before the call.
        newest = torch.div(ep_t - nm + 1, c, rounding_mode="floor") * c - 1 - ep_t - 1  # (B,)
        old_e = newest[:, None] - c * torch.arange(ncm - 1, -1, -1, device=dev)  # (B, ncm)
        blk_e = torch.cat([old_e, (p - r).expand(b, t)], dim=1)  # (B, ncm + T)
        blk_valid = torch.cat([state["cvalid"], formed], dim=1)
        blk_start = torch.cat([pre.expand(b, ncm), start[:, p]], dim=1)
        same = q_start[..., None]  # (B, T, 1)
        dt = steps[:, None] - nm - 1 - blk_e[:, None, :]  # (B, T, ncm + T)
        blk_vis = blk_valid[:, None] & (blk_start[:, None] == same) & (dt >= 0) & (dt < c * ncm)
        lag = steps[:, None] - raw_t[None, :]  # (T, R + T)
        raw_vis = valid[:, None] & (start[:, None] == same) & (lag >= 0) & (lag <= nm)
        blk_d = nm + 1 + torch.div(dt, c, rounding_mode="floor")
        dist = torch.cat([blk_d, lag.expand(b, t, r + t)], dim=2)  # (B, T, K)
        # Next compressed memory: the last ncm formed among [old slots | new blocks].
        cand = torch.cat([torch.ones_like(state["cvalid"]), formed], dim=1)
        order = torch.where(cand, torch.arange(ncm + t, device=dev), -1)
        keep = order.topk(ncm, dim=1).values.sort(dim=1).values  # (B, ncm)
        still = blk_valid & (blk_start == q_start[:, -1:])
        return {
            "mask": torch.cat([blk_vis, raw_vis], dim=2),
            "raw_only": torch.cat([torch.zeros_like(blk_vis), raw_vis], dim=2),
            "dist": dist[:, None],
            "formed": formed,
            "keep": keep,
            "cvalid": still.gather(1, keep),
            "ep_t": seg_tau[:, -1],
        }

    def forward(
        self, x: Tensor, state: State, episode_start: Tensor, trace: list[Tensor] | None = None
    ) -> CoreOutput:
        """Run the core over a segment (``MemoryCore.forward``).

        Args:
            trace: if given, the last layer's attention weights (B, H, T, K) are appended to
                it (what ``inspect`` shows).
        """
        t, c, ncm = x.shape[1], self.rate, self.n_cmem
        plan = self.plan(state, episode_start)

        def rel(scores: Tensor) -> Tensor:
            return gather_rel(scores, plan["dist"])

        keep = plan["keep"][..., None].expand(-1, -1, self.d_model)
        keep2 = plan["keep"][..., None].expand(-1, -1, 2 * self.d_model)
        use_cache = self.cache_kv and not torch.is_grad_enabled()
        raws, cmems, usages, raw_kvs, cmem_kvs = [], [], [], [], []
        aux = x.new_zeros(())
        cvalid = plan["cvalid"][..., None]  # (B, ncm, 1)
        h = x
        for i, (block, comp) in enumerate(zip(self.blocks, self.compressors)):
            raw = state["raw"][:, i].to(x.dtype)  # (B, R, D)
            cm = state["cmem"][:, i].to(x.dtype)  # (B, ncm, D)
            stream = torch.cat([raw, h.detach()], dim=1)  # (B, R + T, D), stop-gradient
            windows = stream.unfold(1, c, 1)[:, :t].transpose(-1, -2)  # (B, T, c, D)
            usage = None
            if self.compression == "most_used":
                # Usage first: attention from this call's steps to the raw memory only.
                blank = torch.cat([cm, torch.zeros_like(h), raw], dim=1)
                _, _, w = block(h, block.kv_of(blank), self.pos, rel, plan["raw_only"], True)
                got = w[..., ncm + t :].mean(1).sum(1).detach()  # (B, R + T)
                stream_usage = torch.cat([state["usage"][:, i], torch.zeros_like(h[..., 0])], 1)
                stream_usage = stream_usage + got
                usage = stream_usage.unfold(1, c, 1)[:, :t]  # (B, T, c)
                usages.append(stream_usage[:, -self.n_raw :])
            blocks = comp(windows, usage)  # (B, T, D); only the aux loss reaches comp
            if use_cache:  # acting: keys/values of the memory were computed when it was written
                kv_mem = [state["cmem_kv"][:, i], block.kv_of(blocks), state["raw_kv"][:, i]]
                kv_ctx = torch.cat([z.to(x.dtype) for z in kv_mem], dim=1)
            else:
                kv_ctx = block.kv_of(torch.cat([cm, blocks.detach(), raw], dim=1))
            traced = trace is not None and i == self.n_layers - 1
            out, kv, w = block(h, kv_ctx, self.pos, rel, plan["mask"], traced)
            if traced:
                trace.append(w)
            if torch.is_grad_enabled() and self.compression == "conv":
                aux = aux + self.reconstruction_loss(block, h, windows, blocks, plan["formed"])
            raws.append(stream[:, -self.n_raw :])
            new_cm = torch.cat([cm, blocks.detach()], dim=1).gather(1, keep)
            cmems.append(new_cm * cvalid)
            if self.cache_kv:
                kv = kv.detach()  # (B, ncm + T + R + T, 2D)
                raw_kvs.append(kv[:, ncm + t :][:, -self.n_raw :])
                cmem_kvs.append(kv[:, : ncm + t].gather(1, keep2) * cvalid)
            h = out
        new = {
            "raw": torch.stack(raws, 1).to(self.memory_dtype),
            "cmem": torch.stack(cmems, 1).to(self.memory_dtype),
            "cvalid": plan["cvalid"],
            "ep_t": plan["ep_t"],
        }
        if self.cache_kv:
            new["raw_kv"] = torch.stack(raw_kvs, 1).to(self.memory_dtype)
            new["cmem_kv"] = torch.stack(cmem_kvs, 1).to(self.memory_dtype)
        if usages:
            new["usage"] = torch.stack(usages, 1)
        return CoreOutput(self.ln_out(h), new, aux / self.n_layers)

    @torch.no_grad()
    def inspect(self, x: Tensor, state: State, episode_start: Tensor) -> dict[str, Tensor]:
        """Last layer's attention (T, K) for row 0, averaged over heads (MemoryCore.inspect).

        Keys: the ``n_cmem`` compressed slots, the T blocks compressed during this call, the
        raw-memory slots, then the T steps of ``x``; masked keys get weight 0.
        """
        seen: list[Tensor] = []
        self(x, state, episode_start, trace=seen)
        return {"attention": seen[0][0].mean(0)}

    @staticmethod
    def reconstruction_loss(
        block: TransformerBlock, h: Tensor, windows: Tensor, blocks: Tensor, formed: Tensor
    ) -> Tensor:
        """||attn(h, old_mem) - attn(h, f_c(old_mem))||^2 over the blocks formed in this call.

        The segment's states query the evicted states (as they were) and their compressions,
        through this layer's attention with every weight detached (Rae et al. 2020, Alg. 2).
        """
        rows = formed.any(dim=1)  # (B,) rows that compressed something
        if not bool(rows.any()):
            return h.new_zeros(())
        b, t, c, d = windows.shape
        old = block.frozen_content_attention(
            h.detach(), windows.reshape(b, t * c, d), formed.repeat_interleave(c, dim=1)
        )
        new = block.frozen_content_attention(h.detach(), blocks, formed)
        err = (old - new).square().mean(dim=(1, 2))  # (B,)
        return (err * rows).sum() / rows.sum()
