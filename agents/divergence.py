"""Where training diverged: which weight, gradient or output holds a NaN or inf.

Both heads check before every optimizer step that the loss, the gradients and the weights are
finite, and before every checkpoint that the weights still give finite outputs, so a
checkpoint is never written that cannot be resumed. The checks here cost one host sync each;
the names (the slow part) are looked up only once a check has failed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mnemo.agents import distributed
from mnemo.agents.errors import NonFiniteError

__all__ = [
    "check_before_step",
    "largest_weight",
    "named",
    "nonfinite_gradients",
    "nonfinite_parameters",
    "weights_finite",
]


def weights_finite(model: nn.Module) -> Tensor:
    """A bool scalar on the weights' device: every parameter finite (no host sync)."""
    params = [p.detach() for p in model.parameters()]
    if not params:
        return torch.ones((), dtype=torch.bool)
    # The inf-norm of each tensor (its largest |w|) is NaN or inf exactly when it is.
    return torch.isfinite(torch.stack(torch._foreach_norm(params, math.inf))).all()


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters holding a NaN or inf."""
    return [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


def nonfinite_gradients(model: nn.Module) -> list[str]:
    """Names of the parameters whose gradient holds a NaN or inf."""
    return [
        n
        for n, p in model.named_parameters()
        if p.grad is not None and not bool(torch.isfinite(p.grad).all())
    ]


def largest_weight(model: nn.Module) -> tuple[str, float]:
    """(name, value) of the parameter with the largest |w|: what a blow-up grew."""
    best = ("", 0.0)
    for n, p in model.named_parameters():
        m = float(p.detach().abs().max()) if p.numel() else 0.0
        if m > best[1]:
            best = (n, m)
    return best


def named(names: list[str], limit: int = 3) -> str:
    """``a, b, c (+2 more)``; on a run whose own ones are all finite, another rank's."""
    if not names:
        return "on another rank" if distributed.world_size() > 1 else "unknown"
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def check_before_step(model: nn.Module, grad_norm: Tensor, where: str) -> None:
    """Raise ``NonFiniteError`` (naming the parameters) if the gradient norm or a weight is
    NaN or inf; one host sync. Gradients are all-reduced and weights are the same on every
    rank, so under torchrun all ranks stop together without asking each other."""
    ok = torch.stack([torch.isfinite(grad_norm), weights_finite(model).to(grad_norm.device)])
    grads_ok, weights_ok = ok.tolist()
    if not grads_ok:
        raise NonFiniteError(
            f"non-finite gradient (of {named(nonfinite_gradients(model))}) {where}"
        )
    if not weights_ok:
        raise NonFiniteError(f"non-finite weights ({named(nonfinite_parameters(model))}) {where}")
