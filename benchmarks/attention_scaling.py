"""How the cost of a training call of gtrxl and compressive grows with the segment length.

Every query of these cores attends to a fixed window (its memory and its own recent past), so
at fixed memory a call over T steps should cost O(T): 4x the segment, ~4x the time. One call
over T steps (the training / language-model path), forward + backward, one torch thread by
default, for T = 512 and 2048; the last column is the time ratio against the first length.

    python benchmarks/attention_scaling.py [--lengths 512 2048] [--cores gtrxl compressive]
    python benchmarks/attention_scaling.py --compression most_used
    python benchmarks/attention_scaling.py --quick     # a smoke run: T = 64, 256 at width 16

Last measured (defaults: batch 2, d_model 64, 2 layers, memory 64 / n_mem 32 + n_cmem 32 at
c = 4; 2 shared CPU cores under load, so two interleaved runs each; ms per call, then x time):

| core | before: T=512 | T=2048 | x time | blockwise: T=512 | T=2048 | x time |
|---|---|---|---|---|---|---|
| gtrxl | 142-184 | 3,582-5,819 | 25-32 | 99-127 | 355-434 | 3.4-3.6 |
| compressive (conv) | 609-874 | 14,580-19,014 | 22-24 | 205-214 | 851-853 | 4.0-4.2 |
| compressive (most_used) | 424-444 | 16,676-17,758 | 38-42 | 177-211 | 594-882 | 3.4-4.2 |

Before: dense attention over [memory | whole segment] (commit 3b6221a); blockwise: blocks of
64 queries, each against its window (``memory.blockwise``). Rerun on 2026-11-30 (defaults, one
other job on the 2 cores): gtrxl 31.8 -> 106.8 ms (3.36x), compressive 25.4 -> 90.7 ms (3.57x);
the later attention work (memory/bias_attention.py) made each call 3-8x faster at the same ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from mnemo import memory


def memory_options(core: str, args: argparse.Namespace) -> dict:
    """The fixed-memory options of ``core`` (the segment length is what varies)."""
    if core == "compressive":
        return {
            "n_mem": args.mem,
            "n_cmem": args.cmem,
            "compression_rate": args.rate,
            "compression": args.compression,
        }
    return {"mem_len": args.mem}


def time_call(core: memory.MemoryCore, batch: int, length: int, d: int, reps: int) -> float:
    """Median seconds of one forward + backward call over ``length`` steps (after a warm-up)."""
    starts = torch.zeros(batch, length, dtype=torch.bool)
    starts[:, 0] = True
    x = torch.randn(batch, length, d, requires_grad=True)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        out = core(x, core.initial_state(batch, "cpu"), starts)
        (out.y.square().mean() + out.aux_loss).backward()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def print_header(args: argparse.Namespace) -> None:
    settings = (
        f"batch {args.batch}, d_model {args.d_model}, {args.n_layers} layers, memory {args.mem}, "
        f"n_cmem {args.cmem}, rate {args.rate} ({args.compression}), {args.threads} thread(s)"
    )
    columns = f"{'core':<14}{'T':>7}{'ms/call':>10}{'us/step':>10}{'x time':>8}"
    print(f"{settings}; forward + backward\n{columns}\n{'-' * len(columns)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", nargs="+", default=["gtrxl", "compressive"])
    p.add_argument("--lengths", nargs="+", type=int, default=[512, 2048])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--mem", type=int, default=64, help="mem_len (gtrxl) / n_mem (compressive)")
    p.add_argument("--cmem", type=int, default=32, help="n_cmem (compressive)")
    p.add_argument("--rate", type=int, default=4, help="compression_rate (compressive)")
    p.add_argument("--compression", default="conv", help="compression (compressive)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="T = 64, 256, width 16: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.lengths, args.d_model, args.mem, args.cmem, args.reps = [64, 256], 16, 16, 8, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print_header(args)
    for name in args.cores:
        core = memory.make_core(
            name, args.d_model, n_layers=args.n_layers, **memory_options(name, args)
        )
        first = None
        for t in args.lengths:
            sec = time_call(core, args.batch, t, args.d_model, args.reps)
            first = first or sec
            print(
                f"{name:<14}{t:>7}{sec * 1e3:>10.1f}{sec / (t * args.batch) * 1e6:>10.1f}"
                f"{sec / first:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
