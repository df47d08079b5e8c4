"""One Titans layer: the variant's block (LMM, MAC, MAG or MAL) and a feed-forward block.

The paper, the variants and where they depart from it: memory/titans.py (``TitansCore`` stacks
these layers). The memory itself is ``memory.neural_memory.NeuralMemory``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mnemo.memory.base import where_rows
from mnemo.memory.neural_memory import ChunkCoefs, NeuralMemory, TokenGrads
from mnemo.memory.titans_layout import ChunkLayout
from mnemo.memory.titans_options import TitansOptions
from mnemo.memory.window_attention import SlidingWindowAttention
from mnemo.memory.write_bound import WriteChain

ASK_HOST_ON = ("cpu",)
"""Device types where acting asks the host which chunks have work (see ``_chunk_flags``)."""


def _chunk_flags(lay: ChunkLayout) -> tuple[list[bool], list[bool], list[bool]]:
    """Per chunk: does any row reset / complete it, and does every row complete it? Lets a
    call skip idle work, and the row-wise select of the written memory when no row keeps its
    old one (a training segment: ~5% of a titans_mac LM step went to those selects).

    On an accelerator, a one-chunk call (acting) answers True, True, False without asking the
    device: the work is then done for every row and selected with ``torch.where``, so acting
    never waits for the device. On CPU, where asking is free, skipping the idle writes made
    acting 2.2x faster (MAG, 128 rows, d_model 32 and 64).
    """
    if lay.fresh.shape[1] == 1 and lay.fresh.device.type not in ASK_HOST_ON:
        return [True], [True], [False]
    complete = lay.complete
    return lay.fresh.any(0).tolist(), complete.any(0).tolist(), complete.all(0).tolist()


class TitansLayer(nn.Module):
    """One Titans layer (variant block + feed-forward block); see the module docstring."""

    def __init__(self, d_model: int, opts: TitansOptions) -> None:
        super().__init__()
        variant = opts.variant
        self.variant, self.d_model, self.chunk = variant, d_model, opts.chunk_size
        self.ablate_memory = opts.ablate_memory
        self.intra_chunk_reads = opts.intra_chunk_reads
        self.retrieval_grad = opts.retrieval_grad
        self.mem = NeuralMemory(
            d_model,
            n_heads=opts.n_heads,
            mem_depth=opts.mem_depth,
            mem_expand=opts.mem_expand,
            conv_kernel=opts.conv_kernel,
            max_lr=opts.max_lr,
            max_grad_norm=opts.max_grad_norm,
            bounded_backward=opts.bounded_backward,
            gain_limit=opts.backward_gain_limit,
        )
        self.norm1 = nn.RMSNorm(d_model)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        if variant in ("lmm", "mal"):
            self.in_gate = nn.Linear(d_model, d_model)
        if variant != "lmm":
            self.attn = SlidingWindowAttention(d_model, opts.n_heads, opts.window)
            self.persistent = nn.Parameter(torch.randn(opts.n_persistent, d_model) * 0.5)
        if variant in ("mac", "mag"):
            self.gate_norm = nn.RMSNorm(d_model)
        if variant == "mal":
            self.norm_mid = nn.RMSNorm(d_model)
        hidden = opts.ffn_mult * d_model
        self.norm2 = nn.RMSNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, hidden), nn.SiLU(), nn.Linear(hidden, d_model))

    def initial_state(self, batch_size: int, device: torch.device | str) -> dict[str, Any]:
        d, mem = self.d_model, self.mem
        w, s = mem.fresh_weights(batch_size)
        st: dict[str, Any] = {
            "buf": torch.zeros(batch_size, self.chunk, d, device=device),
            "W": tuple(t.to(device) for t in w),
            "S": tuple(t.to(device) for t in s),
            "tail_q": mem.fresh_tail(batch_size, d, device),
            "tail_kv": mem.fresh_tail(batch_size, 2 * d, device),
        }
        if self.variant == "mac":
            st["tail_qy"] = mem.fresh_tail(batch_size, d, device)
        if self.variant in ("mag", "mal"):
            st["swa"] = self.attn.initial_state(batch_size, device)
        return st

    def _read(
        self,
        weights: tuple[Tensor, ...],
        momentum: tuple[Tensor, ...],
        grads: TokenGrads | None,
        coefs: ChunkCoefs | None,
        q: Tensor,
    ) -> Tensor:
        """Reads at the chunk start, or within the chunk (``intra_chunk_reads``)."""
        if grads is None or coefs is None:
            out = self.mem.read(weights, q)
        else:
            out = self.mem.read_within(weights, momentum, grads, coefs, q)
        # The attention-only control: the memory still learns but nothing reads it.
        return torch.zeros_like(out) if self.ablate_memory else out

    def _persistent_kv(self) -> tuple[Tensor, Tensor] | None:
        if self.persistent.shape[0] == 0:
            return None
        return self.attn.keys_values(self.persistent[None])

    def _mac_pass(
        self,
        u: Tensor,
        lay: ChunkLayout,
        st: dict[str, Any],
        trace: list[Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """MAC, segment by segment: retrieve, attend, gate, update. u: (B, S, D) grid."""
        mem, c = self.mem, self.chunk
        ms = {k: st[k] for k in ("W", "S", "tail_q", "tail_kv", "tail_qy")}
        tails = ("tail_q", "tail_kv", "tail_qy")
        pkv = self._persistent_kv()
        n_tail = mem.conv_kernel - 1
        causal = torch.ones(c, c, dtype=torch.bool, device=u.device).tril()
        eye = torch.eye(c, dtype=torch.bool, device=u.device)
        pos = torch.arange(2 * c, device=u.device)
        outs, chain = [], WriteChain()  # the writes' shared backward budget
        # split/unbind once: indexing inside the loop would make backward quadratic in T
        # (each slice's backward writes into a zero tensor of the full size).
        u_chunks, real_chunks = u.split(c, dim=1), lay.real.split(c, dim=1)
        any_fresh, any_complete, all_complete = _chunk_flags(lay)
        for i, (uc, real) in enumerate(zip(u_chunks, real_chunks)):
            fresh, complete = lay.fresh[:, i], lay.complete[:, i]
            if any_fresh[i]:
                ms["W"], ms["S"] = mem.reset(fresh, ms["W"], ms["S"])
                for k in tails:
                    ms[k] = torch.where(fresh[:, None, None], 0.0, ms[k])
            w = ms["W"]
            # Without retrieval_grad no gradient reaches the memory through the retrieved
            # tokens (so autograd records nothing of them): with it, chunk i's memory reached
            # chunk i + 1's through h -> y -> the write's k, v, a path the bounded write cannot
            # scale (1.5e13 at the first tokens of 4096, chunk 16, max_lr 0.125).
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.retrieval_grad):
                q, full_q = mem.queries(uc, ms["tail_q"])
                # (B, c, D) long-term context
                h = None if self.ablate_memory else self.mem.read(w, q.transpose(1, 2))
            kx, vx = self.attn.keys_values(uc)
            seen = causal[None] & real[:, None, :]  # (B, c, c)
            # The diagonal stays visible so that padding slots never get an empty softmax row.
            mask, ks, vs = seen | eye, kx, vx
            if h is not None:
                kh, vh = self.attn.keys_values(h)
                mask = torch.cat([seen, mask], dim=2)
                ks, vs = torch.cat([kh, ks], 1), torch.cat([vh, vs], 1)
            # Rotary positions: retrieved tokens 0..c-1 before the segment's c..2c-1.
            y = self.attn.attend(uc, ks, vs, mask, pos[c:], pos[2 * c - ks.shape[1] :], pkv)
            qy, full_qy = mem.queries(y, ms["tail_qy"])
            if any_complete[i] or self.intra_chunk_reads:
                k, v, full_kv = mem.keys_values(y, ms["tail_kv"])
                k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, H, c, Dh)
                coefs = mem.coefficients(y)
            # The gate reads the memory as it learns y (the paper's M*_t(y_t)), causally.
            within = (None, None)
            if self.intra_chunk_reads:
                within = (mem.token_grads(w, k, v, coefs), coefs)
            gate = self._read(w, ms["S"], *within, qy.transpose(1, 2))
            outs.append(self.gate_norm(y) * torch.sigmoid(gate))
            if any_complete[i]:
                w2, s2 = mem.write(w, ms["S"], k, v, coefs, chain)
                if trace is not None:
                    trace.append(mem.retrieval_loss(w, k, v))
                every = all_complete[i]
                ms["W"] = w2 if every else where_rows(complete, w2, w)
                ms["S"] = s2 if every else where_rows(complete, s2, ms["S"])
                fulls = {"tail_q": full_q, "tail_kv": full_kv, "tail_qy": full_qy}
                for k in tails:
                    new_tail = fulls[k][:, fulls[k].shape[1] - n_tail :]
                    ms[k] = (
                        new_tail if every else torch.where(complete[:, None, None], new_tail, ms[k])
                    )
        return torch.cat(outs, dim=1), ms

    def _parallel_pass(
        self,
        u: Tensor,
        lay: ChunkLayout,
        st: dict[str, Any],
        trace: list[Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """LMM/MAG/MAL: inputs, gates and reads for all chunks at once; updates in order."""
        mem, c = self.mem, self.chunk
        b, n_slots, d = u.shape
        n, n_tail = n_slots // c, mem.conv_kernel - 1
        ep_tail = torch.zeros(b, n_tail, dtype=torch.long, device=u.device)
        q, full_q = mem.queries(u, st["tail_q"], lay.ep_slot, ep_tail)  # (B, S, H, Dh)
        k, v, full_kv = mem.keys_values(u, st["tail_kv"], lay.ep_slot, ep_tail)
        any_fresh, any_complete, all_complete = _chunk_flags(lay)
        # Without reads inside chunks, gates matter only for chunks that complete (often none
        # when acting one step).
        within = self.intra_chunk_reads
        coefs = mem.coefficients(u.view(b, n, c, d)) if within or any(any_complete) else None

        def grid(t: Tensor) -> Tensor:  # (B, S, H, Dh) -> (B, N, H, c, Dh)
            return t.view(b, n, c, *t.shape[2:]).transpose(2, 3)

        # unbind once: indexing inside the loop would make backward quadratic in T.
        ks, vs = grid(k).unbind(1), grid(v).unbind(1)
        if coefs is not None:
            coef_chunks = [type(coefs)(*f) for f in zip(*(t.unbind(1) for t in coefs))]
        w, s, chain = st["W"], st["S"], WriteChain()  # the writes' shared backward budget
        chunk_start_w, chunk_start_s, chunk_grads = [], [], []
        for i in range(n):
            fresh, complete = lay.fresh[:, i], lay.complete[:, i]
            if any_fresh[i]:
                w, s = mem.reset(fresh, w, s)
            chunk_start_w.append(w)
            chunk_start_s.append(s)
            if within:
                chunk_grads.append(mem.token_grads(w, ks[i], vs[i], coef_chunks[i]))
            if any_complete[i]:
                w2, s2 = mem.write(w, s, ks[i], vs[i], coef_chunks[i], chain)
                if trace is not None:
                    trace.append(mem.retrieval_loss(w, ks[i], vs[i]))
                if all_complete[i]:
                    w, s = w2, s2
                else:
                    w, s = where_rows(complete, w2, w), where_rows(complete, s2, s)

        def stack(per_chunk: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
            return tuple(torch.stack(f, dim=1) for f in zip(*per_chunk))  # (B, N, H, ...)

        read_grads = None
        if within:
            read_grads = TokenGrads(
                stack([gr.hs for gr in chunk_grads]),
                stack([gr.dzs for gr in chunk_grads]),
                torch.stack([gr.g for gr in chunk_grads], dim=1),
            )
        w_n, s_n = stack(chunk_start_w), stack(chunk_start_s)
        out = self._read(w_n, s_n, read_grads, coefs if within else None, grid(q))
        out = out.reshape(b, n_slots, d)

        # Convolution context as of the unfinished chunk's start, inside its episode.
        ep_full = torch.cat([ep_tail, lay.ep_slot], dim=1)  # (B, K-1+S)
        ep_next = torch.cat([lay.ep_slot, lay.ep_slot[:, -1:]], dim=1).gather(
            1, lay.tail_base[:, None]
        )
        idx = lay.tail_base[:, None] + torch.arange(n_tail, device=u.device)  # (B, K-1)
        same = (ep_full.gather(1, idx) == ep_next)[..., None]

        def tail(full: Tensor) -> Tensor:
            return torch.where(
                same, full.gather(1, idx[..., None].expand(-1, -1, full.shape[2])), 0.0
            )

        return out, {"W": w, "S": s, "tail_q": tail(full_q), "tail_kv": tail(full_kv)}

    def forward(
        self,
        x: Tensor,
        st: dict[str, Any],
        lay: ChunkLayout,
        episode_start: Tensor,
        trace: list[Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """x: (B, T, D) this layer's input -> (B, T, D) output and new layer state.

        ``trace``, if given, receives the retrieval loss (B, chunk) of every chunk the memory
        learns from, in order (``NeuralMemory.retrieval_loss``).
        """
        d = x.shape[2]
        n_slots = lay.real.shape[1]
        idx = lay.vpos[..., None].expand(-1, -1, d)  # (B, T, D)
        waiting = torch.arange(self.chunk, device=x.device) < lay.n_buffered[:, None]
        xv = torch.where(waiting[..., None], st["buf"].to(x.dtype), 0.0)  # (B, chunk, D)
        xv = nn.functional.pad(xv, (0, 0, 0, n_slots - self.chunk))
        xv = xv + torch.zeros_like(xv).scatter(1, idx, x)  # (B, S, D) virtual grid

        uv = self.norm1(xv)
        pass_ = self._mac_pass if self.variant == "mac" else self._parallel_pass
        ov, ms = pass_(uv, lay, st, trace)
        o = ov.gather(1, idx)  # (B, T, D)
        new: dict[str, Any] = dict(ms)
        u = self.norm1(x)
        if self.variant in ("lmm", "mal"):
            o = o * nn.functional.silu(self.in_gate(u))
        if self.variant == "mag":
            a, new["swa"] = self.attn(u, st["swa"], episode_start, self._prefix())
            o = self.gate_norm(a) * torch.sigmoid(o)
        h = x + self.out_proj(o)
        if self.variant == "mal":
            a, new["swa"] = self.attn(self.norm_mid(h), st["swa"], episode_start, self._prefix())
            h = h + a
        y = h + self.ffn(self.norm2(h))

        # This layer's inputs of the unfinished chunk wait in the state for the next call.
        slot = (lay.tail_base[:, None] + torch.arange(self.chunk, device=x.device)).clamp(
            max=n_slots - 1
        )
        buf = xv.gather(1, slot[..., None].expand(-1, -1, d))
        keep = torch.arange(self.chunk, device=x.device) < lay.tail_count[:, None]
        new["buf"] = torch.where(keep[..., None], buf, 0.0)
        return y, {k: new[k] for k in st}  # same key order as the state passed in

    def _prefix(self) -> Tensor | None:
        return self.persistent[None] if self.persistent.shape[0] else None
