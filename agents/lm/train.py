"""``mnemo lm train``: contiguous segments, state carried across them, truncated BPTT.

B streams run in parallel through the concatenated training documents; each optimizer step
reads ``detach_every`` consecutive segments, carrying the core state from one to the next, and
backpropagates through all of them; then the state is detached (not reset) and carried on.
AdamW with linear warm-up and cosine decay, gradient clipping, bf16 autocast on CUDA.

Reliability, as in ``mnemo train``: ``--resume`` continues bit-identically (agents/lm/resume.py);
the first Ctrl-C finishes the step, checkpoints and exits 130; a non-finite loss, aux loss,
state, gradient or weight stops before the optimizer step, and weights that give a non-finite
loss are never checkpointed (agents/divergence.py), keeping the last good checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from mnemo.agents import distributed, divergence, run_loop
from mnemo.agents.config_loader import to_dict
from mnemo.agents.config_sections import check_device
from mnemo.agents.errors import NonFiniteError
from mnemo.agents.lm.config import DataConfig, LMConfig
from mnemo.agents.lm.data import (
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
from mnemo.agents.lm.evaluate import LN2, EvalResult, autocast, evaluate
from mnemo.agents.lm.model import ByteLM, build_model, n_params
from mnemo.agents.lm.resume import Position, checkpoint, rank_state, restore
from mnemo.agents.lm.sample import generate, printable
from mnemo.memory.base import State, tree_leaves


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


def load_corpora(cfg: DataConfig, syn: dict | None = None) -> tuple[Corpus, Corpus]:
    """Training and validation corpora as the config describes (see DataConfig.val_path);
    ``syn``: the synthetic sets' options, if not the config's."""
    syn = dataclasses.asdict(cfg.synthetic) if syn is None else syn
    train = load_corpus(cfg.path, "train", syn)
    if not holds_out(cfg):
        return train, load_corpus(cfg.val_path or cfg.path, "validation", syn)
    return split_holdout(train, cfg.val_fraction)


def has_own_splits(cfg: DataConfig) -> bool:
    """Whether ``path`` names its splits itself: a synthetic set (by seed) or a PG-19 root."""
    return cfg.path.startswith("synthetic:") or is_pg19_root(Path(cfg.path).expanduser())


def holds_out(cfg: DataConfig) -> bool:
    """Whether validation is the last ``val_fraction`` of ``path`` (a plain file or flat
    folder without ``val_path``) rather than data of its own."""
    return cfg.val_path is None and not has_own_splits(cfg)


def make_training_streams(cfg: LMConfig, train: Corpus, val: Corpus, world: int = 1) -> Streams:
    """``training_streams`` of all ranks; when the bytes are too few only because
    ``data.val_fraction`` held out the rest, the one line says to lower that."""
    t, n_streams = cfg.train, cfg.train.batch_size * world
    try:
        return training_streams(train, n_streams, t.segment_len)
    except DataError:
        needed = n_streams * (t.segment_len + 1)
        whole = len(train) + len(val)
        if not holds_out(cfg.data) or whole < needed:
            raise
        raise DataError(
            f"{train.name}: data.val_fraction={cfg.data.val_fraction} holds out {len(val)} of "
            f"its {whole} bytes, leaving {len(train)} for training, too few for {n_streams} "
            f"streams of at least one segment ({needed} bytes in all); lower data.val_fraction"
        ) from None


def run_corpus(cfg: DataConfig, split: str, syn: dict) -> Corpus:
    """The run's own ``split`` as training read it: a synthetic set's seed, a PG-19 root's
    folder, ``val_path`` for validation; of a plain file or flat folder, the bytes trained on
    (train) or the held-out last ``val_fraction`` (validation), never the whole of it.

    Raises:
        DataError: ``test`` of a plain file or flat folder, which has none.
    """
    if has_own_splits(cfg):
        if split == "validation" and cfg.val_path is not None:
            return load_corpus(cfg.val_path, split, syn)
        return load_corpus(cfg.path, split, syn)
    if split == "test":
        raise DataError(
            f"--split test: the run's data.path {cfg.path} has no test split (a file or a flat "
            "folder: training held out its end as validation); give --data, or --split "
            "validation or train"
        )
    train, val = load_corpora(cfg, syn)
    return train if split == "train" else val


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
    # foreach: each update for all tensors in one call (torch does so by default on CUDA only);
    # on a CPU the step of the compressive LM's 37 tensors took 0.94 ms tensor by tensor and
    # 0.75 ms so, with the same numbers bit for bit.
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.95), foreach=True)


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


def check_finite(step: int, nats: Tensor, aux: Tensor, state: State) -> None:
    """Stop before a non-finite step touches the weights (one host sync for all three)."""
    leaves = [torch.isfinite(leaf).all() for leaf in tree_leaves(state)]
    state_ok = torch.stack(leaves).all() if leaves else torch.ones((), dtype=torch.bool)
    flags = torch.stack([torch.isfinite(nats), torch.isfinite(aux), state_ok.to(nats.device)])
    ok = flags.tolist()
    # Under torchrun every rank must stop, or the others would wait in the all-reduce.
    if distributed.any_rank(not all(ok)):
        bad = [name for name, good in zip(("loss", "aux loss", "core state"), ok) if not good]
        raise NonFiniteError(f"non-finite {divergence.named(bad)} at step {step}")


class LMTrainer:
    """The byte LM as a ``run_loop.Trainer``: one iteration is one optimizer step over
    ``detach_every`` consecutive segments, the core state carried across them."""

    def __init__(self, cfg: LMConfig, resume: dict | None, mine: dict | None) -> None:
        self.cfg, t = cfg, cfg.train
        self.device = device = check_device(cfg.device)
        world, rank = distributed.world_size(), distributed.rank()
        train_corpus, val_corpus = load_corpora(cfg.data)
        self.data_id = train_corpus.fingerprint()  # a resume must read the same bytes
        self.streams = make_training_streams(cfg, train_corpus, val_corpus, world).rows(
            rank * t.batch_size, (rank + 1) * t.batch_size
        )
        self.n_segments = self.streams.n_segments(t.segment_len)
        self.val_streams = document_streams(val_corpus, t.batch_size, t.eval_bytes)
        self.prompt = bytes(val_corpus.data[:64].tolist())
        self.model = build_model(cfg.core.name, cfg.core.d_model, cfg.core.options).to(device)
        distributed.broadcast_params(self.model)  # ranks seed differently; all start from rank 0's
        self.optimizer = make_optimizer(self.model, cfg)
        self.pos = Position(0, 0, self.model.initial_state(t.batch_size, device), 0.0, 0)
        if resume:
            self.pos = restore(self.model, self.optimizer, resume, mine, device, self.data_id)
        self.step0 = self.pos.step
        self.bytes_per_step = t.batch_size * t.segment_len * t.detach_every * world
        self.busy = 0.0  # seconds spent in training steps only (no evaluation, samples, saves)
        self.log_busy = 0.0
        self.log_timed = 0  # steps timed in log_busy: a resume restores log_n, not the time
        self.train_bpb, self.tokens_per_s, self.val = float("nan"), float("nan"), None
        self.clip = t.grad_clip if t.grad_clip > 0 else math.inf  # inf: only measure the norm
        self.model.train()

    @property
    def iteration(self) -> int:
        return self.pos.step

    @property
    def progress(self) -> tuple[int, int]:
        return self.pos.step, self.cfg.train.steps

    @property
    def done(self) -> bool:
        return self.pos.step >= self.cfg.train.steps

    def texts(self) -> dict[str, str]:
        return {
            "config": "```\n" + str(to_dict(self.cfg)) + "\n```",
            "model": f"{self.cfg.core.name}: {n_params(self.model):,} parameters",
        }

    def step(self) -> dict[str, float]:
        t0 = time.perf_counter()
        nats = self.optimize(self.pos.step + 1)
        dt = time.perf_counter() - t0
        self.busy += dt
        self.log_busy += dt
        self.log_timed += 1
        step, segments, state, log_nats, log_n = self.pos
        self.pos = Position(step, segments, state, log_nats + nats, log_n + 1)
        if step % self.cfg.run.log_every and step != self.cfg.train.steps:
            return {}
        return self.log_scalars()

    def optimize(self, step: int) -> float:
        """One optimizer step (``step`` counts from 1); returns its mean loss in nats."""
        t, model, device = self.cfg.train, self.model, self.device
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step - 1, self.cfg)
        consumed, state = self.pos.segments, self.pos.state
        loss = torch.zeros((), device=device)
        nats_sum = torch.zeros((), device=device)
        aux_sum = torch.zeros((), device=device)
        for _ in range(t.detach_every):
            seg = self.streams.segment(consumed % self.n_segments, t.segment_len)
            consumed += 1
            nats, aux, state = segment_loss(model, seg, state, device, self.cfg)
            loss = loss + (nats + t.aux_coef * aux) / t.detach_every
            nats_sum = nats_sum + nats.detach() / t.detach_every
            aux_sum = aux_sum + aux.detach()
        check_finite(step, nats_sum, aux_sum, state)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.all_reduce_grads(model)
        norm = nn.utils.clip_grad_norm_(model.parameters(), self.clip)
        divergence.check_before_step(model, norm, f"at step {step}")
        self.optimizer.step()
        state = model.detach(state)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.pos = self.pos._replace(step=step, segments=consumed, state=state)
        return float(nats_sum)

    def window(self) -> tuple[float, float]:
        """Bits per byte (this rank's) and bytes per second of the steps since the last log."""
        n, timed = self.pos.log_n, self.log_timed
        bpb = self.pos.log_nats / n / LN2 if n else float("nan")
        speed = timed * self.bytes_per_step / max(self.log_busy, 1e-9) if timed else float("nan")
        return bpb, speed

    def log_scalars(self) -> dict[str, float]:
        """Means over the steps since the last log, which they then start over from."""
        bpb, self.tokens_per_s = self.window()
        self.train_bpb = distributed.rank_mean(bpb)
        step, segments, state, _, _ = self.pos
        self.pos = Position(step, segments, state, 0.0, 0)
        self.log_busy, self.log_timed = 0.0, 0
        return {
            "train/bits_per_byte": self.train_bpb,
            "train/tokens_per_s": self.tokens_per_s,
            "train/lr": self.optimizer.param_groups[0]["lr"],
        }

    def after_step(self, writer: Any) -> None:
        """Rank 0 alone evaluates and samples."""
        step, t = self.pos.step, self.cfg.train
        if not distributed.is_main():
            return
        if step % t.eval_every == 0 or step == t.steps:
            self.val = evaluate(self.model, self.val_streams, t.segment_len, self.device, t.amp)
            for k, v in self.val.scalars("val").items():
                writer.add_scalar(k, v, step)
            if self.cfg.run.progress:
                tqdm.write(f"step {step}: val bits/byte {self.val.bits_per_byte:.4f}")
        if t.sample_every and t.sample_bytes and step % t.sample_every == 0:
            self.write_sample(writer, step)

    def write_sample(self, writer: Any, step: int) -> None:
        t = self.cfg.train
        text = generate(
            self.model, self.prompt, t.sample_bytes, 0.8, 0, self.device, seed=step, amp=t.amp
        )
        writer.add_text("sample", f"```\n{printable(self.prompt)}|{printable(text)}\n```", step)

    def postfix(self) -> dict[str, str]:
        return {} if math.isnan(self.train_bpb) else {"bpb": f"{self.train_bpb:.3f}"}

    def report(self) -> dict[str, float | int | str]:
        """The last logged training window (before the first log of this process, with
        run.print_every below run.log_every: the steps so far, rank 0's alone, as the report
        is rank 0's) and the last validation."""
        val = float("nan") if self.val is None else self.val.bits_per_byte
        bpb, tokens_per_s = self.train_bpb, self.tokens_per_s
        if math.isnan(bpb):
            bpb, tokens_per_s = self.window()
        return {
            "train/bits_per_byte": bpb,
            "train/tokens_per_s": tokens_per_s,
            "train/lr": self.optimizer.param_groups[0]["lr"],
            "val/bits_per_byte": val,
        }

    @torch.no_grad()
    def check_resumable(self) -> None:
        """Refuse to checkpoint weights that are not finite or, finite but too large, give a
        non-finite loss on the next segment: a resume of them would stop at once."""
        t, step = self.cfg.train, self.pos.step
        if not bool(divergence.weights_finite(self.model)):
            names = divergence.named(divergence.nonfinite_parameters(self.model))
            raise NonFiniteError(f"non-finite weights ({names}) after step {step}")
        seg = self.streams.segment(self.pos.segments % self.n_segments, t.segment_len)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices):  # the run's random streams stay as they were
            nats, aux, state = segment_loss(self.model, seg, self.pos.state, self.device, self.cfg)
        check_finite(step + 1, nats, aux, state)

    def checkpoint(self) -> tuple[Callable[[], dict[str, Any]], Any]:
        self.check_resumable()
        here = self.pos  # as it is now, not when rank 0 builds the dict

        def shared() -> dict[str, Any]:
            return checkpoint(self.model, self.optimizer, self.cfg, here, self.data_id)

        return shared, rank_state(here, self.device)

    def finish(self, writer: Any) -> None:
        if distributed.is_main() and self.cfg.train.sample_bytes and self.pos.step > self.step0:
            self.write_sample(writer, self.cfg.train.steps)


def train(cfg: LMConfig, resume: dict | None = None, run_dir: Path | None = None) -> TrainResult:
    """Train a byte-level LM as ``cfg`` says; write checkpoints and TensorBoard logs.

    ``resume`` is a checkpoint to continue from exactly (agents/lm/resume.py). Under torchrun,
    rank r reads streams r*B..(r+1)*B-1 of B*world, gradients are averaged over ranks, and
    rank 0 alone evaluates and writes the run folder.
    """
    cfg, mine = run_loop.prepare(cfg, resume)
    trainer = LMTrainer(cfg, resume, mine)
    run_dir = run_dir or run_loop.new_run_dir(cfg.run.dir, f"lm-{cfg.core.name}")
    wall = run_loop.run(trainer, run_dir, cfg.run, resumed=resume is not None)
    steps = trainer.pos.step - trainer.step0
    tokens_per_s = steps * trainer.bytes_per_step / trainer.busy if trainer.busy else 0.0
    return TrainResult(
        run_dir, trainer.pos.step, wall, tokens_per_s, trainer.train_bpb, trainer.val
    )


__all__ = ["DataError", "LMTrainer", "NonFiniteError", "TrainResult", "load_corpora", "train"]
