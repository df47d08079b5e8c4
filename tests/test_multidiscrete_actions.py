"""MultiDiscrete actions: one categorical per dimension, log-probabilities summed; PPO trains
on a tiny env (defined here) whose action is a pair of choices, and learns it."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.distributions import Categorical

from mnemo.agents.rl.actor_critic import ActionDist, ActorCritic, action_space_dims
from mnemo.agents.rl.config import AgentConfig, CoreConfig, load_rl_config
from mnemo.agents.rl.encoders import UnsupportedSpaceError
from mnemo.agents.rl.evaluate import evaluate
from mnemo.agents.rl.ppo import PPO

NVEC = (3, 2)


class PickPairEnv(gym.Env):
    """Each step shows a target per action dimension (one-hot, side by side); the reward is the
    share of dimensions the action matches. Four steps per episode."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (sum(NVEC),), np.float32)
        self.action_space = spaces.MultiDiscrete(NVEC)
        self.t, self.target = 0, np.zeros(len(NVEC), np.int64)

    def _obs(self) -> np.ndarray:
        self.target = np.array([self.np_random.integers(n) for n in NVEC])
        obs = np.zeros(sum(NVEC), np.float32)
        obs[self.target + np.cumsum((0, *NVEC[:-1]))] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        assert self.action_space.contains(np.asarray(action)), action
        reward = float(np.mean(np.asarray(action) == self.target))
        self.t += 1
        return self._obs(), reward, self.t >= 4, False, {}


if "Tiny-PickPair-v0" not in gym.registry:
    gym.register("Tiny-PickPair-v0", entry_point=PickPairEnv)


def test_one_categorical_per_dimension_log_probs_summed() -> None:
    logits = torch.randn(5, sum(NVEC))
    dist = ActionDist(logits, NVEC)
    action = dist.sample(torch.Generator().manual_seed(0))
    assert action.shape == (5, 2) and (action[:, 0] < 3).all() and (action[:, 1] < 2).all()
    first, second = Categorical(logits=logits[:, :3]), Categorical(logits=logits[:, 3:])
    expected = first.log_prob(action[:, 0]) + second.log_prob(action[:, 1])
    assert torch.allclose(dist.log_prob(action), expected)
    assert torch.allclose(dist.entropy(), first.entropy() + second.entropy())
    assert torch.equal(
        dist.mode(), torch.stack([logits[:, :3].argmax(-1), logits[:, 3:].argmax(-1)], -1)
    )


def test_act_with_the_previous_action_fed_back() -> None:
    env = PickPairEnv()
    agent = AgentConfig(encoder_hidden=8, prev_action=True)
    model = ActorCritic(env.observation_space, env.action_space, CoreConfig(d_model=8), agent)
    acting = model.initial_acting_state(3, "cpu")
    assert acting.prev_action.shape == (3, 2)
    for _ in range(2):
        acted = model.act(torch.rand(3, 5), acting)
        assert acted.action.shape == (3, 2) and acted.logprob.shape == (3,)
        acting = acting.advance(acted.state, acted.action, torch.zeros(3), torch.zeros(3).bool())


@pytest.mark.parametrize(
    "space", [spaces.Box(0, 1, (2,)), spaces.MultiDiscrete([[2, 2]]), spaces.Discrete(3, start=1)]
)
def test_other_action_spaces_fail_in_one_line(space: spaces.Space) -> None:
    with pytest.raises(UnsupportedSpaceError, match="Discrete\\(n\\) and 1-D MultiDiscrete"):
        action_space_dims(space)


def test_ppo_learns_a_multidiscrete_choice() -> None:
    """Chance is (1/3 + 1/2) / 2 per step; a few thousand steps of PPO get well above it."""
    torch.manual_seed(0)
    cfg = load_rl_config(
        None,
        [
            "env.id=Tiny-PickPair-v0",
            "env.num_envs=8",
            "ppo.rollout_len=16",
            "ppo.bptt_len=8",
            "ppo.minibatches=2",
            "ppo.lr=0.003",
            "core.name=gru",
            "core.d_model=16",
            "agent.encoder_hidden=16",
            "agent.prev_action=true",
        ],
    )
    ppo = PPO(cfg)
    returns = [ppo.iterate()["charts/episodic_return"] / 4 for _ in range(30)]
    chance = (1 / 3 + 1 / 2) / 2  # seen: 0.44 at first, 0.67 after 25 updates (3,200 steps)
    assert returns[0] < chance + 0.1 and np.mean(returns[-3:]) > chance + 0.15, returns
    held_out = evaluate(ppo.model, cfg, episodes=8, num_envs=4)  # mnemo eval's path
    assert held_out.mean_return / 4 > chance + 0.15
