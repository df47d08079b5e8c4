"""Attention pieces shared by the Transformer-XL family of cores (trxl, gtrxl, compressive).

- ``sinusoid``: the fixed relative-position encoding R of Dai et al. 2019.
- ``rel_shift``: Dai et al.'s pad-and-reshape trick that turns scores indexed by distance into
  scores indexed by key; ``gather_rel`` is the brute-force gather it must equal (and the general
  form used where distances are not a Toeplitz pattern, as for compressed memories).
- ``RelMultiHeadAttention``: relative multi-head attention with learned biases u, v and W_kR,
  run through ``scaled_dot_product_attention`` with the position term as an additive float mask.
- ``BlockOptions``: the options every core built from these blocks takes (the blocks
  themselves, ``TransformerBlock`` and ``GRUGate``, are in ``memory.transformer_block``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from mnemo.memory.bias_attention import (
    GatherIndex,
    bias_attention,
    gather_index,
    gathered_bias_attention,
)
from mnemo.memory.options import MAX_LAYERS, CoreOptions, option

if TYPE_CHECKING:
    pass

RelFn = Callable[[Tensor], Tensor]
"""Maps position scores by distance (B, H, T, P) to scores by key (B, H, T, K)."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class BlockOptions(CoreOptions):
    """Options of the cores built from ``TransformerBlock`` (trxl, gtrxl, compressive)."""

    n_layers: int = option(2, at_least=1, at_most=MAX_LAYERS)
    """Number of layers."""
    n_heads: int = option(4, at_least=1)
    """Attention heads (must divide ``d_model``)."""
    d_ff: int | None = option(None, at_least=1)
    """Hidden width of the position-wise MLP (None: 4 x d_model)."""
    gated: bool = False
    """GTrXL's GRU gates in place of the residuals (implies ``pre_ln``)."""
    pre_ln: bool = False
    """Identity-map reordering: LayerNorm before each sub-layer, ReLU after it."""
    gate_bias: float = 2.0
    """Initial GRU-gate bias b_g; larger starts closer to the identity map."""
    cache_kv: bool = True
    """Keep the memory's keys/values in the state, so that acting does not re-project them."""
    memory_dtype: str = option("float32", choices=tuple(DTYPES))
    """Storage dtype of the memory ("float32", or "bfloat16" on a GPU)."""

    def inert(self) -> dict[str, str]:
        if self.gated:
            return {"pre_ln": "the GRU gates imply pre-LN blocks"}
        return {"gate_bias": "it is the GRU gates' bias, and gated is false"}

    @property
    def norm_first(self) -> bool:
        """Pre-LN blocks: asked for, or implied by the gates."""
        return self.pre_ln or self.gated

    @property
    def storage_dtype(self) -> torch.dtype:
        return DTYPES[self.memory_dtype]

    def check_width(self, d_model: int) -> str | None:
        if d_model % self.n_heads:
            return f"d_model ({d_model}) must be divisible by n_heads ({self.n_heads})"
        if d_model % 2:
            return f"d_model must be even for the sinusoid encoding, got {d_model}"
        return None


def sinusoid(pos: Tensor, d_model: int) -> Tensor:
    """Sinusoid encodings of (float) distances ``pos`` (P,) -> (P, d_model), [sin | cos]."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, d_model, 2, device=pos.device) / d_model))
    angles = pos.float()[:, None] * inv_freq[None, :]  # (P, d/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def rel_shift(x: Tensor) -> Tensor:
    """Dai et al.'s relative shift.

    ``x[..., i, c]`` holds the score of query i at distance ``K - 1 - c`` (columns run from the
    largest distance down to 0). Returns ``out[..., i, j] = x[..., i, j + T - 1 - i]``, the score
    at distance ``(K - T) + i - j``: query i sits at key index ``K - T + i`` (bottom-right
    alignment). Entries with ``j > K - T + i`` (the future) hold garbage and must be masked.
    """
    *lead, t, k = x.shape
    padded = torch.cat([x.new_zeros(*lead, t, 1), x], dim=-1)  # (..., T, K + 1)
    return padded.view(*lead, k + 1, t)[..., 1:, :].reshape(*lead, t, k)


def gather_rel(x: Tensor, dist: Tensor) -> Tensor:
    """Brute force: ``out[..., i, j] = x[..., i, dist[..., i, j]]`` (scores by distance -> by key).

    Args:
        x: (..., T, P) scores indexed by distance 0..P-1.
        dist: (T, K) or broadcastable (..., T, K) long distances, clamped into [0, P - 1].
    """
    dist = dist.clamp(0, x.shape[-1] - 1).expand(*x.shape[:-1], dist.shape[-1])
    return torch.gather(x, -1, dist)


@dataclass(frozen=True)
class GatherRel:
    """The ``rel`` that gathers the position scores at a distance index per (query, key),
    ``index`` (B, 1, T, K) long, that also masks: masked keys point at distance index P, the
    masked column of ``position_scores`` (``mask`` None in ``RelMultiHeadAttention``). Knowing
    the index, attention forms the bias slice by slice (``gathered_bias_attention``).

    ``shifted`` (G, offset): keys G.. are a Toeplitz run, key G + j of query i at distance
    offset + i - j wherever seen (Transformer-XL's memory and segment; ``gather_index``).
    ``index`` may hold fewer rows R than the scores (a multiple of R), repeating: row r reads
    row r mod R (``GatherIndex``). A query sees each distance at most once (``distinct``)."""

    index: Tensor
    shifted: tuple[int, int] | None = None
    prepared: dict[int, GatherIndex] = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, scores: Tensor) -> Tensor:
        index = self.index
        if index.shape[0] != scores.shape[0]:
            index = index.repeat(scores.shape[0] // index.shape[0], 1, 1, 1)
        return gather_rel(scores, index)

    def for_attention(self, masked: int) -> GatherIndex:
        """The index as ``gathered_bias_attention`` reads it (masked column: distance index
        ``masked``, the last), made once for every layer of the call."""
        if masked not in self.prepared:
            at = gather_index(self.index, masked, masked + 1, self.shifted, distinct=True)
            self.prepared[masked] = at
        return self.prepared[masked]


class RelMultiHeadAttention(nn.Module):
    """Multi-head attention with Transformer-XL relative positions (Dai et al. 2019, eq. 4).

    score(i, j) = (q_i + u) . k_j + (q_i + v) . W_kR R_{i-j}. The content term goes through
    ``scaled_dot_product_attention`` (query ``q + u``); the position term is computed
    separately, turned into a per-key matrix by the caller's ``rel`` function (rel-shift or
    gather) and passed as an additive float ``attn_mask`` together with -inf for masked keys.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if d_model % 2:
            raise ValueError(f"d_model must be even for the sinusoid encoding, got {d_model}")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.r = nn.Linear(d_model, d_model, bias=False)  # W_kR
        self.o = nn.Linear(d_model, d_model, bias=False)
        self.u = nn.Parameter(torch.randn(n_heads, self.d_head) * 0.02)
        self.v = nn.Parameter(torch.randn(n_heads, self.d_head) * 0.02)

    def heads(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, H, N, d_head)."""
        b, n, _ = x.shape
        return x.view(b, n, self.n_heads, self.d_head).transpose(1, 2)

    def position_scores(self, qv: Tensor, pos: Tensor, masked_column: bool = False) -> Tensor:
        """(q + v) . W_kR R_p for every distance p in ``pos``: (B, H, T, d_head) -> (B, H, T, P).

        W_kR R is input-independent but costs P x D^2 to form; folding W_kR into the queries
        instead costs B x T x H x P x D. Take the cheaper (same numbers up to rounding): the
        folded form keeps one acting step at O(P x D) per head even for batch 1.
        ``masked_column``: one more column, distance index P, that scores -inf: a ``rel`` that
        maps masked keys there masks them in the same pass (``mask`` None in ``forward``).
        """
        b, h, t, dh = qv.shape
        p = pos.shape[0] + masked_column
        if self.unfolded_is_cheaper(b * t, p):
            scores = torch.einsum("bhtd,phd->bhtp", qv, self.position_keys(pos, masked_column))
        else:
            w = self.r.weight.view(h, dh, self.d_model)
            r = self.sinusoid(pos, masked_column).to(qv.dtype)
            scores = torch.einsum("bhtd,hde,pe->bhtp", qv, w, r)
        if masked_column:
            scores[..., -1] = float("-inf")
        return scores

    def unfolded_is_cheaper(self, queries: int, p: int) -> bool:
        """Whether forming W_kR R (P, D) beats folding W_kR into ``queries`` queries."""
        h, dh, d = self.n_heads, self.d_head, self.d_model
        return p * d * d + queries * h * p * dh <= queries * h * dh * d + queries * h * p * d

    def sinusoid(self, pos: Tensor, masked_column: bool) -> Tensor:
        """R (P, D) of ``pos``, plus a zero row for the masked column."""
        r = sinusoid(pos, self.d_model)
        return torch.cat([r, r.new_zeros(1, self.d_model)]) if masked_column else r

    def position_keys(self, pos: Tensor, masked_column: bool) -> Tensor:
        """W_kR R per head: (P, H, d_head) (a zero row last for the masked column)."""
        r = self.sinusoid(pos, masked_column).to(self.r.weight.dtype)
        return self.r(r).view(r.shape[0], self.n_heads, self.d_head)

    def forward(
        self,
        hq: Tensor,
        kv: Tensor,
        pos: Tensor,
        rel: RelFn,
        mask: Tensor | None,
        need_weights: bool = False,
        q: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from queries ``hq`` (B, T, D) to keys/values ``kv`` (B, K, 2D).

        Args:
            pos: (P,) distances whose position scores ``rel`` maps onto the K keys.
            rel: callable (B, H, T, P) -> (B, H, T, K).
            mask: (B, T, K) bool, True where query t may attend key j. Each query must see at
                least one key (the token itself), or its row would be NaN. None: ``rel`` puts
                -inf at masked keys itself (``position_scores``' masked column).
            need_weights: also return the attention probabilities (B, H, T, K) (slower path).
            q: the projected queries ``self.q(hq)``, if the caller has them.
        """
        b, t, _ = hq.shape
        p = pos.shape[0] + 1
        q = self.q(hq) if q is None else q
        if not need_weights and isinstance(rel, GatherRel) and self.unfolded_is_cheaper(b * t, p):
            out = self.gathered(q, kv, pos, rel)
            if out is not None:
                return self.o(out.transpose(1, 2).reshape(b, t, self.d_model)), None
        qu, k, v, bias = self.score_parts(q, kv, pos, rel, mask)
        if need_weights:
            w = self.softmax(qu, k, bias)
            out = w @ v
        else:
            w = None
            out = bias_attention(qu, k, v, bias)
        return self.o(out.transpose(1, 2).reshape(b, t, self.d_model)), w

    def gathered(self, q: Tensor, kv: Tensor, pos: Tensor, rel: GatherRel) -> Tensor | None:
        """``forward``'s heads (B, H, T, d_head) from projected queries by
        ``gathered_bias_attention`` (None where it does not run): the bias formed piecewise."""
        q = q.view(*q.shape[:2], self.n_heads, self.d_head)  # (B, T, H, d): the layout it reads
        scale = 1.0 / math.sqrt(self.d_head)
        qu, qv = (((q + z) * scale).transpose(1, 2) for z in (self.u, self.v))
        rk = self.position_keys(pos, masked_column=True)
        masked = pos.shape[0]
        return gathered_bias_attention(qu, qv, kv, rk, rel.for_attention(masked), masked)

    def weights(
        self, hq: Tensor, kv: Tensor, pos: Tensor, rel: RelFn, mask: Tensor | None
    ) -> Tensor:
        """The attention probabilities (B, H, T, K) of ``forward`` alone (no values, no output)."""
        qu, k, _, bias = self.score_parts(self.q(hq), kv, pos, rel, mask)
        return self.softmax(qu, k, bias)

    def score_parts(
        self, q: Tensor, kv: Tensor, pos: Tensor, rel: RelFn, mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Heads of q + u (scaled; ``q`` projected), k and v, and the scaled position term with
        -inf at masked keys. ``mask`` None: ``rel`` masks, by reading distance index P."""
        q = self.heads(q)  # (B, H, T, dh)
        k, v = (self.heads(z) for z in kv.chunk(2, dim=-1))  # (B, H, K, dh)
        scale = 1.0 / math.sqrt(self.d_head)
        qv = (q + self.v[:, None]) * scale
        bias = rel(self.position_scores(qv, pos, masked_column=mask is None))  # (B, H, T, K)
        if mask is not None:
            bias = bias.masked_fill(~mask[:, None], float("-inf"))
        return (q + self.u[:, None]) * scale, k, v, bias

    def softmax(self, qu: Tensor, k: Tensor, bias: Tensor) -> Tensor:
        """Probabilities from ``score_parts`` (queries already scaled)."""
        return torch.softmax(qu @ k.transpose(-1, -2) + bias, dim=-1)
