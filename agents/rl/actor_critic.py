"""The actor-critic: encoder -> memory core -> policy and value heads.

The previous action (one-hot) and reward are optional inputs; both are zeroed at episode starts
so that nothing from an earlier episode reaches the core.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from mnemo.agents.rl.config import AgentConfig, CoreConfig
from mnemo.agents.rl.encoders import make_encoder
from mnemo.memory.base import State
from torch import Tensor, nn

from mnemo import memory


class ACOutput(NamedTuple):
    logits: Tensor  # (B, T, A)
    value: Tensor  # (B, T)
    state: State
    aux_loss: Tensor  # core's aux loss (scalar)
    features: Tensor  # (B, T, d_model) core outputs, for auxiliary heads


def layer_init(layer: nn.Linear, std: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    def __init__(
        self,
        obs_space: spaces.Space,
        action_space: spaces.Space,
        core: CoreConfig,
        agent: AgentConfig,
    ) -> None:
        super().__init__()
        if not isinstance(action_space, spaces.Discrete):
            raise ValueError(
                f"action space {action_space} is not supported; mnemo's agent needs Discrete"
            )
        self.n_actions = int(action_space.n)
        self.cfg = agent
        self.encoder = make_encoder(obs_space, agent.encoder_hidden)
        n_in = agent.encoder_hidden + self.n_actions * agent.prev_action + agent.prev_reward
        self.proj = nn.Linear(n_in, core.d_model)
        self.core = memory.make_core(core.name, core.d_model, **core.options)
        self.policy = layer_init(nn.Linear(core.d_model, self.n_actions), 0.01)
        self.value = layer_init(nn.Linear(core.d_model, 1), 1.0)
        # Observation reconstruction from the core's output (agent.recon_coef > 0): Memory Gym
        # (Pleines et al. 2023) found TrXL beat GRU only with this auxiliary loss.
        self.recon: nn.Linear | None = None
        if agent.recon_coef > 0:
            space = obs_space.spaces["image"] if isinstance(obs_space, spaces.Dict) else obs_space
            discrete = isinstance(space, spaces.Discrete)
            n_out = int(space.n) if discrete else int(np.prod(space.shape))
            self.recon = nn.Linear(core.d_model, n_out)

    def reconstruction_loss(self, features: Tensor, obs: Tensor) -> Tensor:
        """Predict each observation from the core output at its step: features (B, T, d_model).

        Cross-entropy for a Discrete observation, mean squared error on the flattened values
        otherwise.
        """
        if self.recon is None:
            raise ValueError("reconstruction_loss needs agent.recon_coef > 0")
        pred = self.recon(features.float())  # (B, T, n_out)
        if obs.dim() == 2:  # Discrete: (B, T) indices
            return nn.functional.cross_entropy(pred.flatten(0, 1), obs.long().flatten())
        return nn.functional.mse_loss(pred, obs.float().flatten(2))

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return self.core.initial_state(batch_size, device)

    def forward(
        self,
        obs: Tensor,
        prev_action: Tensor,
        prev_reward: Tensor,
        state: State,
        episode_start: Tensor,
    ) -> ACOutput:
        """obs (B, T, *obs_shape); prev_action, prev_reward, episode_start (B, T)."""
        keep = (~episode_start).unsqueeze(-1).float()  # (B, T, 1)
        parts = [self.encoder(obs)]
        if self.cfg.prev_action:
            onehot = nn.functional.one_hot(prev_action.long(), self.n_actions).float()
            parts.append(onehot * keep)
        if self.cfg.prev_reward:
            parts.append(prev_reward.unsqueeze(-1).float() * keep)
        x = self.proj(torch.cat(parts, dim=-1))  # (B, T, d_model)
        out = self.core(x, state, episode_start)
        return ACOutput(
            self.policy(out.y), self.value(out.y).squeeze(-1), out.state, out.aux_loss, out.y
        )
