"""``mnemo eval``: success of a trained policy on held-out env seeds, with a confidence interval."""

from __future__ import annotations

import copy
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mnemo.agents.checkpoint import check_head, load_checkpoint, load_weights
from mnemo.agents.config_loader import from_dict, parse_flag_pair
from mnemo.agents.config_sections import check_device
from mnemo.agents.errors import UserError
from mnemo.agents.rl.actor_critic import ActorCritic
from mnemo.agents.rl.config import OWN_RENDER_MODE, RLConfig, check_names
from mnemo.agents.rl.encoders import space_words
from mnemo.agents.rl.vector_env import (
    accepted_kwargs,
    check_checkpoint_import,
    counted_success,
    make_vector_env,
)

HELD_OUT_SEED_OFFSET = 1_000_003
"""Evaluation env seeds start here past the training seed, so they are never trained on."""
VALIDATION_SEED_OFFSET = 2_000_029
"""``ppo.target_check_episodes``'s env seeds start here: apart from training's and from the
held-out ones, so a run that stops on them is still judged on seeds it never saw."""


@dataclass
class EvalResult:
    episodes: int
    success_rate: float
    """NaN where the env reports no success and ``env.success_return`` is unset."""
    ci_low: float
    ci_high: float
    mean_return: float
    return_ci_low: float = float("nan")
    return_ci_high: float = float("nan")
    """95% normal-approximation interval of the mean return."""

    def summary(self) -> str:
        """One line: success with its Wilson CI (or n/a), and the mean return with its CI."""
        if math.isnan(self.success_rate):
            success = "success n/a (the env reports none; set env.success_return to define it)"
        else:
            success = (
                f"success {self.success_rate:.3f} (95% CI {self.ci_low:.3f}-{self.ci_high:.3f})"
            )
        return (
            f"{success} over {self.episodes} held-out episodes, mean return "
            f"{self.mean_return:.3f} (95% CI {self.return_ci_low:.3f}-{self.return_ci_high:.3f})"
        )


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a success rate (sound at 0 and 1, unlike the normal one)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def load_agent(
    path: str, device: str = "cpu", imports: Collection[str] = ()
) -> tuple[ActorCritic, RLConfig]:
    """The policy of an RL checkpoint (file or run folder) and its config, on ``device``.

    ``imports`` are the packages the user allows a ``package:EnvId`` env.id to import (see
    ``check_checkpoint_import``). An LM checkpoint, an unknown env or core and weights that do
    not fit are refused in one line.
    """
    check_device(device)
    ckpt = load_checkpoint(path)
    check_head(ckpt, path, lm=False, use_instead="mnemo lm eval")
    cfg = from_dict(RLConfig, ckpt["config"])
    cfg.device = device
    cfg.memory_check = False  # eval steps its own few envs, not the training run's sizes
    cfg.run.video_every = 0  # nor does it record the run's videos: --video checks its own frames
    check_checkpoint_import(cfg.env.id, imports, str(path))
    check_names(cfg)
    env = make_vector_env(cfg.env.id, 1, device, cfg.env.batched, **cfg.env.kwargs)
    model = ActorCritic(env.single_observation_space, env.single_action_space, cfg.core, cfg.agent)
    load_weights(model, ckpt["model"], str(path))
    return model.to(device).eval(), cfg


def with_env_kwargs(cfg: RLConfig, pairs: Sequence[str]) -> RLConfig:
    """``cfg`` with ``--env KEY=VALUE`` pairs merged into its env kwargs: the same policy on a
    variant of its env (another delay, apples of another colour, ...). Values are read as YAML.

    Raises:
        UserError: a pair that is not ``KEY=VALUE``, a kwarg the env refuses, or a variant
            whose observations or actions differ from the ones the policy was trained on.
    """
    if not pairs:
        return cfg
    new = copy.deepcopy(cfg)
    for pair in pairs:
        key, value = parse_flag_pair(pair, "--env", "env kwarg", "delay=512")
        if key == "render_mode":
            raise UserError(f"--env {pair!r}: {OWN_RENDER_MODE}")
        new.env.kwargs = {**new.env.kwargs, key: value}
    try:
        env = make_vector_env(new.env.id, 1, "cpu", new.env.batched, **new.env.kwargs)
    except TypeError as e:
        raise UserError(f"--env for {new.env.id}: {e}{accepted_kwargs(new.env.id)}") from e
    except ValueError as e:
        raise UserError(f"--env for {new.env.id}: {e}") from e
    trained = make_vector_env(cfg.env.id, 1, "cpu", cfg.env.batched, **cfg.env.kwargs)
    try:
        for what in ("single_observation_space", "single_action_space"):
            now, then = getattr(env, what), getattr(trained, what)
            if now != then:
                said, was = space_words(now), space_words(then)
                differ = f"be {said}, not the {was}" if said != was else f"differ from the {was}"
                raise UserError(
                    f"--env {' '.join(pairs)}: {new.env.id}'s {what.split('_')[1]}s would "
                    f"{differ} the policy was trained on"
                )
    finally:
        env.close()
        trained.close()
    return new


@torch.no_grad()
def evaluate(
    model: ActorCritic,
    cfg: RLConfig,
    episodes: int = 100,
    num_envs: int = 16,
    greedy: bool = True,
    seed: int | None = None,
    device: str = "cpu",
    offset: int = HELD_OUT_SEED_OFFSET,
) -> EvalResult:
    """Run until ``episodes`` episodes have finished; counts the first ``episodes`` of them.
    Env seeds start at ``seed`` (default: the run's) + ``offset``."""
    num_envs = max(1, min(num_envs, episodes))
    env = make_vector_env(cfg.env.id, num_envs, device, cfg.env.batched, **cfg.env.kwargs)
    obs, _ = env.reset(seed=(cfg.seed if seed is None else seed) + offset)
    acting = model.initial_acting_state(num_envs, device)
    ret = torch.zeros(num_envs, device=device)
    successes: list[float] = []
    returns: list[float] = []
    threshold = cfg.env.success_return
    while len(successes) < episodes:
        acted = model.act(obs, acting, greedy)
        obs, reward, term, trunc, info = env.step(acted.action)
        done = term | trunc
        ret += reward
        for i in torch.nonzero(done).flatten().tolist():
            successes.append(float(counted_success(ret[i], info["success"][i], threshold)))
            returns.append(float(ret[i]))
        ret = torch.where(done, 0.0, ret)
        acting = acting.advance(acted.state, acted.action, reward, done)
    r = np.array(returns[:episodes])
    half = 1.96 * float(r.std(ddof=1)) / math.sqrt(len(r)) if len(r) > 1 else float("nan")
    s = np.array(successes[:episodes])
    s = s[~np.isnan(s)]  # episodes whose env said nothing
    rate = float(s.mean()) if len(s) else float("nan")
    lo, hi = wilson_interval(int(s.sum()), len(s))
    mean = float(r.mean())
    return EvalResult(len(r), rate, lo, hi, mean, mean - half, mean + half)
