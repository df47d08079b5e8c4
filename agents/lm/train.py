"""``mnemo lm train``: contiguous segments, state carried across them, truncated BPTT.

B streams run in parallel through the concatenated training documents; each optimizer step
reads ``detach_every`` consecutive segments, carrying the core state from one to the next, and
backpropagates through all of them; then the state is detached (not reset) and carried on.
AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast on CUDA.

Reliability, as in ``mnemo train``: ``--resume`` continues bit-identically (agents/lm/resume.py);
the first Ctrl-C finishes the step, checkpoints and exits 130; a non-finite loss, aux loss,
state or gradient stops before the optimizer step, keeping the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from mnemo.agents import distributed
from mnemo.agents.checkpoint import save_with_ranks, this_rank_state
from mnemo.agents.config_loader import ConfigError, to_dict
from mnemo.agents.interrupt import GracefulStop, Interrupted
from mnemo.agents.lm.config import DataConfig, LMConfig
from mnemo.agents.lm.data import (
    Corpus,
    DataError,
    Segment,
    document_streams,
    is_pg19_root,
    load_corpus,
    split_holdout,
    training_streams,
)
from mnemo.agents.lm.evaluate import LN2, EvalResult, autocast, evaluate
from mnemo.agents.lm.model import ByteLM, build_model, n_params
from mnemo.agents.lm.resume import Position, checkpoint, rank_state, restore
from mnemo.agents.lm.sample import generate, printable
from mnemo.memory.base import State, tree_leaves
from torch import Tensor, nn


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


class NonFiniteError(FloatingPointError):
    """The loss, the core's aux loss, the carried state or the gradient became NaN or inf."""


def check_finite(step: int, nats: Tensor, aux: Tensor, state: State) -> None:
    """Stop before a non-finite step touches the weights (one host sync for all three)."""
    leaves = [torch.isfinite(leaf).all() for leaf in tree_leaves(state)]
    state_ok = torch.stack(leaves).all() if leaves else torch.ones((), dtype=torch.bool)
    flags = torch.stack([torch.isfinite(nats), torch.isfinite(aux), state_ok.to(nats.device)])
    ok = flags.tolist()
    # Under torchrun every rank must stop, or the others would wait in the all-reduce.
    if distributed.any_rank(not all(ok)):
        bad = [name for name, good in zip(("loss", "aux", "state"), ok) if not good]
        raise NonFiniteError(
            f"non-finite {', '.join(bad) or 'loss on another rank'} at step {step}"
        )


def train(cfg: LMConfig, resume: dict | None = None, run_dir: Path | None = None) -> TrainResult:
    """Train a byte-level LM as ``cfg`` says; write checkpoints and TensorBoard logs.

    ``resume`` is a checkpoint to continue from exactly (agents/lm/resume.py). Under torchrun,
    rank r reads streams r*B..(r+1)*B-1 of B*world, gradients are averaged over ranks, and
    rank 0 alone evaluates and writes the run folder.
    """
    from tqdm import tqdm

    cfg = distributed.setup(cfg)  # under torchrun: this rank's device and seed + rank
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    mine = this_rank_state(resume) if resume else None  # another world size fails here
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    t = cfg.train
    world, main = distributed.world_size(), distributed.is_main()
    train_corpus, val_corpus = load_corpora(cfg.data)
    rank = distributed.rank()
    streams = training_streams(train_corpus, t.batch_size * world, t.segment_len).rows(
        rank * t.batch_size, (rank + 1) * t.batch_size
    )
    n_segments = streams.n_segments(t.segment_len)
    val_streams = document_streams(val_corpus, t.batch_size, t.eval_bytes)
    model = build_model(cfg.core.name, cfg.core.d_model, cfg.core.options).to(device)
    distributed.broadcast_params(model)  # ranks seed differently; all start from rank 0's
    optimizer = make_optimizer(model, cfg)
    run_dir = run_dir or Path(
        cfg.run.dir or f"runs/lm-{cfg.core.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "checkpoints" / "last.pt"
    pos = Position(0, 0, model.initial_state(t.batch_size, device), 0.0, 0)
    if resume:
        pos = restore(model, optimizer, resume, mine, device)
    step, consumed, state = pos.step, pos.segments, pos.state
    log_nats, log_n = pos.log_nats, pos.log_n
    # purge_step drops events the stopped run logged after its checkpoint (TensorBoard hides
    # steps >= purge_step, so + 1 keeps the checkpoint's own step).
    writer = distributed.tb_writer(str(run_dir), purge_step=step + 1 if resume else None)
    if not resume:
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

    def save() -> None:  # a collective: every rank calls it at the same steps
        here = Position(step, consumed, state, log_nats, log_n)
        save_with_ranks(
            lambda: checkpoint(model, optimizer, cfg, here), rank_state(here, device), last
        )

    bytes_per_step = t.batch_size * t.segment_len * t.detach_every * world
    bar = tqdm(
        total=t.steps, initial=step, unit="step", disable=not cfg.run.progress, dynamic_ncols=True
    )
    log_busy = 0.0
    busy = 0.0  # seconds spent in training steps only (no evaluation, sampling, checkpoints)
    train_bpb, val = float("nan"), None
    t0, step0 = time.perf_counter(), step
    clip = t.grad_clip if t.grad_clip > 0 else math.inf  # inf: only measure the norm
    model.train()
    with GracefulStop() as stop:
        try:
            while step < t.steps:
                step += 1
                step_t0 = time.perf_counter()
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step - 1, cfg)
                loss = torch.zeros((), device=device)
                nats_sum = torch.zeros((), device=device)
                aux_sum = torch.zeros((), device=device)
                for _ in range(t.detach_every):
                    seg = streams.segment(consumed % n_segments, t.segment_len)
                    consumed += 1
                    nats, aux, state = segment_loss(model, seg, state, device, cfg)
                    loss = loss + (nats + t.aux_coef * aux) / t.detach_every
                    nats_sum = nats_sum + nats.detach() / t.detach_every
                    aux_sum = aux_sum + aux.detach()
                check_finite(step, nats_sum, aux_sum, state)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.all_reduce_grads(model)
                # Same on every rank (averaged gradients), so all ranks stop together.
                if not math.isfinite(float(nn.utils.clip_grad_norm_(model.parameters(), clip))):
                    raise NonFiniteError(f"non-finite gradient at step {step}")
                optimizer.step()
                state = model.detach(state)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = time.perf_counter() - step_t0
                busy += dt
                log_busy += dt
                log_nats += float(nats_sum)
                log_n += 1
                bar.update(1)
                if step % cfg.run.log_every == 0 or step == t.steps:
                    train_bpb = distributed.rank_mean(log_nats / log_n / LN2)
                    writer.add_scalar("train/bits_per_byte", train_bpb, step)
                    writer.add_scalar(
                        "train/tokens_per_s", log_n * bytes_per_step / max(log_busy, 1e-9), step
                    )
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                    bar.set_postfix(bpb=f"{train_bpb:.3f}")
                    log_nats, log_n, log_busy = 0.0, 0, 0.0
                if main and (step % t.eval_every == 0 or step == t.steps):
                    val = validate(step)
                    if cfg.run.progress:
                        bar.write(f"step {step}: val bits/byte {val.bits_per_byte:.4f}")
                if main and t.sample_every and t.sample_bytes and step % t.sample_every == 0:
                    write_sample(step)
                # Ranks may see Ctrl-C at different steps; they must stop at the same one.
                stopping = distributed.any_rank(stop.requested)
                if step % cfg.run.checkpoint_every == 0 or step == t.steps or stopping:
                    save()
                if stopping:
                    raise Interrupted(f"stopped at step {step}; checkpoint: {last}")
            if main and t.sample_bytes and step > step0:
                write_sample(t.steps)
        except NonFiniteError as e:
            kept = "the last good checkpoint is kept" if last.exists() else "no checkpoint kept"
            raise NonFiniteError(f"{e}; {kept}") from None
        finally:
            bar.close()
            writer.close()
    wall = time.perf_counter() - t0
    tokens_per_s = (step - step0) * bytes_per_step / busy if busy else 0.0
    return TrainResult(run_dir, step, wall, tokens_per_s, train_bpb, val)


__all__ = ["DataError", "NonFiniteError", "TrainResult", "load_corpora", "train"]
