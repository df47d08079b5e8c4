"""``mnemo train``: PPO plugged into the shared run loop (agents/run_loop.py), which owns the
run folder, logs, Ctrl-C and checkpoints; here: what a PPO checkpoint holds, the success
history, videos and the ``ppo.target_success`` early stop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mnemo.agents import distributed, run_loop
from mnemo.agents.checkpoint import load_checkpoint, load_weights, rng_state, set_rng_state
from mnemo.agents.config_loader import to_dict
from mnemo.agents.errors import Interrupted
from mnemo.agents.interrupt import GracefulStop
from mnemo.agents.rl.config import RLConfig, describe
from mnemo.agents.rl.ppo import PPO

__all__ = ["FROZEN", "GracefulStop", "Interrupted", "TrainResult", "train"]

FROZEN = (
    "env.id",
    "env.num_envs",
    "env.kwargs",
    "env.batched",
    "core",
    "agent",
    "seed",
    "ppo.rollout_len",
    "ppo.bptt_len",
)
"""Config keys ``--resume`` must keep: they fix the envs in flight, the model's shapes, the
rollout and BPTT layout and the random streams. The rest (``ppo.total_steps``, ``ppo.lr``,
``run.*``, ``device``...) may change."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    wall_s: float
    sps: float
    final_success: float
    """Success rate over the last update's finished episodes (nan if none finished)."""
    steps_to_target: int | None
    """Env steps at which ``ppo.target_success`` or ``ppo.target_return`` was first reached
    (None if never)."""
    history: list[tuple[int, float]] = field(default_factory=list)
    """(env step, success rate) after every update."""

    def summary(self) -> str:
        """The line ``mnemo train`` ends with."""
        success = self.final_success
        shown = "n/a" if success != success else f"{success:.3f}"  # NaN: the env reports none
        target = self.steps_to_target
        return (
            f"run {self.run_dir}: {self.steps} steps in {self.wall_s:.1f} s "
            f"({self.sps:.0f} SPS), final success {shown}"
            + (f", target reached at {target} steps" if target else "")
        )


class RecentEpisodes:
    """Success, return and length over the last updates holding >= ``least`` finished
    episodes: what ``ppo.target_success`` / ``target_return`` are judged on (one update's few
    episodes are noisy), and what the console reports (as SB3 reports its last 100)."""

    SUCCESS, RETURN, LENGTH = 1, 2, 3

    def __init__(self, least: int, window: list[list[float]] | None = None) -> None:
        self.least = least
        # [episodes, success sum, return sum, length sum]; checkpoints from before the length
        # column lack it (NaN until those updates leave the window).
        self.window = [[*w, *[float("nan")] * (4 - len(w))] for w in window or []]

    def add(self, episodes: float, success: float, ret: float, length: float) -> None:
        if episodes > 0:
            self.window.append([episodes, success * episodes, ret * episodes, length * episodes])
        while len(self.window) > 1 and sum(w[0] for w in self.window[1:]) >= self.least:
            self.window.pop(0)

    @property
    def episodes(self) -> float:
        return sum(w[0] for w in self.window)

    def mean(self, column: int, least: int | None = None) -> float:
        """Mean of ``column`` (SUCCESS, RETURN, LENGTH); NaN until ``least`` (default: the
        window's) episodes have finished."""
        n = self.episodes
        need = max(1, self.least if least is None else least)
        return sum(w[column] for w in self.window) / n if n >= need else float("nan")


def checkpoint(ppo: PPO, cfg: RLConfig, history: list[tuple[int, float]], recent=None) -> dict:
    return {
        "model": ppo.model.state_dict(),
        "optimizer": ppo.optimizer.state_dict(),
        "config": to_dict(cfg),
        "step": ppo.global_step,
        "update": ppo.update_idx,
        "history": list(history),
        "recent_episodes": [] if recent is None else recent.window,
    }


def rank_state(ppo: PPO) -> dict[str, Any]:
    """What differs between data-parallel ranks: envs, carried state, RNG streams."""
    return {"trainer": ppo.trainer_state(), "rng": rng_state(ppo.device)}


def rank_states(ckpt: dict) -> dict:
    """``ckpt`` with its per-rank list (checkpoints from before it held rank 0's state alone)."""
    if "ranks" in ckpt:
        return ckpt
    return {**ckpt, "ranks": [{"trainer": ckpt["trainer"], "rng": ckpt["rng"]}]}


def restore(
    ppo: PPO, ckpt: dict, mine: dict, trusted: tuple[str, ...] = ()
) -> list[tuple[int, float]]:
    """Put a fresh PPO back exactly where ``ckpt`` was taken, with this rank's state ``mine``;
    returns the success history. ``trusted``: module prefixes the user vouched for, whose
    classes pickled gymnasium envs may hold (see ``trusted_packages``)."""
    load_weights(ppo.model, ckpt["model"], "the checkpoint")
    ppo.optimizer.load_state_dict(ckpt["optimizer"])
    ppo.load_trainer_state(mine["trainer"], trusted)
    set_rng_state(mine["rng"], ppo.device)
    return [tuple(h) for h in ckpt.get("history", [])]  # type: ignore[misc]


def warm_start(ppo: PPO, path: str) -> None:
    """Load another run's weights into a fresh PPO (``run.init_from``); one line on a mismatch."""
    ckpt = load_checkpoint(path)
    load_weights(ppo.model, ckpt.get("model"), f"run.init_from={path}")
    distributed.broadcast_params(ppo.model)


class PPOTrainer:
    """PPO as a ``run_loop.Trainer``: one iteration is one update (rollout + optimisation)."""

    def __init__(
        self,
        cfg: RLConfig,
        resume: dict | None,
        mine: dict | None,
        trusted: tuple[str, ...] = (),
    ) -> None:
        self.cfg = cfg
        self.ppo = PPO(cfg)  # before touching the disk: a bad env or space fails with no run folder
        if cfg.run.init_from and resume is None:
            warm_start(self.ppo, cfg.run.init_from)
        self.history: list[tuple[int, float]] = (
            restore(self.ppo, resume, mine, trusted) if resume else []
        )
        self.success = self.history[-1][1] if self.history else float("nan")
        self.sps = float("nan")
        self.scalars: dict[str, float] = {}  # the last update's
        self.recent = RecentEpisodes(cfg.ppo.target_episodes, (resume or {}).get("recent_episodes"))
        self.steps_to_target: int | None = None
        self.n_updates = -(-cfg.ppo.total_steps // self.ppo.steps_per_update)

    @property
    def iteration(self) -> int:
        return self.ppo.update_idx

    @property
    def progress(self) -> tuple[int, int]:
        return self.ppo.global_step, self.n_updates * self.ppo.steps_per_update

    @property
    def done(self) -> bool:
        return self.ppo.update_idx >= self.n_updates or self.steps_to_target is not None

    def texts(self) -> dict[str, str]:
        return {"config": "```\n" + describe(self.cfg) + "\n```"}

    def step(self) -> dict[str, float]:
        ppo, cfg = self.ppo, self.cfg
        scalars = ppo.iterate()
        self.sps = scalars["charts/SPS"]
        self.success = distributed.rank_mean(scalars.get("charts/success_rate", float("nan")))
        self.history.append((ppo.global_step, self.success))
        self.scalars = scalars
        ret = distributed.rank_mean(scalars.get("charts/episodic_return", float("nan")))
        length = distributed.rank_mean(scalars.get("charts/episodic_length", float("nan")))
        episodes = scalars.get("charts/episodes", 0.0) * distributed.world_size()
        self.recent.add(episodes, self.success, ret, length)
        target, recent = cfg.ppo.target_success, self.recent
        checked = cfg.ppo.target_check_episodes
        if (
            target
            and recent.mean(recent.SUCCESS) >= target
            and (not checked or self.validate(scalars) >= target)
        ):
            self.steps_to_target = ppo.global_step
        if (
            cfg.ppo.target_return is not None
            and recent.mean(recent.RETURN) >= cfg.ppo.target_return
        ):
            self.steps_to_target = ppo.global_step
        return scalars if ppo.update_idx % cfg.run.log_every == 0 else {}

    def validate(self, scalars: dict[str, Any]) -> float:
        """Greedy success of the current weights on ``ppo.target_check_episodes`` validation
        episodes; torch's random streams are left as they were, so a run that checks stays
        the run it would have been (up to stopping)."""
        from mnemo.agents.rl.evaluate import VALIDATION_SEED_OFFSET, evaluate

        ppo, n = self.ppo, self.cfg.ppo.target_check_episodes
        cuda = [ppo.device] if str(ppo.device).startswith("cuda") else []
        was_training = ppo.model.training
        with torch.random.fork_rng(devices=cuda):
            ppo.model.eval()
            try:
                result = evaluate(
                    ppo.model,
                    self.cfg,
                    n,
                    num_envs=self.cfg.env.num_envs,  # evaluate caps it at n
                    device=str(ppo.device),
                    offset=VALIDATION_SEED_OFFSET,
                )
            finally:
                ppo.model.train(was_training)
        scalars["eval/validation_success"] = result.success_rate
        return result.success_rate

    def after_step(self, writer: Any) -> None:
        if self.cfg.run.video_every and self.ppo.update_idx % self.cfg.run.video_every == 0:
            self.log_video(writer)

    def log_video(self, writer: Any) -> None:
        from mnemo.agents.rl.video import log_episode  # lazy: matplotlib and Pillow

        ppo = self.ppo
        log_episode(writer, ppo.model, self.cfg, ppo.global_step, self.cfg.seed + ppo.update_idx)

    def postfix(self) -> dict[str, str]:
        success = "n/a" if self.success != self.success else f"{self.success:.2f}"  # NaN: n/a
        return {"sps": f"{self.sps:.0f}", "success": success}

    def report(self) -> dict[str, float | int | str]:
        """Episodes over the recent window (SB3's last 100), the last update's losses."""
        recent, s = self.recent, self.scalars
        out: dict[str, float | int | str] = {
            "rollout/ep_return": recent.mean(recent.RETURN, least=1),
            "rollout/success": recent.mean(recent.SUCCESS, least=1),
            "rollout/ep_length": recent.mean(recent.LENGTH, least=1),
            "rollout/episodes": int(recent.episodes),
            "time/updates": f"{self.ppo.update_idx}/{self.n_updates}",
        }
        named = {"policy": "policy_loss", "value": "value_loss"}  # "value=" alone misleads
        for key, v in s.items():
            if key.startswith("losses/"):
                out[f"train/{named.get(key[7:], key[7:])}"] = v
        if s.get("memory/aux_loss"):  # cores without an aux loss log 0
            out["train/aux_loss"] = s["memory/aux_loss"]
        if "charts/learning_rate" in s:
            out["train/learning_rate"] = s["charts/learning_rate"]
        return out

    def checkpoint(self) -> tuple[Callable[[], dict[str, Any]], Any]:
        return lambda: checkpoint(self.ppo, self.cfg, self.history, self.recent), rank_state(
            self.ppo
        )

    def finish(self, writer: Any) -> None:
        """The trained policy's episode: the last update's video unless it just had one."""
        every = self.cfg.run.video_every
        if every and self.ppo.update_idx % every:
            self.log_video(writer)


def trusted_packages(env_id: str) -> tuple[str, ...]:
    """``("pkg.",)`` for ``pkg:EnvId``: the package of an env.id the user gave, whose classes
    its pickled envs may hold; ``()`` for any other id."""
    package, sep, _ = env_id.partition(":")
    return (package + ".",) if sep else ()


def default_run_dir(cfg: RLConfig) -> Path:
    """``run.dir``, or ``runs/<run.name or core-env>-<date>-<time>`` when it is unset."""
    name = cfg.run.name or f"{cfg.core.name}-{cfg.env.id.split('/')[-1]}"
    return run_loop.new_run_dir(cfg.run.dir, name)


def train(
    cfg: RLConfig,
    resume: dict | None = None,
    run_dir: Path | None = None,
    trusted: tuple[str, ...] | None = None,
) -> TrainResult:
    """Train PPO as ``cfg`` says; ``resume`` is a checkpoint dict to continue from exactly.

    ``trusted``: the module prefixes whose classes a resumed run's pickled gymnasium envs may
    hold besides env, space and numpy ones; default ``trusted_packages(cfg.env.id)``, right
    when the user gave the env.id. When it comes from the checkpoint, the caller passes what
    the user vouched for (``--import``): an id such as ``subprocess:CartPole-v1`` must not make
    ``subprocess.Popen`` acceptable.
    """
    if trusted is None:
        trusted = trusted_packages(cfg.env.id)
    resume = rank_states(resume) if resume else None
    cfg, mine = run_loop.prepare(cfg, resume)
    trainer = PPOTrainer(cfg, resume, mine, trusted)
    run_dir = run_dir or default_run_dir(cfg)
    step0 = trainer.ppo.global_step
    wall = run_loop.run(trainer, run_dir, cfg.run, resumed=resume is not None)
    steps = trainer.ppo.global_step
    return TrainResult(
        run_dir=run_dir,
        steps=steps,
        wall_s=wall,
        sps=(steps - step0) / wall,
        final_success=trainer.success,
        steps_to_target=trainer.steps_to_target,
        history=trainer.history,
    )
