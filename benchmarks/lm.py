"""Byte-level LM on every registered core: training bytes/s and bits per byte after a fixed budget.

Every core trains for the same number of steps on the same data with the same width, batch and
segment length (``mnemo lm train`` underneath), then is evaluated with its memory carried over
whole validation documents. One row per core: parameters, training bytes/s (training steps
only), train and validation bits per byte and, on the synthetic recall set, bits per byte and
accuracy at the recall bytes (where only memory helps; ``none`` shows the no-memory level).

    python benchmarks/lm.py                          # synthetic recall set, all cores
    python benchmarks/lm.py --quick                  # a smoke run: few steps, tiny model
    python benchmarks/lm.py --data /path/to/pg19 --steps 2000 --device cuda
    python benchmarks/lm.py --cores lstm trxl --set core.mem_len=256

Measured (defaults: 800 steps x 16 x 64 bytes, d_model 64, compact 1-letter codes recalled 3-19
bytes back, CPU, 1 thread, 2 cores shared with other jobs, so bytes/s are rough):

    core            params   bytes/s  train bpb  val bpb  recall bpb  recall acc
    lstm            66,432     42153      0.923    0.915       0.252       1.000
    none            49,728     82163      2.166    2.166       4.706       0.040
    gru             58,112     22758      1.114    1.096       2.732       0.458
    trxl           141,056     12967      0.895    0.889       0.003       1.000
    gtrxl          239,744      8976      0.886    0.880       0.002       1.000
    titans_mag      92,358      6733      0.910    0.914       0.273       0.932
    titans_mal      96,518     10410      0.903    0.902       0.077       0.993
    titans_lmm      79,814     10840      0.967    0.970       0.804       0.845
    titans_mac      92,358      6888      1.096    1.086       2.472       0.485
    compressive    173,952      6942      0.891    0.882       0.003       1.000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from mnemo import memory
from mnemo.agents.config_loader import ConfigError
from mnemo.agents.lm.config import load_lm_config
from mnemo.agents.lm.model import build_model, n_params
from mnemo.agents.lm.train import train

SYNTHETIC = [
    "data.synthetic.compact=true",
    "data.synthetic.code_len=1",
    "data.synthetic.gap_min=0",
    "data.synthetic.gap_max=16",
    "data.synthetic.rounds=20",
    "data.synthetic.lead_max=0",
    "data.synthetic.docs=400",
    "data.synthetic.val_docs=20",
]


def overrides(args: argparse.Namespace, core: str, run_dir: str) -> list[str]:
    out = [
        f"data.path={args.data}",
        f"core.name={core}",
        f"core.d_model={args.d_model}",
        f"train.steps={args.steps}",
        f"train.batch_size={args.batch_size}",
        f"train.segment_len={args.segment_len}",
        f"train.lr={args.lr}",
        f"train.eval_every={args.steps}",
        f"train.eval_bytes={args.eval_bytes}",
        "train.sample_bytes=0",
        "train.warmup_steps=20",
        f"run.dir={run_dir}",
        "run.progress=false",
        f"run.checkpoint_every={args.steps}",
        f"device={args.device}",
        f"threads={args.threads}",
        f"seed={args.seed}",
    ]
    if args.data.startswith("synthetic:"):
        out = SYNTHETIC + out
    # Core options given with --set apply only to the cores that have them.
    valid = memory.core_options(core)
    for item in args.set:
        key = item.split("=", 1)[0]
        if not key.startswith("core.") or key.split(".", 1)[1] in valid or key == "core.d_model":
            out.append(item)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", nargs="*", default=None, help="default: every registered core")
    p.add_argument("--data", default="synthetic:recall", help="file, folder, PG-19 root")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--segment-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--eval-bytes", type=int, default=50_000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], help="extra key.sub=value override")
    p.add_argument("--quick", action="store_true", help="10 steps, width 16: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.steps, args.d_model, args.eval_bytes = 10, 16, 2_000
        args.batch_size, args.segment_len = 4, 32
        args.set = ["data.synthetic.docs=40", *args.set]
    cores = args.cores or memory.core_names()
    print(
        f"data {args.data}, {args.steps} steps x {args.batch_size} streams x "
        f"{args.segment_len} bytes, d_model {args.d_model}, device {args.device}"
    )
    header = (
        f"{'core':<12} {'params':>9} {'bytes/s':>9} {'train bpb':>10} {'val bpb':>8} "
        f"{'recall bpb':>11} {'recall acc':>11} {'wall s':>7}"
    )
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for core in cores:
            try:
                cfg = load_lm_config(None, overrides(args, core, f"{tmp}/{core}"))
            except ConfigError as e:
                print(f"{core:<12} skipped: {e}")
                continue
            torch.manual_seed(args.seed)
            size = n_params(build_model(cfg.core.name, cfg.core.d_model, cfg.core.options))
            t0 = time.perf_counter()
            res = train(cfg)
            val = res.val
            assert val is not None
            print(
                f"{core:<12} {size:>9,} {res.tokens_per_s:>9.0f} {res.train_bits_per_byte:>10.3f} "
                f"{val.bits_per_byte:>8.3f} {val.recall_bits_per_byte:>11.3f} "
                f"{val.recall_accuracy:>11.3f} {time.perf_counter() - t0:>7.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
