"""softmax(q k^T + bias) v with a bias that is learned (the Transformer-XL position term).

``scaled_dot_product_attention`` on a CPU takes its math path when the additive mask needs a
gradient: it scales q and k, adds the mask, runs a "safe" softmax (checks every row for all
-inf) and records each step for autograd, so a training step of the compressive LM spent more
time passing over the (B, H, Q, W) score tensors than multiplying. ``BiasAttention`` does the
same sums in the fewest passes: one ``baddbmm`` adds the scores to the bias, one softmax, and a
backward written out (the softmax gradient in one fused call; the bias's gradient is the
scores' gradient). Rows must see at least one key (NaN otherwise, as the callers guarantee).
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
        p = bias.detach().view(b * h, n, -1).baddbmm_(q3, k3.transpose(1, 2))  # bias is spent
        torch.ops.aten._softmax.out(p, -1, False, out=p)  # in place: row by row
        ctx.save_for_backward(q3, k3, v3, p)
        ctx.shapes = (q.shape, k.shape, bias.shape)
        return torch.bmm(p, v3).view(b, h, n, d)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        q3, k3, v3, p = ctx.saved_tensors
        q_shape, k_shape, bias_shape = ctx.shapes
        g = grad.reshape(q3.shape)
        dp = torch.bmm(g, v3.transpose(1, 2))
        ds = torch.ops.aten._softmax_backward_data.out(dp, p, -1, p.dtype, grad_input=dp)
        dq = torch.bmm(ds, k3).view(q_shape)
        dk = torch.bmm(ds.transpose(1, 2), q3).view(k_shape)
        dv = torch.bmm(p.transpose(1, 2), g).view(k_shape)
        return dq, dk, dv, ds.view(bias_shape)


def bias_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """softmax(q k^T + bias) v over the last two dims; ``q`` already scaled. ``bias`` may be
    overwritten (``BiasAttention``)."""
    if q.device.type != "cpu" or torch.is_autocast_enabled("cpu") or not bias.is_contiguous():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
    return BiasAttention.apply(q, k, v, bias)
