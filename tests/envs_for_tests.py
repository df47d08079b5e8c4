"""Tiny gymnasium envs for the tests, one per observation space kind; importing registers them.

Loaded by tests/test_any_env.py through gymnasium's ``package:EnvId`` form
(``envs_for_tests:Tiny-Box-v0``), as a user's own package would be.

Description:
    ``SpaceEnv``: four steps per episode; observations sampled from the space (seeded); reward 1
    for action 0, else 0. It reports no ``success``, so success is "not available". It renders
    plain rgb_array frames, for videos.
    ``grid_actions_env``, ``needs_extra_env``: an unsupported action space, and a missing
    optional dependency, each refused in one line.
    ``EndsBothEnv``: terminates and truncates on the same step (as minigrid does when the goal is
    reached exactly at ``max_steps``), reward 1 there.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

SPACES: dict[str, spaces.Space] = {
    "Box": spaces.Box(-1.0, 1.0, (5,), np.float32),
    "Box2d": spaces.Box(-1.0, 1.0, (3, 4), np.float32),
    "Image": spaces.Box(0, 255, (12, 10, 3), np.uint8),
    "Discrete": spaces.Discrete(6, start=2),
    "MultiDiscrete": spaces.MultiDiscrete([3, 4, 2]),
    "MultiBinary": spaces.MultiBinary(7),
    "Tuple": spaces.Tuple((spaces.Discrete(3), spaces.Box(0.0, 1.0, (2,), np.float32))),
    "Dict": spaces.Dict(
        {
            "pos": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "pair": spaces.Tuple((spaces.MultiBinary(3), spaces.Discrete(4))),
            "view": spaces.Box(0, 255, (8, 8, 1), np.uint8),
        }
    ),
    "Text": spaces.Text(8),
}


class SpaceEnv(gym.Env):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, kind: str = "Box", length: int = 4, render_mode: str | None = None) -> None:
        self.observation_space = SPACES[kind]
        self.action_space = spaces.Discrete(2)
        self.length = length
        self.render_mode = render_mode
        self.t = 0

    def render(self) -> np.ndarray:
        return np.full((8, 8, 3), 40 * self.t, np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.observation_space.seed(int(self.np_random.integers(2**31)))
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        reward = float(int(action) == 0)
        return self.observation_space.sample(), reward, self.t >= self.length, False, {}


class EndsBothEnv(gym.Env):
    """Terminated and truncated at once on step ``length``."""

    def __init__(self, length: int = 3) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.length = length
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.t / self.length], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        end = self.t >= self.length
        return self._obs(), float(end), end, end, {}


def grid_actions_env() -> gym.Env:
    """A ``SpaceEnv`` whose actions are a 2-D MultiDiscrete (not supported: one line says so)."""
    env = SpaceEnv()
    env.action_space = spaces.MultiDiscrete([[2, 3], [2, 2]])
    return env


def needs_extra_env() -> gym.Env:
    """An env whose optional dependency is missing, as gymnasium's Box2D envs say it."""
    raise gym.error.DependencyNotInstalled("Tiny-NeedsExtra needs the 'extra' package")


for _kind in SPACES:
    if f"Tiny-{_kind}-v0" not in gym.registry:
        gym.register(f"Tiny-{_kind}-v0", entry_point=SpaceEnv, kwargs={"kind": _kind})
if "Tiny-EndsBoth-v0" not in gym.registry:
    gym.register("Tiny-EndsBoth-v0", entry_point=EndsBothEnv)
for _name, _entry in (("GridActions", grid_actions_env), ("NeedsExtra", needs_extra_env)):
    if f"Tiny-{_name}-v0" not in gym.registry:
        gym.register(f"Tiny-{_name}-v0", entry_point=_entry)
