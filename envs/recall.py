"""Recall: the diagnostic memory task.

## Description
A symbol, one of ``num_symbols`` (K), is shown at the first step. Then come ``delay`` (D) steps
of blank observations (or uniform noise, with ``noise=True``) during which actions do nothing.
Then a query step: the action taken there must name the symbol. The only way to succeed more
often than 1/K is to carry the symbol across the delay.

## Observation
``Box(0, 1, (K + 1,), float32)``: at t = 0 the one-hot symbol in the first K entries; at the
query step (t = D + 1) a 1 in the last entry; zeros in between (or noise in the first K entries).

## Actions
``Discrete(K)``: only the action at the query step matters.

## Rewards
+1 if the query action equals the symbol, else 0. Nothing at other steps.

## Termination
After the query step: every episode lasts exactly D + 2 steps. ``info["success"]`` is given at
the last step, ``info["phase"]`` ("cue", "delay", "query") at every step.

## Registered configurations
``mnemo/Recall-D{8,16,32,64,128,256}-v0`` with K = 4.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class RecallEnv(gym.Env):
    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, delay: int = 16, num_symbols: int = 4, noise: bool = False) -> None:
        if not isinstance(delay, int) or delay < 0:
            raise ValueError(f"delay must be an integer >= 0, got {delay!r}")
        if not isinstance(num_symbols, int) or num_symbols < 2:
            raise ValueError(f"num_symbols must be an integer >= 2, got {num_symbols!r}")
        self.delay = delay
        self.num_symbols = num_symbols
        self.noise = noise
        self.observation_space = spaces.Box(0.0, 1.0, (num_symbols + 1,), np.float32)
        self.action_space = spaces.Discrete(num_symbols)
        self._t = 0
        self._symbol = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.num_symbols + 1, dtype=np.float32)
        if self._t == 0:
            obs[self._symbol] = 1.0
        elif self._t == self.delay + 1:
            obs[-1] = 1.0
        elif self.noise:
            obs[: self.num_symbols] = self.np_random.random(self.num_symbols, dtype=np.float32)
        return obs

    def _phase(self) -> str:
        if self._t == 0:
            return "cue"
        return "query" if self._t == self.delay + 1 else "delay"

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._symbol = int(self.np_random.integers(self.num_symbols))
        return self._obs(), {"phase": self._phase()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        if self._t == self.delay + 1:
            success = int(action) == self._symbol
            self._t += 1
            obs = np.zeros(self.num_symbols + 1, dtype=np.float32)
            return obs, float(success), True, False, {"success": success, "phase": "done"}
        self._t += 1
        return self._obs(), 0.0, False, False, {"phase": self._phase()}

    def oracle_action(self) -> int:
        """The right answer (for scripted-oracle tests)."""
        return self._symbol
