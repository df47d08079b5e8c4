"""``mnemo lm train``: contiguous segments, state carried across them, truncated BPTT.

B streams run in parallel through the concatenated training documents; each optimizer step
reads ``detach_every`` consecutive segments, carrying the core state from one to the next, and
backpropagates through all of them; then the state is detached (not reset) and carried on.
AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast on CUDA.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from agents.checkpoint import save_atomic
from agents.configuration import ConfigError, to_dict
from agents.lm.config import DataConfig, LMConfig
from agents.lm.data import (
    Corpus,
    DataError,
    Segment,
    Streams,
    document_streams,
    is_pg19_root,
    load_corpus,
    split_holdout,
    training_streams,
)
from agents.lm.evaluate import LN2, EvalResult, autocast, evaluate
from agents.lm.model import ByteLM, build_model, n_params
from agents.lm.sample import generate, printable


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    wall_s: float
    tokens_per_s: float
    """Training bytes per second, counting only the training steps."""
    train_bits_per_byte: float
    """Mean over the last logging interval."""
    val: EvalResult | None


def load_corpora(cfg: DataConfig) -> tuple[Corpus, Corpus]:
    """Training and validation corpora as the config describes (see DataConfig.val_path)."""
    syn = dataclasses.asdict(cfg.synthetic)
    train = load_corpus(cfg.path, "train", syn)
    if cfg.val_path is not None:
        return train, load_corpus(cfg.val_path, "validation", syn)
    if cfg.path.startswith("synthetic:"):
        return train, load_corpus(cfg.path, "validation", syn)
    if is_pg19_root(Path(cfg.path)):
        return train, load_corpus(cfg.path, "validation", syn)
    return split_holdout(train, cfg.val_fraction)


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use device=cpu")
    return device


def cycle_segments(streams: Streams, seg_len: int) -> Iterator[Segment]:
    """Pass after pass over the streams; each pass begins with episode_start set (fresh state)."""
    while True:
        yield from streams.segments(seg_len)


def lr_at(step: int, cfg: LMConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at the last step."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * cosine)


def make_optimizer(model: nn.Module, cfg: LMConfig) -> torch.optim.AdamW:
    """AdamW; matrices decay, biases and norm gains do not (as in nanoGPT)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.train.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.95))


def checkpoint(model: ByteLM, optimizer: torch.optim.Optimizer, cfg: LMConfig, step: int) -> dict:
    return {
        "kind": "mnemo-lm",
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": to_dict(cfg),
        "step": step,
    }


def segment_loss(model: ByteLM, seg: Segment, state, device, cfg: LMConfig):
    """Mean next-byte cross-entropy (nats) over the segment's counted targets, and the new state."""
    with autocast(device, cfg.train.amp):
        out = model(seg.x.to(device), state, seg.episode_start.to(device))
    nll = F.cross_entropy(
        out.logits.float().flatten(0, 1), seg.y.to(device).flatten(), reduction="none"
    )  # (B*T,)
    mask = seg.mask.to(device).flatten().float()
    nats = (nll * mask).sum() / mask.sum().clamp(min=1)
    return nats, out.aux_loss.float(), out.state


def train(cfg: LMConfig) -> TrainResult:
    """Train a byte-level LM as ``cfg`` says; write checkpoints and TensorBoard logs."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    t = cfg.train
    train_corpus, val_corpus = load_corpora(cfg.data)
    streams = training_streams(train_corpus, t.batch_size, t.segment_len)
    val_streams = document_streams(val_corpus, t.batch_size, t.eval_bytes)
    model = build_model(cfg.core.name, cfg.core.d_model, cfg.core.options).to(device)
    optimizer = make_optimizer(model, cfg)
    run_dir = Path(cfg.run.dir or f"runs/lm-{cfg.core.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(run_dir))
    writer.add_text("config", "```\n" + str(to_dict(cfg)) + "\n```")
    writer.add_text("model", f"{cfg.core.name}: {n_params(model):,} parameters")
    prompt = bytes(val_corpus.data[:64].tolist())

    def write_sample(step: int) -> None:
        text = generate(model, prompt, t.sample_bytes, 0.8, 0, device, seed=step, amp=t.amp)
        writer.add_text("sample", f"```\n{printable(prompt)}|{printable(text)}\n```", step)

    def validate(step: int) -> EvalResult:
        res = evaluate(model, val_streams, t.segment_len, device, t.amp)
        for k, v in res.scalars("val").items():
            writer.add_scalar(k, v, step)
        return res

    segments = cycle_segments(streams, t.segment_len)
    state = model.initial_state(t.batch_size, device)
    bytes_per_step = t.batch_size * t.segment_len * t.detach_every
    bar = tqdm(total=t.steps, unit="step", disable=not cfg.run.progress, dynamic_ncols=True)
    log_nats, log_n, log_busy = 0.0, 0, 0.0
    busy = 0.0  # seconds spent in training steps only (no evaluation, sampling, checkpoints)
    train_bpb, val = float("nan"), None
    t0 = time.perf_counter()
    model.train()
    for step in range(1, t.steps + 1):
        step_t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step - 1, cfg)
        loss = torch.zeros((), device=device)
        for _ in range(t.detach_every):
            nats, aux, state = segment_loss(model, next(segments), state, device, cfg)
            loss = loss + (nats + t.aux_coef * aux) / t.detach_every
            log_nats += float(nats.detach()) / t.detach_every
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at step {step}; lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        state = model.detach(state)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - step_t0
        busy += dt
        log_busy += dt
        log_n += 1
        bar.update(1)
        if step % cfg.run.log_every == 0 or step == t.steps:
            train_bpb = log_nats / log_n / LN2
            writer.add_scalar("train/bits_per_byte", train_bpb, step)
            writer.add_scalar("train/tokens_per_s", log_n * bytes_per_step / log_busy, step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            bar.set_postfix(bpb=f"{train_bpb:.3f}")
            log_nats, log_n, log_busy = 0.0, 0, 0.0
        if step % t.eval_every == 0 or step == t.steps:
            val = validate(step)
            if cfg.run.progress:
                bar.write(f"step {step}: val bits/byte {val.bits_per_byte:.4f}")
        if t.sample_every and t.sample_bytes and step % t.sample_every == 0:
            write_sample(step)
        if step % cfg.run.checkpoint_every == 0 or step == t.steps:
            save_atomic(
                checkpoint(model, optimizer, cfg, step), run_dir / "checkpoints" / "last.pt"
            )
    bar.close()
    wall = time.perf_counter() - t0
    if t.sample_bytes:
        write_sample(t.steps)
    writer.close()
    return TrainResult(run_dir, t.steps, wall, t.steps * bytes_per_step / busy, train_bpb, val)


__all__ = ["DataError", "TrainResult", "load_corpora", "train"]
