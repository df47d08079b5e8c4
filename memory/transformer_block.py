"""One Transformer-XL-family layer: relative attention over [context | segment], then an MLP.

- ``TransformerBlock``: Dai et al. 2019's post-LN block, the identity-map-reordered (pre-LN,
  ReLU) block and GTrXL's gated block of Parisotto et al. 2020, built from
  ``memory.attention``'s relative attention.
- ``GRUGate``: GTrXL's gate, in place of a residual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnemo.memory.attention import BlockOptions, RelMultiHeadAttention

if TYPE_CHECKING:
    from mnemo.memory.blockwise import Windows


class GRUGate(nn.Module):
    """GTrXL's gating layer (Parisotto et al. 2020, eq. 9) in place of a residual x + y.

    r = s(W_r y + U_r x), z = s(W_z y + U_z x - b_g), h = tanh(W_g y + U_g (r * x)),
    g = (1 - z) * x + z * h. b_g > 0 starts the gate near the identity map.
    """

    def __init__(self, d_model: int, gate_bias: float) -> None:
        super().__init__()
        self.w = nn.Linear(d_model, 3 * d_model, bias=False)  # W_r, W_z, W_g
        self.u = nn.Linear(d_model, 2 * d_model, bias=False)  # U_r, U_z
        self.ug = nn.Linear(d_model, d_model, bias=False)
        self.bg = nn.Parameter(torch.full((d_model,), float(gate_bias)))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        wr, wz, wg = self.w(y).chunk(3, dim=-1)
        ur, uz = self.u(x).chunk(2, dim=-1)
        r = torch.sigmoid(wr + ur)
        z = torch.sigmoid(wz + uz - self.bg)
        h = torch.tanh(wg + self.ug(r * x))
        return (1 - z) * x + z * h


class TransformerBlock(nn.Module):
    """One layer: relative attention over [context | segment] then a position-wise MLP.

    - ``pre_ln=False`` (Dai et al. 2019): y = LN(h + Attn(h)); out = LN(y + FF(y)).
    - ``pre_ln=True`` (TrXL-I of Parisotto et al.): y = h + ReLU(Attn(LN(h)));
      out = y + ReLU(FF(LN(y))), keys/values from LN of the context too.
    - ``gated=True`` (GTrXL): the pre-LN block with both residuals replaced by ``GRUGate``.
    """

    def __init__(self, d_model: int, opts: BlockOptions) -> None:
        super().__init__()
        self.pre_ln, self.gated = opts.norm_first, opts.gated
        d_ff = opts.d_ff or 4 * d_model
        self.attn = RelMultiHeadAttention(d_model, opts.n_heads)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        if opts.gated:
            b_g = opts.gate_bias
            self.gate1, self.gate2 = GRUGate(d_model, b_g), GRUGate(d_model, b_g)

    def kv_of(self, ctx: Tensor) -> Tensor:
        """Keys and values (B, N, 2D) of context hidden states (B, N, D)."""
        return self.attn.kv(self.ln1(ctx) if self.pre_ln else ctx)

    def frozen_projection(self, z: Tensor, weight: Tensor) -> Tensor:
        """``weight`` (this layer's q or kv) applied to what attention reads of ``z`` (B, N, D),
        with every parameter detached."""
        if self.pre_ln:
            w, b = self.ln1.weight.detach(), self.ln1.bias.detach()
            z = F.layer_norm(z, (z.shape[-1],), w, b, self.ln1.eps)
        return F.linear(z, weight.detach())

    def frozen_content_attention(self, q: Tensor, kv: Tensor, mask: Tensor) -> Tensor:
        """Content-only attention of queries ``q`` (B, T, D) over keys/values ``kv`` (B, N, 2D),
        mask (B, N) bool.

        Both come from this layer's weights with every parameter detached
        (``frozen_projection``, or the layer's own keys/values, detached), so a loss on the
        result trains only what produced the context (the compressor of Rae et al. 2020).
        Returns (B, T, D) per-head outputs. Masked keys get -1e9 added (weight 0), so rows
        whose mask is all False come out finite but meaningless; callers must drop them.
        """
        a = self.attn
        qh = a.heads(q)
        k, v = (a.heads(z) for z in kv.chunk(2, dim=-1))
        hidden = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, -1e9)
        out = F.scaled_dot_product_attention(qh, k, v, attn_mask=hidden[:, None, None, :])
        return out.transpose(1, 2).reshape(q.shape)

    def attend_input(self, h: Tensor) -> Tensor:
        """What the attention sub-layer reads from the hidden states (B, T, D)."""
        return self.ln1(h) if self.pre_ln else h

    def attend(
        self,
        hn: Tensor,
        kv: Tensor,
        pos: Tensor,
        win: Windows,
        need_weights: bool = False,
        q: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention of ``hn`` (B, T, D) over ``kv`` (B, K, 2D), block by block (``win``);
        ``q``: its projected queries (B, T, D), if the caller has them.

        Returns (B, T, D) and, if asked for, the weights (B * n, H, Q, W) over each block's keys.
        """
        keys, mask = win.keys(kv), win.attention_mask
        qs = None if q is None else win.queries(q)
        a, w = self.attn(win.queries(hn), keys, pos, win.rel, mask, need_weights, qs)
        return win.merge(a), w

    def attention_weights(self, hn: Tensor, kv: Tensor, pos: Tensor, win: Windows) -> Tensor:
        """The weights (B * n, H, Q, W) of ``attend`` alone, without computing its output."""
        return self.attn.weights(win.queries(hn), win.keys(kv), pos, win.rel, win.attention_mask)

    def finish(self, h: Tensor, a: Tensor) -> Tensor:
        """The rest of the layer after attention ``a``: residual or gate, then the MLP."""
        if not self.pre_ln:
            y = self.ln1(h + a)
            return self.ln2(y + self.ff(y))
        a = F.relu(a)
        y = self.gate1(h, a) if self.gated else h + a
        f = F.relu(self.ff(self.ln2(y)))
        return self.gate2(y, f) if self.gated else y + f

    def forward(
        self,
        h: Tensor,
        kv_ctx: Tensor | list[Tensor],
        pos: Tensor,
        win: Windows,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """h: (B, T, D) segment; kv_ctx: (B, K - T, 2D) keys/values of the context, or its
        pieces in order (concatenated once, with the segment's).

        Returns the block output (B, T, D), keys/values of [context | segment] (B, K, 2D) and
        the attention weights if asked for (``attend``).
        """
        hn = self.attend_input(h)
        pieces = kv_ctx if isinstance(kv_ctx, list) else [kv_ctx]
        kv = torch.cat([*pieces, self.attn.kv(hn)], dim=1)  # (B, K, 2D)
        a, w = self.attend(hn, kv, pos, win, need_weights)
        return self.finish(h, a), kv, w
