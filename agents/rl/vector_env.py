"""One interface for the agent over any env: a tensor twin, or N gymnasium envs.

``make_vector_env`` returns a tensor twin when the env has one and the config allows it,
otherwise gymnasium's SyncVectorEnv (same-step autoreset) wrapped to speak torch like a twin.
Either way ``step`` returns torch tensors on the agent's device and ``info["success"]``,
``info["final_obs"]`` as described in envs/batched/base.py.
"""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import mnemo.envs  # noqa: F401  (registers mnemo's envs)
from mnemo.envs.batched import has_twin, make_batched


def _unwrap_image(env: gym.Env) -> gym.Env:
    if (
        isinstance(env.observation_space, gym.spaces.Dict)
        and "image" in env.observation_space.spaces
    ):
        from minigrid.wrappers import ImgObsWrapper

        return ImgObsWrapper(env)
    return env


class GymVectorEnv:
    """SyncVectorEnv of ``num_envs`` copies of ``env_id``, returning torch tensors."""

    def __init__(
        self, env_id: str, num_envs: int, device: torch.device | str, **kwargs: Any
    ) -> None:
        def make() -> gym.Env:
            return _unwrap_image(gym.make(env_id, **kwargs))

        self.env = SyncVectorEnv([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.single_observation_space = self.env.single_observation_space
        self.single_action_space = self.env.single_action_space

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), device=self.device)

    def reset(self, *, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed)
        return self._t(obs), info

    def step(self, actions: torch.Tensor) -> tuple:
        obs, reward, term, trunc, info = self.env.step(actions.cpu().numpy())
        done = term | trunc
        success = np.zeros(self.num_envs, dtype=bool)
        # Same-step autoreset moves a finished episode's info under "final_info".
        final = info.get("final_info", {})
        if "success" in final:
            success = np.asarray(final["success"], dtype=bool) & final.get("_success", True)
        final_obs = obs.copy()
        if "final_obs" in info:
            for i in np.nonzero(done)[0]:
                final_obs[i] = info["final_obs"][i]
        out_info = {"success": self._t(success), "final_obs": self._t(final_obs)}
        return (
            self._t(obs),
            self._t(reward).float(),
            self._t(term).bool(),
            self._t(trunc).bool(),
            out_info,
        )

    def get_state(self) -> bytes:
        """The envs themselves, pickled (their RNGs included), for exact resume."""
        return pickle.dumps(self.env.envs)

    def set_state(self, state: bytes) -> None:
        self.env.envs = pickle.loads(state)

    def render_env(self, index: int = 0) -> gym.Env:
        return self.env.envs[index]

    def close(self) -> None:
        self.env.close()


def make_vector_env(
    env_id: str,
    num_envs: int,
    device: torch.device | str,
    batched: bool = True,
    **kwargs: Any,
) -> Any:
    """A twin when ``batched`` and one exists, else a ``GymVectorEnv``."""
    if batched and has_twin(env_id):
        return make_batched(env_id, num_envs, device=device, **kwargs)
    return GymVectorEnv(env_id, num_envs, device, **kwargs)
