"""Speed of every registered memory core: acting latency and training throughput vs memory size.

For each core (``memory.core_names()``) and each memory size (64 / 256 / 1024 by default), one
line: the latency of one acting step (T=1, no grad, memory already full) for batch 1 and the
env-steps/s of an acting step for a batch of envs, then the tokens/s of a training step
(forward + backward over a segment). The size knob is the first of ``SIZE_KNOBS`` the core
accepts (``mem_len`` for trxl/gtrxl, ``n_mem`` for compressive, ...); cores with none get one row.

    python benchmarks/cores.py            # full table
    python benchmarks/cores.py --quick    # tiny sizes, few repeats (a smoke run)
    python benchmarks/cores.py --cores trxl gtrxl --device cuda
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from mnemo import memory
from mnemo.memory.base import tree_map

SIZE_KNOBS = ("mem_len", "n_mem", "window", "memory_size")
"""Option names taken as a core's memory size, in order of preference."""


def timeit(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    """Median wall seconds of ``fn`` over ``reps`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def warm_state(core: memory.MemoryCore, batch: int, steps: int, device: torch.device):
    """A state whose memory is full: one no-grad pass over ``steps`` random inputs."""
    x = torch.randn(batch, steps, core.d_model, device=device)
    starts = torch.zeros(batch, steps, dtype=torch.bool, device=device)
    starts[:, 0] = True
    with torch.no_grad():
        return core(x, core.initial_state(batch, device), starts).state


def bench(name: str, opts: dict, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    core = memory.make_core(name, args.d_model, **opts).to(device)
    size = next((v for k, v in opts.items() if k in SIZE_KNOBS), 0) or 64
    row: dict = {"params": sum(p.numel() for p in core.parameters())}
    for batch, key in ((1, "act_ms"), (args.act_batch, "act_sps")):
        state = warm_state(core, batch, size + 8, device)
        x = torch.randn(batch, 1, core.d_model, device=device)
        no_start = torch.zeros(batch, 1, dtype=torch.bool, device=device)

        def step(state=state, x=x, no_start=no_start) -> None:
            with torch.no_grad():
                core(x, state, no_start)

        sec = timeit(step, args.reps, device)
        row[key] = sec * 1e3 if key == "act_ms" else batch / sec
    b, t = args.train_batch, args.segment
    state = warm_state(core, b, size + 8, device)
    x = torch.randn(b, t, core.d_model, device=device)
    starts = torch.zeros(b, t, dtype=torch.bool, device=device)

    def train_step() -> None:
        out = core(x, tree_map(lambda s: s.detach(), state), starts)
        (out.y.square().mean() + out.aux_loss).backward()

    row["train_tps"] = b * t / timeit(train_step, max(1, args.reps // 10), device)
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sizes 16/64, tiny batches, 3 repeats")
    p.add_argument("--cores", nargs="*", default=None, help="default: every registered core")
    p.add_argument("--sizes", nargs="*", type=int, default=None, help="default 64 256 1024")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--act-batch", type=int, default=64, help="envs in the batched acting column")
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--segment", type=int, default=128, help="training segment length T")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = args.sizes or ([16, 64] if args.quick else [64, 256, 1024])
    args.reps = args.reps or (3 if args.quick else 50)
    if args.quick:
        args.segment, args.act_batch, args.train_batch = 32, 8, 4
    device = torch.device(args.device)
    names = args.cores or memory.core_names()
    print(
        f"d_model={args.d_model}  device={device}  threads={args.threads}  "
        f"train: batch {args.train_batch} x T={args.segment}"
    )
    head = (
        f"{'core':<14}{'size knob':<16}{'params':>9}{'act ms (B=1)':>14}"
        f"{f'act steps/s (B={args.act_batch})':>24}{'train tokens/s':>16}"
    )
    print(head)
    print("-" * len(head))
    failed: list[str] = []
    for name in names:
        options = memory.core_options(name)
        knob = next((k for k in SIZE_KNOBS if k in options), None)
        for size in sizes if knob else [None]:
            opts = {knob: size} if knob else {}
            label = f"{knob}={size}" if knob else "-"
            try:
                r = bench(name, opts, args, device)
            except memory.CoreConfigError as e:  # a size this core does not take: say so
                print(f"{name:<14}{label:<16}  skipped: {e}")
                continue
            except Exception as e:  # a broken core: say so, keep going, fail at the end
                failed.append(f"{name} {label}")
                print(f"{name:<14}{label:<16}  failed: {type(e).__name__}: {e}")
                continue
            print(
                f"{name:<14}{label:<16}{r['params']:>9,}{r['act_ms']:>14.3f}"
                f"{r['act_sps']:>24,.0f}{r['train_tps']:>16,.0f}",
                flush=True,
            )
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
