"""Tensor twin of ``envs.recall.RecallEnv``: N recall episodes stepped in one call.

Same observations, rewards and episode lengths as the gymnasium env (see its docstring); the
symbols are drawn from the twin's own torch generator, so a twin and N gymnasium envs given
the same seed draw different symbols (tests drive both from the same symbols instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from mnemo.envs.batched.base import TensorVectorEnv
from mnemo.envs.recall import check_recall_kwargs


class BatchedRecall(TensorVectorEnv):
    def __init__(
        self,
        num_envs: int,
        delay: int = 16,
        num_symbols: int = 4,
        noise: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(num_envs, device)
        check_recall_kwargs(delay, num_symbols, noise)
        self.delay, self.num_symbols, self.noise = delay, num_symbols, noise
        self.single_observation_space = spaces.Box(0.0, 1.0, (num_symbols + 1,), np.float32)
        self.single_action_space = spaces.Discrete(num_symbols)
        self.observation_space = spaces.Box(0.0, 1.0, (num_envs, num_symbols + 1), np.float32)
        self.action_space = spaces.MultiDiscrete([num_symbols] * num_envs)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.symbol = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def _obs(self) -> torch.Tensor:
        n, k = self.num_envs, self.num_symbols
        obs = torch.zeros(n, k + 1, device=self.device)
        if self.noise:
            obs[:, :k] = torch.rand(n, k, generator=self.generator, device=self.device)
            obs[:, :k] *= ((self.t > 0) & (self.t <= self.delay)).unsqueeze(1)
        cue = (self.t == 0).float().unsqueeze(1)
        onehot = torch.nn.functional.one_hot(self.symbol, k).float()
        obs[:, :k] = obs[:, :k] * (1 - cue) + onehot * cue
        obs[:, k] = (self.t == self.delay + 1).float()
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        self.seed_generator(seed)
        self.t.zero_()
        self.symbol = self.randint(self.num_symbols)
        return self._obs(), {}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        actions = torch.as_tensor(actions, device=self.device)
        query = self.t == self.delay + 1
        success = query & (actions == self.symbol)
        reward = success.float()
        self.t += 1
        final_obs = self._obs()
        # Same-step autoreset: finished envs start their next episode now.
        self.t = torch.where(query, torch.zeros_like(self.t), self.t)
        self.symbol = torch.where(query, self.randint(self.num_symbols), self.symbol)
        truncated = torch.zeros_like(query)
        return self._obs(), reward, query, truncated, {"success": success, "final_obs": final_obs}

    def get_state(self) -> dict[str, Any]:
        return {
            "t": self.t.clone(),
            "symbol": self.symbol.clone(),
            "generator": self.generator.get_state(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.t.copy_(state["t"])
        self.symbol.copy_(state["symbol"])
        self.generator.set_state(state["generator"])
