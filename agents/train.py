"""``mnemo train``: the loop around PPO that owns the run folder, logs and checkpoints."""

from __future__ import annotations

import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agents import distributed
from agents.checkpoint import save_atomic as _save_atomic
from agents.config import TrainConfig, describe
from agents.configuration import to_dict
from agents.ppo import PPO


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    wall_s: float
    sps: float
    final_success: float
    """Success rate over the last update's finished episodes (nan if none finished)."""
    steps_to_target: int | None
    """Env steps at which ``ppo.target_success`` was first reached (None if never)."""
    history: list[tuple[int, float]] = field(default_factory=list)
    """(env step, success rate) after every update."""


def save_atomic(obj: dict, path: Path) -> None:
    """Write a checkpoint on rank 0 only: data-parallel ranks hold the same weights."""
    if distributed.is_main():
        _save_atomic(obj, path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.run.name or f"{cfg.core.name}-{cfg.env.id.split('/')[-1]}"
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def checkpoint(ppo: PPO, cfg: TrainConfig, history: list[tuple[int, float]]) -> dict:
    return {
        "model": ppo.model.state_dict(),
        "optimizer": ppo.optimizer.state_dict(),
        "config": to_dict(cfg),
        "step": ppo.global_step,
        "update": ppo.update_idx,
        "trainer": ppo.trainer_state(),
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
        "history": list(history),
    }


def restore(ppo: PPO, ckpt: dict) -> list[tuple[int, float]]:
    """Put a fresh PPO back exactly where ``ckpt`` was taken; returns the success history."""
    ppo.model.load_state_dict(ckpt["model"])
    ppo.optimizer.load_state_dict(ckpt["optimizer"])
    ppo.load_trainer_state(ckpt["trainer"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    np.random.set_state(ckpt["rng"]["numpy"])
    random.setstate(ckpt["rng"]["python"])
    return [tuple(h) for h in ckpt.get("history", [])]  # type: ignore[misc]


class GracefulStop:
    """First Ctrl-C: finish the update in flight, checkpoint, stop. Second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C after writing a checkpoint."""


def train(cfg: TrainConfig, resume: dict | None = None, run_dir: Path | None = None) -> TrainResult:
    """Train PPO as ``cfg`` says; ``resume`` is a checkpoint dict to continue from exactly."""
    cfg = distributed.setup(cfg)  # under torchrun: this rank's device and seed + rank
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    ppo = PPO(cfg)  # before touching the disk: a bad env or space fails with no run folder
    run_dir = run_dir or (Path(cfg.run.dir) if cfg.run.dir else default_run_dir(cfg))
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "checkpoints" / "last.pt"
    history: list[tuple[int, float]] = restore(ppo, resume) if resume else []
    # purge_step drops events logged after the checkpoint by the run that died.
    writer = distributed.tb_writer(str(run_dir), purge_step=ppo.global_step if resume else None)
    if not resume:
        writer.add_text("config", "```\n" + describe(cfg) + "\n```")
    n_updates = -(-cfg.ppo.total_steps // ppo.steps_per_update)
    steps_to_target: int | None = None
    success = history[-1][1] if history else float("nan")
    t0, step0 = time.perf_counter(), ppo.global_step
    bar = tqdm(
        total=n_updates * ppo.steps_per_update,
        initial=ppo.global_step,
        unit="step",
        disable=not cfg.run.progress,
    )
    with GracefulStop() as stop:
        try:
            while ppo.update_idx < n_updates:
                scalars = ppo.iterate()
                success = distributed.rank_mean(scalars.get("charts/success_rate", float("nan")))
                history.append((ppo.global_step, success))
                if ppo.update_idx % cfg.run.log_every == 0:
                    for k, v in scalars.items():
                        writer.add_scalar(k, v, ppo.global_step)
                if cfg.run.video_every and ppo.update_idx % cfg.run.video_every == 0:
                    from agents.video import log_episode  # lazy: pulls in matplotlib and Pillow

                    log_episode(writer, ppo.model, cfg, ppo.global_step, cfg.seed + ppo.update_idx)
                if ppo.update_idx % cfg.run.checkpoint_every == 0 or stop.requested:
                    save_atomic(checkpoint(ppo, cfg, history), last)
                bar.update(ppo.steps_per_update)
                bar.set_postfix(sps=f"{scalars['charts/SPS']:.0f}", success=f"{success:.2f}")
                if stop.requested:
                    raise Interrupted(f"stopped at step {ppo.global_step}; checkpoint: {last}")
                target = cfg.ppo.target_success
                if target and success >= target:
                    steps_to_target = ppo.global_step
                    break
            save_atomic(checkpoint(ppo, cfg, history), last)
        finally:
            bar.close()
            writer.close()
    wall = time.perf_counter() - t0
    return TrainResult(
        run_dir=run_dir,
        steps=ppo.global_step,
        wall_s=wall,
        sps=(ppo.global_step - step0) / wall,
        final_success=success,
        steps_to_target=steps_to_target,
        history=history,
    )
