"""The neural long-term memory (LMM) of Titans, with fast weights as explicit state.

Behrouz, Zhong & Mirrokni 2025, "Titans: Learning to Memorize at Test Time" (arXiv 2501.00663),
sections 3.1-3.2 and 4.4. The memory M is an MLP (``mem_depth`` layers, one weight set per batch
row and head) trained *while the sequence is read* on the associative loss

    l(M; x_t) = ||M(k_t) - v_t||^2,        k_t = x_t W_K, v_t = x_t W_V,

with surprise carried by momentum and forgetting by weight decay:

    S_t = eta_t S_{t-1} - theta_t grad l(M_{t'}; x_t),      M_t = (1 - alpha_t) M_{t-1} + S_t,

where eta, theta, alpha in (0, 1) are data-dependent (sigmoid of a linear map of the token;
theta is scaled by ``max_lr``). Retrieval is a forward pass without update, y_t = M*(q_t).
q, k, v come from linear maps, a causal depthwise 1D convolution and SiLU; q and k are
l2-normalised (section 4.4).

Chunked parallel form (section 3.2): within a chunk of b tokens every gradient is taken at the
chunk-start weights M_{t'}; momentum and decay are then a linear recurrence whose closed form is
computed here with a (b x b) matrix of products of eta and suffix products of (1 - alpha), so a
chunk costs a few matmuls. Per-token gradients of the MLP are written out explicitly (manual
backprop through the SiLU MLP): the update needs only sum_j c_j h_j^T dz_j, so the per-token
outer products are never materialised.

Memory per chunk: activations O(b * H * sum(widths)) plus the (b x b) coefficients per head;
the autograd graph keeps one copy of the fast weights and momentum per chunk, i.e.
O((T / b) * 2 * P) per row for a training call of T tokens, P = sum_l H * d_in_l * d_out_l.

Numerical guard: each token's inner gradient is clipped to Frobenius norm ``max_grad_norm``
(over all memory layers), and theta <= ``max_lr``, so the inner update is bounded whatever the
sequence length; with k l2-normalised the forward pass stays bounded too. Backpropagating
through many chunks is a different matter: a chunk's Jacobian is about (1 - alpha) I minus theta
times the sum of its b tokens' Hessians (all taken at the same weights), so the exact gradient
explodes once theta is large for the chunk size. Measured with the exact backward
(``write_exact``; ``titans_lmm``, d_model 16, reads inside chunks, inputs x20, loss on the last
chunk of 4096 tokens; norm of the gradient reaching the first chunk):

    max_lr     0.05    0.1     0.125   0.177   0.25    0.35    0.5
    chunk 4    3e-4    3e-3    9e-3    4e1     5e9     inf     nan
    chunk 8    3e-4    5e-3    5e-2    4e3     1e17    inf     nan
    chunk 16   8e-4    4e-2    1e0     3e11    inf     inf     nan
    chunk 32   2e-3    2e7     1e13    1e19    inf     inf     inf

So no rule in max_lr alone keeps it bounded (chunk 32 diverges at the default 0.1, and the
gates can drive theta from max_lr / 2 at initialisation up to max_lr in training). ``write``
therefore bounds the backward pass itself (``BoundStateGrad``): per row, the gradient that
reaches the chunk-start (M, S) through a write is scaled down where its growth through the
writes so far in the backward pass (a ``WriteChain`` the writes of one pass share) would exceed
``gain_limit``; the forward pass and the gradients to k, v and the gates are exact. At
``gain_limit`` 1 (the default) no write may grow it: the same probe reads 1.5e-2 at chunk 4 /
max_lr 0.5 (exact: nan), 7.5e-2 at 32 / 0.5 (inf), 6e-3 at 16 / 0.177 (3e11), 1.1e-2 at 32 /
0.1 (2e7), against 2-5 at the last chunk. At 1e3 it is exact up to chunk 16 / 0.125, and
4.5-79 where the exact one is 37 to nan; at 1e4 exact also at chunk 4 / 0.177 (37), and
51-790 elsewhere (``benchmarks/titans_bound_probe.py --lm``). The default is 1 because the
exact gradient also
grows where nothing diverges: the momentum feeds M (a write's gain on (M, S) is ~6 at its
first step, 1.2-3.4 after), so on the Recall-D256 MAC core (chunk 32, max_lr 0.08, 8 writes
from the cue to the query, loss at the query) the writes' gains multiply to 700-1100 (median),
and gain_limit 1 leaves the cue's write 0.03-0.06x of its exact gradient (median; cosine
-0.01 to 0.67), 100 0.67-0.76x, 1000 1.0x. But on the LM (titans_mac, lm_peers, 100 steps)
1e4 gave 3.21 / 3.35 bits per byte and 1e3 3.29 against 3.09 / 3.13 at 1 (seeds 0 / 1;
exact: 4.02). In MAC the gradient also crossed chunks through the retrieved tokens
(M -> h -> attention -> y -> the next write's k, v), which this does not scale;
``retrieval_grad=false`` detaches them there (memory/titans.py). Where the exact gradient does
not grow the two agree (cosine 0.998-1.000 over all outer parameters, LMM, 256-1024
tokens, max_lr 0.05-0.1). ``TitansOptions`` still refuses max_lr * sqrt(chunk_size) > 0.5.

Departures from the paper:
- Reads inside a chunk (``read_within``, the default of the Titans cores): token t reads M_t,
  the memory after its chunk's tokens up to t, with every gradient taken at the chunk-start
  weights (the dual form of test-time training, Sun et al. 2024): a (b x b) causal mix of the
  chunk's gradient factors, so a step-by-step call computes the same numbers as a chunk at
  once. The paper reads M*_{t-1}, with gradients at the per-token weights. ``read`` reads the
  chunk-start weights (``intra_chunk_reads=false``).
- Per-token gradient clipping (the paper gives no guard; other ports hit NaNs at length 4k).
- No bias terms in the memory MLP; M_0 is a learned parameter per head.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnemo.memory.write_bound import BoundStateGrad, RecordOutputGrad, WriteBound, WriteChain

Weights = tuple[Tensor, ...]
"""Fast weights of the memory MLP, layer by layer, each (B, H, d_in, d_out)."""


class ChunkCoefs(NamedTuple):
    """eta, theta, alpha of a chunk folded into the closed form of its recurrence.

    Within a chunk, S_i = eta_i S_{i-1} + g_i U_i and W_i = (1 - alpha_i) W_{i-1} + S_i
    (U_i the gradient, g_i = -theta_i times its clip) give, after each token t,
    W_t = keep_t W_0 + w_from_s0_t S_0 + sum_{j <= t} w_acc_tj g_j U_j and, at the chunk's end,
    S_b = eta_all S_0 + sum_j s_acc_j g_j U_j.
    """

    theta: Tensor  # (..., H, b)
    w_acc: Tensor  # (..., H, b, b), lower triangular
    s_acc: Tensor  # (..., H, b)
    w_from_s0: Tensor  # (..., H, b)
    keep: Tensor  # (..., H, b)
    eta_all: Tensor  # (..., H)


class TokenGrads(NamedTuple):
    """Each token's inner gradient at the chunk-start weights, as factors: layer l's gradient
    of token j is the outer product hs[l]_j dzs[l]_j, and it enters the update times g_j."""

    hs: Weights  # per layer (..., H, b, d_in): the layer's inputs
    dzs: Weights  # per layer (..., H, b, d_out): the loss's gradient at the layer's outputs
    g: Tensor  # (..., H, b): -theta_j times token j's clip factor


def _l2norm(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1, eps=1e-6)


class NeuralMemory(nn.Module):
    """Titans' LMM: projections, gates and the functional fast-weight MLP.

    The module holds only outer (slow) parameters; fast weights, momentum and convolution
    tails are passed in and out, so a core can keep them in its state.

    Args:
        d_model: width of inputs and of retrieved outputs.
        n_heads: independent memories of width ``d_model // n_heads``.
        mem_depth: layers of the memory MLP (>= 1).
        mem_expand: hidden width of the memory MLP as a multiple of the head width.
        conv_kernel: width of the causal depthwise convolution (1 = none).
        max_lr: upper bound of the inner learning rate theta.
        max_grad_norm: per-token clip of the inner gradient's norm.
        bounded_backward: scale the gradient through each write (``write``); False gives the
            exact gradient (``write_exact``).
        gain_limit: most the bounded gradient may grow through a chain of writes
            (``WriteChain``); 1: no write grows it.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int = 1,
        mem_depth: int = 2,
        mem_expand: int = 2,
        conv_kernel: int = 4,
        max_lr: float = 0.1,
        max_grad_norm: float = 1.0,
        bounded_backward: bool = True,
        gain_limit: float = 1.0,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        if mem_depth < 1 or conv_kernel < 1 or mem_expand < 1:
            raise ValueError("mem_depth, mem_expand and conv_kernel must be >= 1")
        self.d_model, self.n_heads = d_model, n_heads
        self.d_head = dh = d_model // n_heads
        self.max_lr, self.max_grad_norm = max_lr, max_grad_norm
        self.bounded_backward, self.gain_limit = bounded_backward, gain_limit
        dims = [dh] + [dh * mem_expand] * (mem_depth - 1) + [dh]
        self.init_weights = nn.ParameterList(
            nn.Parameter(torch.randn(n_heads, i, o) / math.sqrt(i))
            for i, o in itertools.pairwise(dims)
        )
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        # Depthwise causal convolutions start as the identity (last tap 1) so that an untrained
        # memory sees the plain projections.
        self.conv_kernel = conv_kernel
        q_conv, kv_conv = torch.zeros(d_model, conv_kernel), torch.zeros(2 * d_model, conv_kernel)
        q_conv[:, -1] = kv_conv[:, -1] = 1.0
        self.q_conv, self.kv_conv = nn.Parameter(q_conv), nn.Parameter(kv_conv)
        # eta, theta, alpha logits per head; biases start with momentum ~0.9, theta at half of
        # max_lr and slow forgetting (alpha ~ 0.007).
        self.gate_proj = nn.Linear(d_model, 3 * n_heads)
        with torch.no_grad():
            self.gate_proj.weight.mul_(0.1)
            self.gate_proj.bias.copy_(torch.tensor([2.0, 0.0, -5.0]).repeat_interleave(n_heads))
        self.out_norm = nn.RMSNorm(d_model)

    # ----- state pieces ------------------------------------------------------------------
    def fresh_weights(self, batch_size: int) -> tuple[Weights, Weights]:
        """M_0 and zero momentum for ``batch_size`` rows (detached copies)."""
        w = tuple(p.detach().expand(batch_size, *p.shape).clone() for p in self.init_weights)
        return w, tuple(torch.zeros_like(t) for t in w)

    def fresh_tail(self, batch_size: int, channels: int, device: torch.device | str) -> Tensor:
        """Zero convolution context (B, conv_kernel - 1, channels)."""
        return torch.zeros(batch_size, self.conv_kernel - 1, channels, device=device)

    def reset(self, mask: Tensor, weights: Weights, momentum: Weights) -> tuple[Weights, Weights]:
        """Rows where ``mask`` (B,) is True get M_0 (with gradient to it) and zero momentum."""
        m = mask[:, None, None, None]
        w = tuple(torch.where(m, p, t) for p, t in zip(self.init_weights, weights))
        s = tuple(torch.where(m, 0.0, t) for t in momentum)
        return w, s

    # ----- inputs ------------------------------------------------------------------------
    def _heads(self, x: Tensor) -> Tensor:
        """(B, n, D) -> (B, n, H, Dh)."""
        return x.unflatten(-1, (self.n_heads, self.d_head))

    def queries(
        self, x: Tensor, tail: Tensor, ep: Tensor | None = None, ep_tail: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(B, n, D) inputs -> queries (B, n, H, Dh) and [tail | projections] (B, K-1+n, D).

        ``ep``/``ep_tail`` (episode index per position) keep the convolution inside episodes.
        """
        q, full = causal_conv(self.q_proj(x), tail, self.q_conv, ep, ep_tail)
        return _l2norm(self._heads(F.silu(q))), full

    def keys_values(
        self, x: Tensor, tail: Tensor, ep: Tensor | None = None, ep_tail: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(B, n, D) inputs -> keys, values (B, n, H, Dh) and [tail | projections]."""
        kv, full = causal_conv(self.kv_proj(x), tail, self.kv_conv, ep, ep_tail)
        k, v = F.silu(kv).chunk(2, dim=-1)
        return _l2norm(self._heads(k)), self._heads(v), full

    def coefficients(self, gate_in: Tensor) -> ChunkCoefs:
        """Data-dependent eta, theta, alpha of chunks, folded into the chunk recurrence.

        Args:
            gate_in: (..., b, D) the tokens of one chunk (or of (B, N) chunks at once).
        """
        logits = self.gate_proj(gate_in).unflatten(-1, (3, self.n_heads))  # (..., b, 3, H)
        logits = logits.movedim(-2, 0).transpose(-1, -2)  # (3, ..., H, b)
        log_eta = F.logsigmoid(logits[0])
        log_keep = F.logsigmoid(-logits[2])  # log(1 - alpha)
        b = gate_in.shape[-2]
        le, lk = torch.cumsum(log_eta, -1), torch.cumsum(log_keep, -1)
        tri = torch.ones(b, b, dtype=torch.bool, device=gate_in.device).tril()

        def lower(log_ratio: Tensor) -> Tensor:  # exp of [i, j] entries with j <= i, else 0
            return torch.exp(log_ratio.masked_fill(~tri, -math.inf))

        # a[i, j] = prod_{j < l <= i} eta_l: how much of token j's surprise is left at i.
        a = lower(le[..., :, None] - le[..., None, :])
        gamma = lower(lk[..., :, None] - lk[..., None, :])  # [t, i] = prod_{i < l <= t} (1-alpha_l)
        eta_prod = torch.exp(le)  # prod_{l <= i} eta_l
        return ChunkCoefs(
            theta=self.max_lr * torch.sigmoid(logits[1]),
            w_acc=gamma @ a,
            s_acc=a[..., -1, :],
            w_from_s0=(gamma @ eta_prod[..., None])[..., 0],
            keep=torch.exp(lk),
            eta_all=eta_prod[..., -1],
        )

    # ----- the memory itself -------------------------------------------------------------
    def read(self, weights: Weights, q: Tensor) -> Tensor:
        """M*(q): queries (..., H, n, Dh) -> (..., n, D), heads merged and RMS-normalised.

        ``weights`` may carry the same leading dims as ``q`` (e.g. one set per chunk).
        """
        h = _mlp(weights, q).transpose(-2, -3)  # (..., n, H, Dh)
        return self.out_norm(h.reshape(*h.shape[:-2], self.d_model))

    def retrieval_loss(self, weights: Weights, k: Tensor, v: Tensor) -> Tensor:
        """||M(k_t) - v_t||^2 per token, summed over heads: k, v (B, H, b, Dh) -> (B, b).

        The loss ``write`` learns from, at the same weights (for people to look at).
        """
        return (_mlp(weights, k) - v).square().sum((-1, 1))

    def token_grads(self, weights: Weights, k: Tensor, v: Tensor, c: ChunkCoefs) -> TokenGrads:
        """Each token's clipped inner gradient of ||M(k) - v||^2 at the chunk-start ``weights``.

        A forward and manual backward pass of the MLP: k, v (..., H, b, Dh).
        """
        hs, zs = [k], []
        for i, w in enumerate(weights):
            zs.append(hs[-1] @ w)
            if i < len(weights) - 1:
                hs.append(F.silu(zs[-1]))
        dzs: list[Tensor] = [2.0 * (zs[-1] - v)]
        for i in range(len(weights) - 1, 0, -1):
            s = torch.sigmoid(zs[i - 1])
            dh = dzs[0] @ weights[i].transpose(-1, -2)
            dzs.insert(0, dh * s * (1.0 + zs[i - 1] * (1.0 - s)))
        # ||h^T dz||_F = ||h|| ||dz||: per-token gradient norms without outer products.
        sq = sum(h.square().sum(-1) * dz.square().sum(-1) for h, dz in zip(hs, dzs))
        clip = (self.max_grad_norm / torch.sqrt(sq + 1e-12)).clamp(max=1.0)
        return TokenGrads(tuple(hs), tuple(dzs), -c.theta * clip)

    def write(
        self,
        weights: Weights,
        momentum: Weights,
        k: Tensor,
        v: Tensor,
        c: ChunkCoefs,
        chain: WriteChain | None = None,
    ) -> tuple[Weights, Weights]:
        """``write_exact``, with a backward pass whose growth through consecutive writes is
        bounded (``BoundStateGrad``) when autograd records it. ``chain``: the growth budget
        the writes of one pass share, in order (one per call if not given)."""
        n, state = len(weights), (*weights, *momentum)
        recorded = torch.is_grad_enabled() and any(t.requires_grad for t in state)
        if not (self.bounded_backward and recorded):
            return self.write_exact(weights, momentum, k, v, c)
        bound = WriteBound(chain if chain is not None else WriteChain(), self.gain_limit)
        state = BoundStateGrad.apply(bound, *state)
        new_w, new_s = self.write_exact(tuple(state[:n]), tuple(state[n:]), k, v, c)
        out = RecordOutputGrad.apply(bound, *new_w, *new_s)
        return tuple(out[:n]), tuple(out[n:])

    def write_exact(
        self,
        weights: Weights,
        momentum: Weights,
        k: Tensor,
        v: Tensor,
        c: ChunkCoefs,
        grads: TokenGrads | None = None,
    ) -> tuple[Weights, Weights]:
        """One chunk of test-time learning, gradients at the chunk-start ``weights``.

        Args:
            weights, momentum: M_{t'} and S_{t'}, each layer (B, H, d_in, d_out).
            k, v: (B, H, b, Dh) keys and values of the chunk's b tokens.
            c: the chunk's coefficients (``coefficients``), fields (B, H, b, ...) or (B, H).
            grads: ``token_grads(weights, k, v, c)`` if already computed.

        Returns:
            M and S after the chunk's last token.
        """
        gr = grads if grads is not None else self.token_grads(weights, k, v, c)
        w_coef, s_coef = (c.w_acc[..., -1, :] * gr.g)[..., None], (c.s_acc * gr.g)[..., None]
        keep, w_s0 = c.keep[..., -1, None, None], c.w_from_s0[..., -1, None, None]
        eta = c.eta_all[..., None, None]
        new_w, new_s = [], []
        for w, s0, h, dz in zip(weights, momentum, gr.hs, gr.dzs):
            new_w.append(keep * w + w_s0 * s0 + (h * w_coef).transpose(-1, -2) @ dz)
            new_s.append(eta * s0 + (h * s_coef).transpose(-1, -2) @ dz)
        return tuple(new_w), tuple(new_s)

    def read_within(
        self, weights: Weights, momentum: Weights, grads: TokenGrads, c: ChunkCoefs, q: Tensor
    ) -> Tensor:
        """Token t reads M_t(q_t), the memory after its chunk's tokens up to t (dual form).

        M_t = keep_t W_0 + w_from_s0_t S_0 + sum_{j <= t} w_acc_tj g_j h_j dz_j^T layer by
        layer, so x M_t = keep_t x W_0 + w_from_s0_t x S_0 + sum_j (w_acc_tj g_j x.h_j) dz_j:
        a causal (b x b) attention over the chunk's gradient factors, never forming M_t.
        Causal, and the same numbers whether the chunk arrives at once or token by token.

        Args:
            weights, momentum: chunk-start M and S, each layer (..., H, d_in, d_out).
            grads: ``token_grads`` of the chunk at ``weights``.
            c: the chunk's coefficients.
            q: (..., H, b, Dh) queries.

        Returns:
            (..., b, D), heads merged and RMS-normalised like ``read``.
        """
        x = q
        mix = c.w_acc * grads.g[..., None, :]  # (..., H, b, b)
        last = len(weights) - 1
        for i, (w, s0, h, dz) in enumerate(zip(weights, momentum, grads.hs, grads.dzs)):
            base = c.keep[..., None] * (x @ w) + c.w_from_s0[..., None] * (x @ s0)
            x = base + ((x @ h.transpose(-1, -2)) * mix) @ dz
            if i < last:
                x = F.silu(x)
        h_out = x.transpose(-2, -3)  # (..., b, H, Dh)
        return self.out_norm(h_out.reshape(*h_out.shape[:-2], self.d_model))


def _mlp(weights: Weights, x: Tensor) -> Tensor:
    """The memory MLP: (..., H, n, Dh) through SiLU layers (none after the last)."""
    h = x
    for i, w in enumerate(weights):
        h = h @ w  # (..., H, n, d_out)
        if i < len(weights) - 1:
            h = F.silu(h)
    return h


def causal_conv(
    pre: Tensor,
    tail: Tensor,
    weight: Tensor,
    ep: Tensor | None = None,
    ep_tail: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Causal depthwise convolution of (B, n, C) given the (B, K-1, C) inputs before it.

    Written as K shifted products (faster than conv1d for these sizes on CPU). With ``ep``
    (B, n) and ``ep_tail`` (B, K-1), an input counts only if it has the output's episode.

    Returns:
        Outputs (B, n, C) and ``[tail | pre]`` (B, K-1+n, C), whose slices are later tails.
    """
    n, k = pre.shape[1], weight.shape[1]
    full = torch.cat([tail, pre], dim=1)
    if ep is not None:
        ep_full = torch.cat([ep_tail, ep], dim=1)
    out = pre * weight[:, -1]
    for j in range(k - 1):
        xs = full[:, j : j + n]
        if ep is not None:
            xs = xs * (ep_full[:, j : j + n] == ep)[..., None]
        out = out + xs * weight[:, j]
    return out, full
