"""Tensor twins of mnemo's gymnasium envs, and ``make_batched`` to build one by env id."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

from mnemo.envs.batched.base import TensorVectorEnv
from mnemo.envs.batched.keychest import BatchedKeyChestMatch
from mnemo.envs.batched.recall import BatchedRecall

# Entry point of a gymnasium env -> its tensor twin class.
TWINS: dict[str, type[TensorVectorEnv]] = {
    "mnemo.envs.recall:RecallEnv": BatchedRecall,
    "mnemo.envs.keychest.match:KeyChestMatchEnv": BatchedKeyChestMatch,
}


def has_twin(env_id: str) -> bool:
    spec = gym.spec(env_id)
    return isinstance(spec.entry_point, str) and spec.entry_point in TWINS


def make_batched(
    env_id: str, num_envs: int, device: torch.device | str = "cpu", **kwargs: Any
) -> TensorVectorEnv:
    """The tensor twin of ``env_id`` with the registration's kwargs, updated by ``kwargs``."""
    spec = gym.spec(env_id)
    if not has_twin(env_id):
        raise ValueError(
            f"env {env_id!r} has no tensor twin; envs with one: {', '.join(twin_env_ids())}"
        )
    twin = TWINS[spec.entry_point]  # type: ignore[index]
    return twin(num_envs, device=device, **{**spec.kwargs, **kwargs})


def twin_env_ids() -> list[str]:
    return sorted(i for i in gym.registry if i.startswith("mnemo/") and has_twin(i))


__all__ = [
    "TWINS",
    "BatchedKeyChestMatch",
    "BatchedRecall",
    "TensorVectorEnv",
    "has_twin",
    "make_batched",
    "twin_env_ids",
]
