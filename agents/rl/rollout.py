"""Rollout storage on the agent's device, GAE, and minibatches of whole sequences."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from mnemo.memory.base import State, cat_states, index_state


@dataclass
class Rollout:
    """Everything one rollout of N envs x L steps holds; tensors are (N, L, ...)."""

    obs: Tensor
    prev_action: Tensor
    prev_reward: Tensor
    episode_start: Tensor  # True where obs[:, t] begins an episode
    action: Tensor
    logprob: Tensor
    value: Tensor
    reward: Tensor  # env reward, plus gamma * V(final obs) where an episode was truncated
    done: Tensor  # True where the episode ended with the step taken at t
    chunk_states: list[State]  # core state at the start of every bptt chunk (each batch N)

    @classmethod
    def empty(
        cls,
        n: int,
        length: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        device,
        action_shape: tuple[int, ...] = (),
    ) -> Rollout:
        """Zeros; actions are (N, L, *action_shape): () for Discrete, (D,) for MultiDiscrete."""

        def z(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.zeros(n, length, *shape, dtype=dtype, device=device)

        return cls(
            obs=z(*obs_shape, dtype=obs_dtype),
            prev_action=z(*action_shape, dtype=torch.long),
            prev_reward=z(),
            episode_start=z(dtype=torch.bool),
            action=z(*action_shape, dtype=torch.long),
            logprob=z(),
            value=z(),
            reward=z(),
            done=z(dtype=torch.bool),
            chunk_states=[],
        )


def compute_gae(
    reward: Tensor, value: Tensor, done: Tensor, last_value: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Advantages and returns, (N, L). ``done[:, t]`` stops bootstrapping from t + 1."""
    n, length = reward.shape
    adv = torch.zeros_like(reward)
    last = torch.zeros(n, device=reward.device)
    for t in reversed(range(length)):
        next_value = last_value if t == length - 1 else value[:, t + 1]
        live = (~done[:, t]).float()
        delta = reward[:, t] + gamma * next_value * live - value[:, t]
        last = delta + gamma * lam * live * last
        adv[:, t] = last
    return adv, adv + value


def _chunked(x: Tensor, n_chunks: int) -> Tensor:
    """(N, L, ...) -> (C*N, L/C, ...) with row c*N + n = env n, chunk c."""
    n, length = x.shape[:2]
    x = x.reshape(n, n_chunks, length // n_chunks, *x.shape[2:])
    return x.transpose(0, 1).reshape(n_chunks * n, length // n_chunks, *x.shape[3:])


@dataclass
class SequenceBatch:
    obs: Tensor
    prev_action: Tensor
    prev_reward: Tensor
    episode_start: Tensor
    action: Tensor
    logprob: Tensor
    value: Tensor
    advantage: Tensor
    ret: Tensor
    state: State


def sequence_minibatches(
    ro: Rollout,
    advantage: Tensor,
    ret: Tensor,
    n_minibatches: int,
    generator: torch.Generator | None = None,
) -> Iterator[SequenceBatch]:
    """Shuffle whole (env, chunk) sequences into ``n_minibatches`` minibatches."""
    n_chunks = len(ro.chunk_states)
    fields = {
        "obs": ro.obs,
        "prev_action": ro.prev_action,
        "prev_reward": ro.prev_reward,
        "episode_start": ro.episode_start,
        "action": ro.action,
        "logprob": ro.logprob,
        "value": ro.value,
        "advantage": advantage,
        "ret": ret,
    }
    seqs = {k: _chunked(v, n_chunks) for k, v in fields.items()}
    states = cat_states(ro.chunk_states)
    total = n_chunks * ro.obs.shape[0]
    perm = torch.randperm(total, generator=generator).to(ro.obs.device)
    size = max(1, total // n_minibatches)
    for start in range(0, total - size + 1, size):
        idx = perm[start : start + size]
        yield SequenceBatch(**{k: v[idx] for k, v in seqs.items()}, state=index_state(states, idx))
