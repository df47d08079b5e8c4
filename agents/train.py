"""``mnemo train``: the loop around PPO that owns the run folder, logs and checkpoints."""

from __future__ import annotations

import random
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


def checkpoint(ppo: PPO, cfg: TrainConfig) -> dict:
    return {
        "model": ppo.model.state_dict(),
        "optimizer": ppo.optimizer.state_dict(),
        "config": to_dict(cfg),
        "step": ppo.global_step,
        "update": ppo.update_idx,
    }


def train(cfg: TrainConfig) -> TrainResult:
    cfg = distributed.setup(cfg)  # under torchrun: this rank's device and seed + rank
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    run_dir = Path(cfg.run.dir) if cfg.run.dir else default_run_dir(cfg)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    ppo = PPO(cfg)
    writer = distributed.tb_writer(str(run_dir))
    writer.add_text("config", "```\n" + describe(cfg) + "\n```")
    n_updates = -(-cfg.ppo.total_steps // ppo.steps_per_update)
    history: list[tuple[int, float]] = []
    steps_to_target: int | None = None
    success = float("nan")
    t0 = time.perf_counter()
    bar = tqdm(total=n_updates * ppo.steps_per_update, unit="step", disable=not cfg.run.progress)
    try:
        while ppo.update_idx < n_updates:
            scalars = ppo.iterate()
            success = distributed.rank_mean(scalars.get("charts/success_rate", float("nan")))
            history.append((ppo.global_step, success))
            if ppo.update_idx % cfg.run.log_every == 0:
                for k, v in scalars.items():
                    writer.add_scalar(k, v, ppo.global_step)
            if ppo.update_idx % cfg.run.checkpoint_every == 0:
                save_atomic(checkpoint(ppo, cfg), run_dir / "checkpoints" / "last.pt")
            bar.update(ppo.steps_per_update)
            bar.set_postfix(sps=f"{scalars['charts/SPS']:.0f}", success=f"{success:.2f}")
            target = cfg.ppo.target_success
            if target and success >= target and steps_to_target is None:
                steps_to_target = ppo.global_step
                break
    finally:
        bar.close()
        save_atomic(checkpoint(ppo, cfg), run_dir / "checkpoints" / "last.pt")
        writer.close()
    wall = time.perf_counter() - t0
    return TrainResult(
        run_dir=run_dir,
        steps=ppo.global_step,
        wall_s=wall,
        sps=ppo.global_step / wall,
        final_success=success,
        steps_to_target=steps_to_target,
        history=history,
    )
