"""Byte-level LM: mnemo's cores beside the public packages a user would otherwise pick.

mnemo's ``titans_mac``, ``compressive``, ``gtrxl`` and ``lstm`` (options from
configs/lm_<core>.yaml) train beside titans-pytorch's ``MemoryAsContextTransformer`` and
compressive-transformer-pytorch's ``CompressiveTransformer`` on the same text file, byte-level,
at matched parameter counts (each model's width is the one whose count is nearest mnemo
titans_mac's at ``--d-model``), with the same segments, batch, optimizer (mnemo's AdamW, warm-up
and cosine schedule, gradient clip 1.0) and steps. Steps are interleaved (step s of every model,
in an order that rotates, before step s + 1) so that machine noise hits all alike, on one torch
thread. Nothing downloads: the text is ``--data``, or this repository's own .md and .py files.

Reported per model: parameters, training bytes/s (forward, backward and optimizer step only),
training bits per byte over the last tenth of the steps, held-out bits per byte after the same
steps (the file's last 10%) read in independent windows of one segment ("window": every model
can do this) and with the memory carried from segment to segment ("carried": mnemo's cores and
the compressive port; titans-pytorch carries no memory between training calls), and the
training step's memory (weights, gradients, Adam's two moments and the tensors saved for
backward).

    python benchmarks/lm_peers.py --data book.txt                # all, 60 steps: ~3-6 min
    python benchmarks/lm_peers.py --models titans_mac titans-pytorch --steps 250
    python benchmarks/lm_peers.py --quick                        # seconds; peers if installed
    python benchmarks/lm_peers.py --models titans-pytorch --peer-set num_residual_streams=1
    python benchmarks/lm_peers.py --models titans_mac --train-fresh  # trained as the port is
    pip install titans-pytorch==0.5.5 compressive-transformer-pytorch==0.4.0 --no-deps
    # then each of their dependencies with --no-deps (the `bench` extra in pyproject.toml
    # lists them): pip must never pull its own torch build

Measured (``--data /usr/share/vim/vim90/doc/version7.txt --steps 100``: 675 kB of English
documentation, 8 x 256 bytes per step, AdamW 2e-3, 2-core CPU, one thread, other jobs running;
the Titans and compressive pairs on 2026-11-29, each pair in its own run with ``--models``,
gtrxl and lstm in an earlier run of all six):

  model                             params width bytes/s  train window carried     MB
  mnemo titans_mac                 391,832   112   6,857  3.250  3.088   3.048  165.5
  mnemo compressive                365,248    96  18,900  3.560  3.428   3.404   80.9
  mnemo gtrxl                      363,616    80  18,312  3.817  3.747   3.746   65.4
  mnemo lstm                       395,392   192  63,654  3.138  2.924   2.908   40.4
  titans-pytorch                   417,126    96   3,107  3.684  3.552       -  419.9
  compressive-transformer-pytorch  372,208    72   9,401  4.682  4.715   4.707   80.7

(titans-pytorch's bits per byte are not reproducible from run to run: 3.450, 3.628 and 3.552
in three runs of this protocol. mnemo compressive against its port, bytes/s: 1.98x to 2.06x
in six runs, median 2.01x; the port's rate moved between 8,935 and 9,988 over them.)

(train, window, carried: bits per byte; MB: the training step's memory.) At ``--steps 1000``
the order changes: titans-pytorch 1.564 window bits per byte against mnemo titans_mac's 1.796
(1.629 carried), while mnemo titans_mal (``--models titans_mal``, memory carried) reaches 1.426;
the README's LM section has that table and what was tried. Trained as the port is, every
segment from a fresh state (``--train-fresh``), titans_mac reaches 1.634 on windows; the port's
lead is its memory read added to the residual stream (its ``neural_mem_gate_attn_output=true``,
the read as a gate: 1.650) and its hyper-connections (``num_residual_streams=1``: 1.597; both
taken away: 1.718), taken away with ``--peer-set`` (its own constructor keywords).

Known defects of the peers, worked around here: titans-pytorch 0.5.5 crashes on the first
optimizer step with more than one memory head (per-head memory parameters are expanded views of
one storage: they are cloned into separate parameters); compressive-transformer-pytorch 0.4.0
calls ``to_kv.weight.detach_()`` in training, so the key/value projection stops learning after
step 1 (its ``requires_grad`` is switched back on before every step).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lm_peer_runners import (
    MNEMO,
    MNEMO_MORE,
    PEERS,
    ROOT,
    Runner,
    builders,
    mnemo_runner,
    peer_options,
    titans_port,
)
from torch import Tensor, nn

from mnemo.agents.errors import UserError
from mnemo.agents.lm.config import load_lm_config
from mnemo.agents.lm.data import from_documents, read_text_bytes, training_streams
from mnemo.agents.lm.model import n_params
from mnemo.agents.lm.train import lr_at, make_optimizer


def matched_width(build: Callable[[int], Runner], target: int, seed: int) -> Runner:
    """The width (a multiple of 8) whose parameter count is nearest ``target``."""
    lo, hi = 1, 128  # in units of 8
    while lo < hi:  # the smallest width with at least target parameters
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if n_params(build(8 * mid).model) < target else (lo, mid)
    widths = [8 * w for w in (lo - 1, lo) if w >= 1]
    torch.manual_seed(seed)
    runners = [build(w) for w in widths]
    return min(runners, key=lambda r: abs(n_params(r.model) - target))


def train_memory_mb(run: Runner, x: Tensor, y: Tensor, cfg: Any) -> float:
    """Weights plus the peak of what one training step (forward, backward, AdamW's first step)
    allocates, from the profiler's allocation events, on a copy of the model. (The process's
    RSS is mostly torch itself; saved-tensor hooks cannot see inside titans-pytorch's
    ``torch.func`` calls.)"""
    from torch.profiler import ProfilerActivity, profile

    twin = copy.copy(run)
    twin.model = copy.deepcopy(run.model)
    opt = make_optimizer(twin.model, cfg)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        twin.before_step()
        nats, aux, _ = twin.loss(x, y, twin.fresh(x.shape[0]), first=True)
        (nats + aux).backward()
        opt.step()
    events = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    now = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"):
        now += nbytes
        peak = max(peak, now)
    weights = sum(p.numel() * p.element_size() for p in run.model.parameters())
    return (weights + peak) / 2**20


@torch.no_grad()
def evaluate(run: Runner, streams: Any, segment: int, carried: bool) -> float:
    """Held-out bits per byte, each segment from a fresh state or with the state carried."""
    run.model.eval()
    state, total, count = run.fresh(streams.batch_size), 0.0, 0
    for i in range(streams.n_segments(segment)):
        seg = streams.segment(i, segment)
        if seg.x.shape[1] < segment:
            break  # the ports want whole segments
        first = i == 0 or not carried
        if first:
            state = run.fresh(seg.x.shape[0])
        nats, _, state = run.loss(seg.x, seg.y, state, first)
        total, count = total + nats.item() * seg.x.numel(), count + seg.x.numel()
    run.model.train()
    return total / max(count, 1) / math.log(2)


def default_text() -> bytes:
    """This repository's own Markdown and Python files, in a fixed order."""
    files = sorted(
        p for p in ROOT.rglob("*") if p.suffix in (".md", ".py") and ".git" not in p.parts
    )
    return b"\n".join(p.read_bytes() for p in files)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="a text file (default: this repository's text)")
    p.add_argument(
        "--models", nargs="*", default=[*MNEMO, *PEERS], choices=[*MNEMO, *MNEMO_MORE, *PEERS]
    )
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--d-model", type=int, default=112, help="mnemo titans_mac's width")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--segment-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--eval-bytes", type=int, default=65_536)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="core.key=value for mnemo cores")
    p.add_argument(
        "--peer-set",
        action="append",
        default=[],
        help="key=value for titans-pytorch's MemoryAsContextTransformer (num_residual_streams=1)",
    )
    p.add_argument(
        "--peer-ablate-memory",
        action="store_true",
        help="titans-pytorch without its neural memory, at the width it has with it",
    )
    p.add_argument(
        "--train-fresh",
        action="store_true",
        help="every training segment starts from a fresh state (as titans-pytorch trains)",
    )
    p.add_argument("--quick", action="store_true", help="3 steps, width 32: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.steps, args.d_model, args.batch_size = 3, 32, 2
        args.segment_len, args.eval_bytes = 32, 1_024
    return args


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    text = read_text_bytes(Path(args.data)) if args.data else default_text()
    cut = len(text) - min(len(text) // 10, args.eval_bytes)
    seg, bsz = args.segment_len, args.batch_size
    train_streams = training_streams(from_documents([text[:cut]], "train"), bsz, seg)
    eval_streams = training_streams(from_documents([text[cut:]], "eval"), bsz, seg)
    cfg = load_lm_config(
        None, [f"train.steps={args.steps}", f"train.lr={args.lr}", "train.warmup_steps=20"]
    )
    peer = peer_options(args.peer_set)
    for flag, given in (
        ("--peer-set", args.peer_set),
        ("--peer-ablate-memory", args.peer_ablate_memory),
    ):
        if given and "titans-pytorch" not in args.models:
            raise UserError(f"{flag} changes titans-pytorch, which --models does not include")
    found = builders(args.models, seg, args.set, peer)
    target = n_params(mnemo_runner("titans_mac")(args.d_model).model)
    print(
        f"{len(text):,} bytes ({args.data or 'this repository'}), {args.steps} steps x {bsz} x "
        f"{seg} bytes, ~{target:,} parameters each, 1 thread"
        + (f"; mnemo cores with {' '.join(args.set)}" if args.set else "")
        + (f"; titans-pytorch with {' '.join(args.peer_set)}" if args.peer_set else "")
        + ("; every training segment from a fresh state" if args.train_fresh else "")
    )
    runs: dict[str, Runner] = {}
    for name, build in found.items():
        if isinstance(build, str):
            print(f"{name:<32} skipped: {build}")
        else:
            runs[name] = matched_width(build, target, args.seed)
            if name == "titans-pytorch" and args.peer_ablate_memory:  # its width, no memory
                torch.manual_seed(args.seed)
                runs[name] = titans_port(seg, memory=False, options=peer)(runs[name].width)
    first_seg = train_streams.segment(0, seg)
    mem = {n: train_memory_mb(r, first_seg.x, first_seg.y, cfg) for n, r in runs.items()}
    opts = {n: make_optimizer(r.model, cfg) for n, r in runs.items()}
    states = {n: r.fresh(bsz) for n, r in runs.items()}
    secs = dict.fromkeys(runs, 0.0)
    tail: dict[str, list[float]] = {n: [] for n in runs}
    names = list(runs)
    n_seg = train_streams.n_segments(seg) - 1  # whole segments only
    for step in range(args.steps):
        s = train_streams.segment(step % n_seg, seg)
        first = args.train_fresh or step % n_seg == 0
        for name in names[step % len(names) :] + names[: step % len(names)]:
            run, opt = runs[name], opts[name]
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            t0 = time.perf_counter()
            run.before_step()
            nats, aux, states[name] = run.loss(s.x, s.y, states[name], first)
            opt.zero_grad(set_to_none=True)
            (nats + aux).backward()
            nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
            opt.step()
            secs[name] += time.perf_counter() - t0
            if step >= args.steps - max(1, args.steps // 10):
                tail[name].append(nats.item() / math.log(2))
    head = (
        f"{'model':<32} {'params':>9} {'width':>5} {'bytes/s':>8} {'train bpb':>9} "
        f"{'window bpb':>10} {'carried bpb':>11} {'train MB':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, run in runs.items():
        window = evaluate(run, eval_streams, seg, carried=False)
        carried = f"{evaluate(run, eval_streams, seg, carried=True):.3f}" if run.carries else "-"
        rate = args.steps * bsz * seg / secs[name]
        label = name if name in PEERS else f"mnemo {name}"
        if name == "titans-pytorch" and args.peer_ablate_memory:
            label += " (no memory)"
        print(
            f"{label:<32} {n_params(run.model):>9,} {run.width:>5} {rate:>8,.0f} "
            f"{sum(tail[name]) / len(tail[name]):>9.3f} {window:>10.3f} {carried:>11} "
            f"{mem[name]:>8.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:  # a bad --set or --data: one line, as mnemo's commands say it
        sys.exit(f"error: {e}")
