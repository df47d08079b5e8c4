"""softmax(q k^T + bias) v with a bias that is learned (the Transformer-XL position term).

``scaled_dot_product_attention`` on a CPU takes its math path when the additive mask needs a
gradient: it scales q and k, adds the mask, runs a "safe" softmax (checks every row for all
-inf) and records each step for autograd, so a training step of the compressive LM spent more
time passing over the (B, H, Q, W) score tensors than multiplying. ``BiasAttention`` does the
same sums in the fewest passes: one ``baddbmm`` adds the scores into the bias, softmax in place,
and a backward written out (the softmax gradient in one fused call, in place; the bias's
gradient is the scores' gradient), a cache-sized slice of the batch at a time. Rows must see
at least one key (NaN otherwise, as the callers guarantee).
Other devices keep ``scaled_dot_product_attention`` and its fused kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class BiasAttention(torch.autograd.Function):
    """(B, H, Q, d) queries (already scaled), (B, H, W, d) keys and values, (B, H, Q, W) bias
    (-inf at masked keys) -> (B, H, Q, d). The bias is overwritten with the scores (saves a
    pass and a copy): it must be a contiguous temporary that nothing else reads."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
        b, h, n, d = q.shape
        q3, k3, v3 = q.reshape(b * h, n, d), k.reshape(b * h, -1, d), v.reshape(b * h, -1, d)
        p = bias.detach().view(b * h, n, -1)
        out = q3.new_empty(b * h, n, d)
        for s in chunks(b * h, n * p.shape[-1]):
            ps = p[s].baddbmm_(q3[s], k3[s].transpose(1, 2))
            torch.ops.aten._softmax.out(ps, -1, False, out=ps)
            torch.bmm(ps, v3[s], out=out[s])
        ctx.save_for_backward(q3, k3, v3, p)
        ctx.shapes = (q.shape, k.shape, bias.shape)
        return out.view(b, h, n, d)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        q3, k3, v3, p = ctx.saved_tensors
        q_shape, k_shape, bias_shape = ctx.shapes
        g = grad.reshape(q3.shape)
        ds = torch.empty_like(p)
        dq, dk, dv = torch.empty_like(q3), torch.empty_like(k3), torch.empty_like(v3)
        for s in chunks(p.shape[0], p.shape[1] * p.shape[2]):
            dps = torch.bmm(g[s], v3[s].transpose(1, 2), out=ds[s])
            torch.ops.aten._softmax_backward_data.out(dps, p[s], -1, p.dtype, grad_input=dps)
            torch.bmm(dps, k3[s], out=dq[s])
            torch.bmm(dps.transpose(1, 2), q3[s], out=dk[s])
            torch.bmm(p[s].transpose(1, 2), g[s], out=dv[s])
        return dq.view(q_shape), dk.view(k_shape), dv.view(k_shape), ds.view(bias_shape)


class GatheredBiasAttention(torch.autograd.Function):
    """``BiasAttention`` whose bias is the position scores qv . rk gathered at a distance index
    per (query, key), formed head by head and slice by slice, never whole (nor its gradient),
    so that it stays in cache; each head's queries, keys and values are read in place (strided)
    from the projections, never copied out.

    (B, H, Q, d) qu and qv (scaled), (B, W, 2 H d) keys and values (as projected), (H, d, C)
    rk^T per head with its columns in *descending* distance (column c: distance C - 1 - c), and
    a ``GatherIndex`` -> (B, H, Q, d). The descending order makes the scores of a Toeplitz run
    of keys (``GatherIndex.shifted``) a strided view of the position scores, so the backward
    pass copies their gradient where a scatter-add cost 2.5 times as much (the compressive LM
    step's slices: 0.13 against 0.34 ms).
    """

    @staticmethod
    def forward(ctx: Any, qu: Tensor, qv: Tensor, kv: Tensor, rkt: Tensor, at: Any) -> Tensor:
        b, h, n, d = qu.shape
        w = kv.shape[1]
        qu, qv = qu.transpose(1, 2).contiguous(), qv.transpose(1, 2).contiguous()  # (B, Q, H, d)
        p, out = qu.new_empty(h, b, n, w), qu.new_empty(h, b, n, d)
        parts = chunks(b, n * w, at.period(b))  # one buffer for every slice's scores (``most_of``)
        scores_buffer = qu.new_empty(most_of(parts), n, rkt.shape[-1])
        for s in parts:
            m, idx = s.stop - s.start, rows_of(at.index, s, b)
            for i in range(h):
                k, v = kv[s, :, i * d : (i + 1) * d], kv[s, :, (h + i) * d : (h + i + 1) * d]
                scores = scores_buffer[:m]
                torch.mm(qv[s, :, i].reshape(m * n, d), rkt[i], out=scores.view(m * n, -1))
                if at.masked >= 0:
                    scores[..., at.masked] = float("-inf")
                pc = p[i, s]
                torch.gather(scores.view(*idx.shape[:3], -1), -1, idx, out=pc.view(idx.shape))
                pc.baddbmm_(qu[s, :, i], k.transpose(1, 2))
                torch.ops.aten._softmax.out(pc, -1, False, out=pc)
                torch.bmm(pc, v, out=out[i, s])
        ctx.save_for_backward(qu, qv, kv, rkt, p)
        ctx.at = at
        return out.permute(1, 0, 2, 3)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        qu, qv, kv, rkt, p = ctx.saved_tensors
        at = ctx.at
        h, b, n, w = p.shape
        d, cols, g = qu.shape[-1], rkt.shape[-1], at.gathered
        index = at.index if at.scattered is None else at.scattered
        grad = grad.transpose(1, 2).contiguous()  # (B, Q, H, d)
        dqu, dqv = qu.new_empty(h, b, n, d), qu.new_empty(h, b, n, d)
        dkv, drkt = torch.empty_like(kv), rkt.new_zeros(rkt.shape)
        parts = chunks(b, n * w, at.period(b))
        most = most_of(parts)
        ds_buffer, dk_buffer, dscores_buffer = (
            p.new_empty(most, *z) for z in ((n, w), (w, d), (n, cols))
        )
        for s in parts:
            m, idx = s.stop - s.start, rows_of(index, s, b)
            for i in range(h):
                keys, values = slice(i * d, (i + 1) * d), slice((h + i) * d, (h + i + 1) * d)
                k, v, gi, pc = kv[s, :, keys], kv[s, :, values], grad[s, :, i], p[i, s]
                ds = torch.bmm(gi, v.transpose(1, 2), out=ds_buffer[:m])
                torch.ops.aten._softmax_backward_data.out(ds, pc, -1, p.dtype, grad_input=ds)
                torch.bmm(ds, k, out=dqu[i, s])
                dkv[s, :, keys] = torch.bmm(ds.transpose(1, 2), qu[s, :, i], out=dk_buffer[:m])
                dkv[s, :, values] = torch.bmm(pc.transpose(1, 2), gi, out=dk_buffer[:m])
                dscores = dscores_buffer[:m].zero_()
                if at.scattered is not None:  # first: a hidden key's 0 may land on a column
                    at.shifted(dscores).copy_(ds[..., g:])  # that the first G keys add to
                by_row = dscores.view(*idx.shape[:3], -1)
                write = by_row.scatter_ if at.distinct else by_row.scatter_add_
                write(-1, idx, ds[..., :g].view(idx.shape))
                if at.masked >= 0:
                    dscores[..., at.masked] = 0.0  # a constant -inf: nothing flows to rk
                dscores = dscores.view(m * n, -1)
                torch.mm(dscores, rkt[i].t(), out=dqv[i, s].view(m * n, d))
                drkt[i].addmm_(qv[s, :, i].reshape(m * n, d).t(), dscores)
        return dqu.permute(1, 0, 2, 3), dqv.permute(1, 0, 2, 3), dkv, drkt, None


@dataclass(frozen=True)
class GatherIndex:
    """A distance index (B, 1, Q, W) as ``GatheredBiasAttention`` reads it: ``index``, the
    column of each key among position scores of C columns in descending distance; ``masked``,
    the column that scores -inf (-1: none).

    ``scattered`` (B, 1, Q, G), if not None: the first G columns of ``index``, and keys G.. are a
    Toeplitz run: key G + j of query i is at distance ``offset`` + i - j wherever it is seen,
    column C - 1 - offset - i + j (``shifted``). The backward pass then copies their
    gradients through that strided view (no two of a query's keys read one position score)
    and scatter-adds only the first G; the forward pass gathers all W (a gather into part of a
    row, then an add of the run with its mask, was slower than one gather).

    ``distinct``: no two keys a query sees are at one distance (relative positions), so the
    gradient of the gathered scores is written to its columns, not added (the rest land on the
    masked column, zeroed; the run's hidden keys leave zeros): a third less time than adding.

    The index may hold fewer rows R than the call has (B a multiple of R): row r then reads
    index row r mod R (rows alike; ``compressive_windows.block_plan``), and the slices of the
    batch are whole multiples of R, so each reads the one small index where it is in cache.
    """

    index: Tensor
    masked: int
    scattered: Tensor | None = None
    offset: int = 0
    distinct: bool = False

    def period(self, rows: int) -> int:
        """Rows after which the index repeats, for a call of ``rows`` rows (1: it does not)."""
        return 1 if self.index.shape[0] == rows else self.index.shape[0]

    @property
    def gathered(self) -> int:
        return self.index.shape[-1] if self.scattered is None else self.scattered.shape[-1]

    def shifted(self, scores: Tensor) -> Tensor:
        """The Toeplitz run's view (m, Q, W - G) of position scores (m, Q, C), contiguous."""
        m, q, cols = scores.shape
        width = self.index.shape[-1] - self.gathered
        first = scores.storage_offset() + cols - 1 - self.offset
        return scores.as_strided((m, q, width), (q * cols, cols - 1, 1), first)


def gather_index(
    index: Tensor,
    masked: int,
    cols: int,
    shifted: tuple[int, int] | None = None,
    distinct: bool = False,
) -> GatherIndex:
    """``GatherIndex`` of a distance index (B, 1, Q, W) over C = ``cols`` columns (distance
    ``masked`` scores -inf; -1: none). ``shifted`` (G, offset): keys G.. are a Toeplitz run
    (``GatherIndex``); it is used where its strided view fits: W - G < C (no two of a query's
    keys at one column) and W - G <= Q + offset (the view stays inside each row's scores).
    ``distinct``: see ``GatherIndex``."""
    q, w = index.shape[-2:]
    flipped = (cols - 1 - index).contiguous()
    masked = cols - 1 - masked if masked >= 0 else -1
    if shifted is not None:
        first, offset = shifted
        if 0 < w - first < cols and w - first <= q + offset < cols + q:
            run = flipped[..., :first].contiguous()
            return GatherIndex(flipped, masked, run, offset, distinct)
    return GatherIndex(flipped, masked, distinct=distinct)


def rows_of(index: Tensor, s: slice, rows: int) -> Tensor:
    """The index (R, 1, Q, W) of the rows ``s`` of a call of ``rows`` rows, as (G, R', Q, W):
    the slice's own (1, m, Q, W), or the R repeating rows read by each of G = m / R groups (a
    view: ``GatherIndex``). Index (G, R', Q, ·) views of the slice with it."""
    if index.shape[0] == rows:
        return index[s, 0][None]
    r = index.shape[0]
    return index[:, 0].expand((s.stop - s.start) // r, r, *index.shape[2:])


def most_of(parts: list[slice]) -> int:
    """Items in the largest slice: the size of the buffers that every slice and head reuses
    (a fresh tensor for each made the backward pass 3.5% slower on the compressive LM step)."""
    return max(s.stop - s.start for s in parts)


def chunks(batch: int, per_item: int, unit: int = 1) -> list[slice]:
    """Slices of the batch whose score matrices hold about ``CACHE_NUMBERS`` numbers: each
    chunk's steps run while its scores are still in cache. Each slice is whole ``unit``s of
    items (``batch`` is a multiple of ``unit``)."""
    units = batch // unit
    most = max(1, CACHE_NUMBERS // max(per_item * unit, 1))
    step = -(-units // -(-units // most)) if units else 1  # as even as that allows
    return [slice(i * unit, min(i + step, units) * unit) for i in range(0, units, step)]


CACHE_NUMBERS = 1 << 19
"""Scores per slice of the batch (2 MB in float32): on the compressive LM step 0.5 and 2 MB
were as fast, 8 and 32 MB slower."""


def bias_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """softmax(q k^T + bias) v over the last two dims; ``q`` already scaled. ``bias`` may be
    overwritten (``BiasAttention``)."""
    if q.device.type != "cpu" or torch.is_autocast_enabled("cpu") or not bias.is_contiguous():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
    return BiasAttention.apply(q, k, v, bias)


def gathered_bias_attention(
    qu: Tensor,
    qv: Tensor,
    kv: Tensor,
    rk: Tensor,
    index: Tensor | GatherIndex,
    masked: int,
) -> Tensor | None:
    """``GatheredBiasAttention`` with rk (P, H, d) in ascending distance and a distance
    ``index`` (B, 1, Q, W), or one already prepared by ``gather_index(index, masked, P)``, on a
    CPU; None elsewhere (the caller then forms the bias whole and calls ``bias_attention``)."""
    if qu.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return None
    at = index if isinstance(index, GatherIndex) else gather_index(index, masked, rk.shape[0])
    rkt = rk.flip(0).permute(1, 2, 0)  # (H, d, P), descending distance
    return GatheredBiasAttention.apply(qu, qv, kv.contiguous(), rkt, at)
