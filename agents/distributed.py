"""Data-parallel PPO over processes: ``torchrun --nproc_per_node K -m agents.cli train CFG``.

Each rank steps its own envs (seed ``seed + rank``, device ``cuda:LOCAL_RANK`` on GPUs), starts
from rank 0's weights, and averages gradients with one all-reduce after every backward, so all
ranks take identical optimizer steps and their parameters stay identical. Rank 0 alone writes
the run folder (TensorBoard events, checkpoints). Backend: nccl on cuda, gloo on CPU.

Without torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op, so the
single-process path pays nothing.
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mnemo.agents.errors import UserError

__all__ = [
    "NullWriter",
    "all_reduce_grads",
    "any_rank",
    "barrier",
    "broadcast_params",
    "gather_to_main",
    "is_main",
    "rank",
    "rank_max",
    "rank_mean",
    "setup",
    "tb_writer",
    "world_size",
]


def world_size() -> int:
    """Number of data-parallel ranks (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on the rank that writes logs and checkpoints."""
    return rank() == 0


def init_from_env(device: str) -> str:
    """Join the process group torchrun describes in the environment; returns this rank's device.

    Args:
        device: the configured device (``cpu``, ``cuda`` or ``cuda:N``).

    Returns:
        ``device`` unchanged on CPU or outside torchrun, else ``cuda:LOCAL_RANK``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    on_cuda = device.startswith("cuda")
    if on_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPUs are visible; "
                "lower torchrun's --nproc_per_node"
            )
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if on_cuda else "gloo")
        atexit.register(_cleanup)
    return device


def _cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def setup(cfg: Any) -> Any:
    """``cfg`` for this rank: the device torchrun gives it, seed ``cfg.seed + rank``, and a
    progress bar on rank 0 only."""
    device = init_from_env(cfg.device)
    if world_size() == 1:
        return cfg
    run = dataclasses.replace(cfg.run, progress=cfg.run.progress and is_main())
    return dataclasses.replace(cfg, device=device, seed=cfg.seed + rank(), run=run)


def broadcast_params(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (a no-op on one rank)."""
    if world_size() == 1:
        return
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def all_reduce_grads(model: nn.Module) -> None:
    """Average gradients over ranks in one flat all-reduce (call after ``backward``).

    A parameter without a gradient counts as a zero gradient, so every rank sees the same
    set of gradients; for a parameter no rank uses, Adam's update stays exactly zero.
    """
    n = world_size()
    if n == 1:
        return
    params = list(model.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= n
    offset = 0
    for p in params:
        k = p.numel()
        p.grad = flat[offset : offset + k].view_as(p)
        offset += k


def rank_mean(x: float) -> float:
    """Mean of ``x`` over the ranks that have a number (NaN where none has one).

    Every rank gets the same answer, so decisions taken from it (early stopping) agree.
    """
    if world_size() == 1:
        return x
    finite = not math.isnan(x)
    t = torch.tensor([x if finite else 0.0, float(finite)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    total, count = t.tolist()
    return total / count if count else float("nan")


def rank_max(x: int) -> int:
    """The largest ``x`` over the ranks; every rank gets it, so decisions taken from it agree."""
    if world_size() == 1:
        return x
    t = torch.tensor([x], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank, so all ranks stop together."""
    return rank_max(int(flag)) > 0


def barrier() -> None:
    """Wait until every rank gets here (a no-op on one rank)."""
    if world_size() > 1:
        dist.barrier()


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the others); ``[obj]`` alone.

    A collective: every rank must call it at the same point. ``obj`` is pickled, so move its
    tensors to the CPU first (agents.checkpoint.to_cpu) rather than ship GPU handles.
    """
    if world_size() == 1:
        return [obj]
    out: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


class NullWriter:
    """Stands in for a SummaryWriter on ranks other than 0: every method does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def tb_writer(log_dir: str, **kwargs: Any) -> Any:
    """A TensorBoard SummaryWriter on rank 0, a ``NullWriter`` elsewhere."""
    if not is_main():
        return NullWriter()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir, **kwargs)
