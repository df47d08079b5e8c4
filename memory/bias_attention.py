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


def chunks(batch: int, per_item: int, budget: int = 1 << 19):
    """Slices of the batch whose score matrices hold about ``budget`` numbers (2 MB): each
    chunk's steps run while its scores are still in cache."""
    step = max(1, budget // max(per_item, 1))
    return [slice(i, min(i + step, batch)) for i in range(0, batch, step)]


def bias_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """softmax(q k^T + bias) v over the last two dims; ``q`` already scaled. ``bias`` may be
    overwritten (``BiasAttention``)."""
    if q.device.type != "cpu" or torch.is_autocast_enabled("cpu") or not bias.is_contiguous():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
    return BiasAttention.apply(q, k, v, bias)
