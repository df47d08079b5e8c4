"""Per-token cost of the Titans cores as the sequence grows (it should stay flat).

One call over T tokens (the training / language-model path), forward only and forward +
backward, for T = 1k, 4k, 16k by default, plus acting one token at a time (T=1 calls).

    python benchmarks/titans_scaling.py [--lengths 1024 4096 16384] [--variants mac mag]
    python benchmarks/titans_scaling.py --quick     # a smoke run: T = 64, 256 at width 16
"""

from __future__ import annotations

import argparse
import time

import torch

from mnemo import memory


def time_call(core: memory.MemoryCore, batch: int, length: int, d: int, backward: bool) -> float:
    """Seconds for one call over ``length`` tokens (after a short warm-up call)."""
    starts = torch.zeros(batch, length, dtype=torch.bool)
    starts[:, 0] = True
    x = torch.randn(batch, length, d, requires_grad=backward)
    for t in (min(length, 64), length):  # warm-up, then the measured call
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = core(x[:, :t], core.initial_state(batch, "cpu"), starts[:, :t])
            if backward:
                out.y.square().mean().backward()
        elapsed = time.perf_counter() - t0
    return elapsed


def time_steps(core: memory.MemoryCore, batch: int, steps: int, d: int) -> float:
    """Seconds per T=1 call, averaged over ``steps`` calls."""
    state = core.initial_state(batch, "cpu")
    x = torch.randn(batch, 1, d)
    no_start = torch.zeros(batch, 1, dtype=torch.bool)
    with torch.no_grad():
        state = core(x, state, ~no_start).state
        t0 = time.perf_counter()
        for _ in range(steps):
            state = core(x, state, no_start).state
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["lmm", "mac", "mag", "mal"])
    p.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096, 16384])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-backward", action="store_true", help="skip forward+backward timing")
    p.add_argument("--quick", action="store_true", help="T = 64, 256, width 16: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.lengths, args.d_model, args.chunk_size, args.window = [64, 256], 16, 8, 8
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(
        f"batch {args.batch}, d_model {args.d_model}, chunk_size {args.chunk_size}, "
        f"window {args.window}, {args.threads} thread(s); microseconds per token"
    )
    header = f"{'core':<12}{'T':>7}{'fwd us/tok':>12}{'fwd+bwd us/tok':>16}{'act us/tok':>12}"
    print(header)
    print("-" * len(header))
    for v in args.variants:
        window = {"window": args.window} if v in ("mag", "mal") else {}  # MAC/LMM refuse it
        core = memory.make_core(f"titans_{v}", args.d_model, chunk_size=args.chunk_size, **window)
        act = time_steps(core, args.batch, 4 * args.chunk_size, args.d_model)
        for t in args.lengths:
            n_tok = t * args.batch
            fwd = time_call(core, args.batch, t, args.d_model, backward=False) / n_tok
            bwd = (
                float("nan")
                if args.no_backward
                else time_call(core, args.batch, t, args.d_model, backward=True) / n_tok
            )
            print(
                f"{'titans_' + v:<12}{t:>7}{fwd * 1e6:>12.1f}{bwd * 1e6:>16.1f}"
                f"{act / args.batch * 1e6:>12.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
