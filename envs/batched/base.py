"""Base class of the tensor twins: vector envs whose whole state is torch tensors.

A twin steps N envs in one call with no Python loop over envs, on any device. It follows
gymnasium's ``VectorEnv`` with same-step autoreset: when an env's episode ends at a step, the
observation returned for it is the first of its next episode, and the ending observation is in
``info["final_obs"]``. Everything returned is a torch tensor on ``self.device``:

- obs: (N, *obs_shape); reward: (N,) float32; terminated, truncated: (N,) bool;
- info["success"]: (N,) bool, meaningful where the episode ended this step;
- info["final_obs"]: (N, *obs_shape), the observations before any autoreset.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium.vector import VectorEnv


class TensorVectorEnv(VectorEnv):
    """Shared plumbing: device, generator, seeding."""

    can_truncate: bool = False
    """True if ``step`` may ever return ``truncated``; the rollout skips the truncation
    bootstrap (and its host sync) for twins that never do."""

    def __init__(self, num_envs: int, device: torch.device | str = "cpu") -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0)

    def seed_generator(self, seed: int | None) -> None:
        if seed is not None:
            self.generator.manual_seed(int(seed))

    def randint(self, high: int | torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Uniform integers in [0, high) for ``n`` envs (``high`` may be a (n,) tensor)."""
        n = self.num_envs if n is None else n
        u = torch.rand(n, generator=self.generator, device=self.device)
        return (u * high).long()

    def get_state(self) -> dict[str, Any]:
        """Everything needed to resume stepping exactly (tensors and generator state)."""
        raise NotImplementedError

    def set_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError
