"""The bounded backward pass of the Titans memory's writes (``NeuralMemory.write``).

Two identity autograd functions sit around each write: ``RecordOutputGrad`` on its outputs
(M, S) notes the norm of the gradient arriving there, and ``BoundStateGrad`` on the chunk-start
(M, S) it reads scales the gradient passing through the write so that the writes of one pass,
sharing a ``WriteChain``, grow it at most ``gain_limit``-fold (memory/neural_memory.py's
docstring gives the measurements behind the rule).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class WriteChain:
    """The growth budget of consecutive writes, shared across their backward pass (per row).

    ``used`` is the gain the carried gradient has taken on since it last shrank: each write
    multiplies it by its own gain (norm of the gradient it passes to its chunk-start (M, S)
    over the norm at its outputs), never below 1, and a write's gain is scaled down where it
    would take ``used`` beyond the memory's ``gain_limit``. Writes run backward last to first,
    so the budget is spent from the loss backward: a chain that keeps growing is cut at
    gain_limit times its level, one that grows less is exact. At gain_limit 1 no write may
    grow the gradient at all (the rule before the budget: each write's (M, S) gradient at most
    the gradient at its output).
    """

    used: Tensor | None = None


class WriteBound:
    """What a write's two ends share: its chain, its limit and the per-row norm of its output
    gradient."""

    def __init__(self, chain: WriteChain, limit: float) -> None:
        self.chain, self.limit = chain, limit
        self.out_norm: Tensor | None = None


class WriteEnd(torch.autograd.Function):
    """Identity on tensors, holding the ``WriteBound`` it shares with the write's other end."""

    @staticmethod
    def forward(ctx: Any, bound: WriteBound, *ts: Tensor) -> tuple[Tensor, ...]:
        ctx.bound = bound
        return tuple(t.view_as(t) for t in ts)


class RecordOutputGrad(WriteEnd):
    """Identity on a write's outputs (M, S); backward notes the gradient's norm per row."""

    @staticmethod
    def backward(ctx: Any, *grad_out: Tensor) -> tuple[Tensor | None, ...]:
        ctx.bound.out_norm = row_norm(grad_out)
        return (None, *grad_out)


class BoundStateGrad(WriteEnd):
    """``NeuralMemory.write``'s backward bound, on the chunk-start (M, S) it reads.

    Per batch row, the gradient reaching (M, S) through the write is scaled down where its
    gain over the gradient at the write's output (``RecordOutputGrad``, whose backward runs
    first) would spend more than the chain's budget (``WriteChain``). Through many chunks the
    gradient carried by the memory then grows at most gain_limit-fold beyond what reaches the
    memory directly (it grew as the product of the chunks' Jacobians: ~1e9 at the first tokens
    of 4096 with max_lr 0.25, chunk 4); the gradients to k, v and the gates, and the forward
    pass, are exact. (Two identities around the plain write, instead of one function whose
    backward took a nested ``autograd.grad`` of the write: a titans_mac LM step ~2% faster,
    same numbers.)
    """

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        wanted = ctx.needs_input_grad[1:]
        bound, chain = ctx.bound, ctx.bound.chain
        if bound.out_norm is None:  # no gradient reached the write's outputs
            return (None, *(g if w else None for g, w in zip(grads, wanted)))
        through = row_norm([g for g, w in zip(grads, wanted) if w])
        used = chain.used
        if used is None or used.shape != through.shape:
            used = torch.ones_like(through)
        gain = through / bound.out_norm.clamp(min=1e-30)
        scale = (bound.limit / (used * gain).clamp(min=1e-30)).clamp(max=1.0)
        moved = through > 0
        chain.used = torch.where(moved, (used * gain * scale).clamp(min=1.0), used)
        return (
            None,
            *(
                g * scale.view(-1, *[1] * (g.dim() - 1)) if w else None
                for g, w in zip(grads, wanted)
            ),
        )


def row_norm(ts: Any) -> Tensor:
    """Norm per batch row (dim 0) over a group of tensors."""
    return torch.sqrt(sum(t.flatten(1).square().sum(1) for t in ts))
