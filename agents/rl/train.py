"""``mnemo train``: the loop around PPO that owns the run folder, logs and checkpoints."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mnemo.agents import distributed
from mnemo.agents.checkpoint import rng_state, save_with_ranks, set_rng_state, this_rank_state
from mnemo.agents.config_loader import to_dict
from mnemo.agents.interrupt import GracefulStop, Interrupted
from mnemo.agents.rl.config import RLConfig, describe
from mnemo.agents.rl.ppo import PPO
from tqdm import tqdm

__all__ = ["GracefulStop", "Interrupted", "TrainResult", "train"]


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_run_dir(cfg: RLConfig) -> Path:
    name = cfg.run.name or f"{cfg.core.name}-{cfg.env.id.split('/')[-1]}"
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def checkpoint(ppo: PPO, cfg: RLConfig, history: list[tuple[int, float]]) -> dict:
    return {
        "model": ppo.model.state_dict(),
        "optimizer": ppo.optimizer.state_dict(),
        "config": to_dict(cfg),
        "step": ppo.global_step,
        "update": ppo.update_idx,
        "history": list(history),
    }


def rank_state(ppo: PPO) -> dict[str, Any]:
    """What differs between data-parallel ranks: envs, carried state, RNG streams."""
    return {"trainer": ppo.trainer_state(), "rng": rng_state(ppo.device)}


def save_checkpoint(ppo: PPO, cfg: RLConfig, history: list, path: Path) -> None:
    """Rank 0 writes ``path`` with every rank's state (a collective)."""
    save_with_ranks(lambda: checkpoint(ppo, cfg, history), rank_state(ppo), path)


def rank_states(ckpt: dict) -> dict:
    """``ckpt`` with its per-rank list (checkpoints from before it held rank 0's state alone)."""
    if "ranks" in ckpt:
        return ckpt
    return {**ckpt, "ranks": [{"trainer": ckpt["trainer"], "rng": ckpt["rng"]}]}


def restore(ppo: PPO, ckpt: dict, mine: dict) -> list[tuple[int, float]]:
    """Put a fresh PPO back exactly where ``ckpt`` was taken, with this rank's state ``mine``;
    returns the success history."""
    ppo.model.load_state_dict(ckpt["model"])
    ppo.optimizer.load_state_dict(ckpt["optimizer"])
    ppo.load_trainer_state(mine["trainer"])
    set_rng_state(mine["rng"], ppo.device)
    return [tuple(h) for h in ckpt.get("history", [])]  # type: ignore[misc]


def train(cfg: RLConfig, resume: dict | None = None, run_dir: Path | None = None) -> TrainResult:
    """Train PPO as ``cfg`` says; ``resume`` is a checkpoint dict to continue from exactly."""
    cfg = distributed.setup(cfg)  # under torchrun: this rank's device and seed + rank
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # A checkpoint of another world size fails here, before any env is built.
    mine = this_rank_state(rank_states(resume)) if resume else None
    seed_everything(cfg.seed)
    ppo = PPO(cfg)  # before touching the disk: a bad env or space fails with no run folder
    run_dir = run_dir or (Path(cfg.run.dir) if cfg.run.dir else default_run_dir(cfg))
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "checkpoints" / "last.pt"
    history: list[tuple[int, float]] = restore(ppo, resume, mine) if resume else []
    # purge_step drops events logged after the checkpoint by the run that died (TensorBoard
    # hides steps >= purge_step, so + 1 keeps the checkpoint's own step).
    writer = distributed.tb_writer(str(run_dir), purge_step=ppo.global_step + 1 if resume else None)
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
                    from mnemo.agents.rl.video import (
                        log_episode,  # lazy: pulls in matplotlib and Pillow
                    )

                    log_episode(writer, ppo.model, cfg, ppo.global_step, cfg.seed + ppo.update_idx)
                # Ranks may see Ctrl-C at different updates; they must stop at the same one.
                stopping = distributed.any_rank(stop.requested)
                if ppo.update_idx % cfg.run.checkpoint_every == 0 or stopping:
                    save_checkpoint(ppo, cfg, history, last)
                bar.update(ppo.steps_per_update)
                bar.set_postfix(sps=f"{scalars['charts/SPS']:.0f}", success=f"{success:.2f}")
                if stopping:
                    raise Interrupted(f"stopped at step {ppo.global_step}; checkpoint: {last}")
                target = cfg.ppo.target_success
                if target and success >= target:
                    steps_to_target = ppo.global_step
                    break
            save_checkpoint(ppo, cfg, history, last)
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
