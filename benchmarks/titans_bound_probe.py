"""How much the bounded backward of the Titans memory shrinks the gradient an RL cue needs.

Builds the core of an RL config (default configs/recall_d256_titans_mac.yaml), feeds one
episode of random inputs (258 steps: 8 full chunks of 32 before the last step's chunk), puts a
loss on the last step's output only, and compares, per batch row, the gradient reaching the
first write's k, v (the cue's write) and the first chunk's inputs with ``bounded_backward``
on and off (same weights, same inputs): norm ratio bounded / exact and cosine. It also prints
the exact gradient's growth through each write: the norm of the gradient the write passes
to its chunk-start (M, S) over the norm at its outputs (the write's Jacobian gain).

    python benchmarks/titans_bound_probe.py [--config PATH] [--max-lr 0.08 0.1] [--seeds 0 1 2]
    python benchmarks/titans_bound_probe.py --lm --max-lr 0.05 0.1 0.25 0.5   # LM table

``--gain-limit`` (default 1 100 1000): the bounded runs' ``backward_gain_limit``.

``--theta-bias B`` sets the theta gate's bias (0 at initialisation: theta = max_lr / 2; 5:
theta ~ max_lr, where trained gates can go). max_lr above the options' limit is set on the
module, as the tests do.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from typing import Any

import torch
from torch import Tensor

from mnemo import memory
from mnemo.agents.rl.config import load_rl_config
from mnemo.memory.neural_memory import NeuralMemory


class _Tap(torch.autograd.Function):
    """Identity; backward appends the gradient's per-row norm to ``log``."""

    @staticmethod
    def forward(ctx: Any, log: list[Tensor], *ts: Tensor) -> tuple[Tensor, ...]:
        ctx.log = log
        return tuple(t.view_as(t) for t in ts)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        ctx.log.append(torch.sqrt(sum(g.flatten(1).square().sum(1) for g in grads)))
        return (None, *grads)


class WriteProbe:
    """Wraps one ``NeuralMemory.write``: keeps the first write's k, v and logs, per write,
    the gradient norms at its chunk-start (M, S) (through the write only) and at its outputs."""

    def __init__(self, mem: NeuralMemory) -> None:
        self.mem, self.inner = mem, mem.write
        self.kv: tuple[Tensor, Tensor] | None = None
        self.into: list[list[Tensor]] = []
        self.out: list[list[Tensor]] = []
        mem.write = self  # type: ignore[method-assign]

    def __call__(self, weights: Any, momentum: Any, k: Tensor, v: Tensor, *rest: Any) -> Any:
        n = len(weights)
        if self.kv is None:
            k.retain_grad()
            v.retain_grad()
            self.kv = (k, v)
        into: list[Tensor] = []
        out: list[Tensor] = []
        self.into.append(into)
        self.out.append(out)
        state = _Tap.apply(into, *weights, *momentum)
        w, s = self.inner(tuple(state[:n]), tuple(state[n:]), k, v, *rest)
        res = _Tap.apply(out, *w, *s)
        return tuple(res[:n]), tuple(res[n:])


def run_once(
    core: memory.MemoryCore, x: Tensor, target: Tensor, bounded: bool, gain_limit: float = 1.0
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Gradient at the first write's (k, v) and at the first chunk's inputs, per row, and the
    per-write gain of the gradient (list over writes, each (B,))."""
    mem = core.layers[0].mem
    mem.bounded_backward, mem.gain_limit = bounded, gain_limit
    probe = WriteProbe(mem)
    try:
        xr = x.clone().requires_grad_()
        starts = torch.zeros(x.shape[:2], dtype=torch.bool)
        starts[:, 0] = True
        out = core(xr, core.initial_state(x.shape[0], "cpu"), starts)
        (out.y[:, -1] * target).sum().backward()
    finally:
        del mem.write
    assert probe.kv is not None
    k, v = probe.kv
    kv_grad = torch.cat([k.grad.flatten(1), v.grad.flatten(1)], 1)
    chunk = core.layers[0].chunk
    gains = [i[0] / o[0].clamp(min=1e-30) for i, o in zip(probe.into, probe.out) if i and o]
    return kv_grad, xr.grad[:, :chunk].flatten(1), gains


def compare(
    cfg_path: str, max_lr: float, seed: int, rows: int, theta_bias: float, gain_limit: float
) -> dict:
    cfg = load_rl_config(cfg_path, [])
    torch.manual_seed(seed)
    core = memory.make_core(cfg.core.name, cfg.core.d_model, **cfg.core.options)
    for layer in core.layers:
        layer.mem.max_lr = max_lr
        h = layer.mem.n_heads
        with torch.no_grad():
            layer.mem.gate_proj.bias[h : 2 * h] = theta_bias
    length = cfg.ppo.bptt_len
    x = torch.randn(rows, length, cfg.core.d_model)
    target = torch.randn(rows, cfg.core.d_model)
    kv_e, x_e, gains = run_once(core, x, target, bounded=False)
    kv_b, x_b, _ = run_once(core, x, target, bounded=True, gain_limit=gain_limit)

    def ratio_cos(b: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        return b.norm(dim=1) / e.norm(dim=1), torch.cosine_similarity(b, e, dim=1)

    kv_r, kv_c = ratio_cos(kv_b, kv_e)
    x_r, x_c = ratio_cos(x_b, x_e)
    g = torch.stack(gains)  # (writes, B), last write first in backward order: reorder
    return {
        "kv_exact": kv_e.norm(dim=1),
        "kv_ratio": kv_r,
        "kv_cos": kv_c,
        "x_ratio": x_r,
        "x_cos": x_c,
        "gain": g.flip(0),  # forward order: write 0 first
    }


def lm_first_chunk_grad(
    chunk: int, max_lr: float, bounded: bool, length: int, gain_limit: float = 1.0
) -> tuple:
    """The docstring's LM probe (memory/neural_memory.py): titans_lmm, d_model 16, inputs
    x20, loss on the last chunk; norms of the gradient at the first and last chunk's inputs."""
    torch.manual_seed(0)
    opts = {"chunk_size": chunk, "bounded_backward": bounded, "max_lr": 0.01}
    if bounded:
        opts["backward_gain_limit"] = gain_limit
    core = memory.make_core("titans_lmm", 16, **opts)
    core.layers[0].mem.max_lr = max_lr  # on the module: the options refuse what diverges
    x = (20.0 * torch.randn(1, length, 16)).requires_grad_()
    out = core(x, core.initial_state(1, "cpu"), torch.zeros(1, length, dtype=torch.bool))
    out.y[:, -chunk:].square().mean().backward()
    return x.grad[0, :chunk].norm().item(), x.grad[0, -chunk:].norm().item()


def lm_table(lrs: list[float], chunks: list[int], length: int, gain_limit: float) -> None:
    print(
        f"LM probe, {length} tokens: |grad| at the first chunk, bounded (gain limit "
        f"{gain_limit:g}) (exact); last chunk"
    )
    print("max_lr".ljust(9) + "".join(f"{lr:<24g}" for lr in lrs))
    for chunk in chunks:
        row = f"chunk {chunk:<3d}"
        for lr in lrs:
            b, last = lm_first_chunk_grad(chunk, lr, True, length, gain_limit)
            e, _ = lm_first_chunk_grad(chunk, lr, False, length)
            row += f"{b:.2g} ({e:.2g}); {last:.2g}".ljust(24)
        print(row, flush=True)


def fmt(t: Tensor) -> str:
    vals = t.flatten().tolist()
    return f"{statistics.median(vals):.3g} [{min(vals):.3g}, {max(vals):.3g}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/recall_d256_titans_mac.yaml")
    ap.add_argument("--max-lr", type=float, nargs="+", default=[0.08, 0.1])
    ap.add_argument("--theta-bias", type=float, nargs="+", default=[0.0, 5.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--gain-limit", type=float, nargs="+", default=[1.0, 100.0, 1000.0])
    ap.add_argument("--lm", action="store_true", help="the LM probe's table instead")
    ap.add_argument("--chunks", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--quick", action="store_true", help="one setting and seed (a smoke run)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.max_lr, args.theta_bias, args.seeds, args.rows = [0.08], [0.0], [0], 2
        args.gain_limit, args.chunks, args.length = [1.0, 1000.0], [8], 256
    if args.lm:
        for g in args.gain_limit:
            lm_table(args.max_lr, args.chunks, args.length, g)
        return
    print("median [min, max] over seeds x rows; ratio = bounded / exact")
    for lr, tb, g in itertools.product(args.max_lr, args.theta_bias, args.gain_limit):
        res = [compare(args.config, lr, s, args.rows, tb, g) for s in args.seeds]
        cat = {k: torch.cat([r[k] for r in res], -1) for k in res[0]}
        print(
            f"max_lr {lr:g} theta_bias {tb:g} gain_limit {g:g}: first write k,v: exact |g| "
            f"{fmt(cat['kv_exact'])} ratio {fmt(cat['kv_ratio'])} cos {fmt(cat['kv_cos'])}; "
            f"first chunk x: ratio {fmt(cat['x_ratio'])} cos {fmt(cat['x_cos'])}"
        )
        per_write = " ".join(f"{v:.2f}" for v in cat["gain"].median(1).values.tolist())
        print(
            f"    exact gain per write (median, write 0 first): {per_write}; "
            f"product {fmt(cat['gain'].prod(0))}"
        )


if __name__ == "__main__":
    main()
