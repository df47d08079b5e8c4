"""The actor-critic: encoder -> memory core -> policy and value heads, and its one acting call.

Actions are ``Discrete`` or ``MultiDiscrete``: the policy head gives one categorical per action
dimension (``ActionDist``), independent, their log-probabilities and entropies summed, as
CleanRL's and SB3's ``MultiCategorical`` do. The previous action (one-hot per dimension) and
reward are optional inputs; both are zeroed at episode starts so that nothing from an earlier
episode reaches the core.

Everything that acts (PPO's rollout, ``mnemo eval``, the episode videos) goes through
``ActorCritic.act`` and carries an ``ActingState`` from step to step, folding the env's answer in
with ``ActingState.advance``; SB3's ``policy.predict(obs, state, episode_start, deterministic)``
is the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Categorical

from mnemo import memory
from mnemo.agents.rl.config import AgentConfig, CoreConfig
from mnemo.agents.rl.encoders import (
    UnsupportedSpaceError,
    make_encoder,
    packed_size,
    space_words,
)
from mnemo.memory.base import State


class ACOutput(NamedTuple):
    logits: Tensor  # (B, T, A)
    value: Tensor  # (B, T)
    state: State
    aux_loss: Tensor  # core's aux loss (scalar)
    features: Tensor  # (B, T, d_model) core outputs, for auxiliary heads


class ActingState(NamedTuple):
    """What acting carries from one env step to the next; batch first, (B, ...) each.

    A NamedTuple of tensors and a core state, so ``tree_map`` moves it between devices.
    """

    core: State
    prev_action: Tensor  # (B, *action_shape) long: the action that led to the current observation
    prev_reward: Tensor  # (B,) float: the reward that came with it
    episode_start: Tensor  # (B,) bool: the current observation begins an episode

    @classmethod
    def initial(
        cls,
        core: State,
        batch_size: int,
        device: torch.device | str,
        action_shape: tuple[int, ...] = (),
    ) -> ActingState:
        """Every env at the start of an episode, with the core's initial state ``core``."""
        return cls(
            core,
            torch.zeros(batch_size, *action_shape, dtype=torch.long, device=device),
            torch.zeros(batch_size, device=device),
            torch.ones(batch_size, dtype=torch.bool, device=device),
        )

    def advance(self, core: State, action: Tensor, reward: Tensor, done: Tensor) -> ActingState:
        """The state for the next step, once the env took ``action`` and answered (reward, done).

        Args:
            core: the core state ``act`` returned for this step.
            action: (B, *action_shape) the actions taken.
            reward: (B,) the rewards received.
            done: (B,) True where the episode ended, so the next observation begins a new one.
                Pass all False to look at a truncated episode's final observation.
        """
        return ActingState(core, action, reward, done)


class Acted(NamedTuple):
    """One acting step's result, (B, ...) each."""

    action: Tensor  # (B,) long, (B, D) for a MultiDiscrete space
    logprob: Tensor  # (B,) log-probability of ``action`` under the policy
    value: Tensor  # (B,)
    logits: Tensor  # (B, A) float32: every dimension's logits side by side
    state: State  # the core state after this step: pass it to ``ActingState.advance``


Forward = Callable[[Tensor, Tensor, Tensor, State, Tensor], ACOutput]
"""``ActorCritic.forward``'s signature: (obs, prev_action, prev_reward, state, episode_start)."""


class ActionDist:
    """The policy: one categorical per action dimension over ``logits`` (..., sum(nvec)),
    independent. ``nvec`` None is a ``Discrete`` space, whose actions have no dimension axis
    ((...,)); a ``MultiDiscrete`` one's are (..., D)."""

    def __init__(self, logits: Tensor, nvec: tuple[int, ...] | None = None) -> None:
        self.nvec = nvec
        parts = (logits,) if nvec is None else logits.split(nvec, dim=-1)
        # validate_args=False: the argument checks are host syncs, and NaN logits must reach
        # PPO's loss check (which names them) rather than fail here with torch's text.
        self.dims = [Categorical(logits=p, validate_args=False) for p in parts]

    def _joined(self, per_dim: list[Tensor]) -> Tensor:
        return per_dim[0] if self.nvec is None else torch.stack(per_dim, dim=-1)

    def _split(self, action: Tensor) -> list[Tensor]:
        return [action] if self.nvec is None else list(action.unbind(-1))

    def mode(self) -> Tensor:
        """The likeliest action (each dimension's argmax)."""
        return self._joined([d.logits.argmax(-1) for d in self.dims])

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A sample from ``generator``, else from torch's global one (as ``Categorical.sample``
        draws, so runs stay reproducible). ``generator`` needs (B, n) logits."""
        if generator is None:
            return self._joined([d.sample() for d in self.dims])
        picks = [torch.multinomial(d.probs, 1, True, generator=generator) for d in self.dims]
        return self._joined([p.squeeze(-1) for p in picks])

    def log_prob(self, action: Tensor) -> Tensor:
        if self.nvec is None:  # the common case, on the acting path: no stack and sum
            return self.dims[0].log_prob(action)
        parts = self._split(action)
        return torch.stack([d.log_prob(a) for d, a in zip(self.dims, parts, strict=True)]).sum(0)

    def entropy(self) -> Tensor:
        if self.nvec is None:
            return self.dims[0].entropy()
        return torch.stack([d.entropy() for d in self.dims]).sum(0)


def action_space_dims(space: spaces.Space) -> tuple[int, ...] | None:
    """``ActionDist``'s ``nvec`` for ``space``: None for ``Discrete``, the sizes for a 1-D
    ``MultiDiscrete``.

    Raises:
        UnsupportedSpaceError: any other space, or one whose actions do not start at 0.
    """
    if isinstance(space, spaces.Discrete) and int(space.start) == 0:
        return None
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim == 1 and not np.any(space.start):
        return tuple(int(n) for n in space.nvec)
    raise UnsupportedSpaceError(
        f"action space {space_words(space)} is not supported; mnemo's agent takes Discrete(n) "
        "and 1-D MultiDiscrete(nvec) actions starting at 0"
    )


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
        self.nvec = action_space_dims(action_space)
        """None (Discrete) or each action dimension's size (MultiDiscrete)."""
        self.action_shape: tuple[int, ...] = () if self.nvec is None else (len(self.nvec),)
        self.n_actions = int(action_space.n) if self.nvec is None else sum(self.nvec)
        """Logits of the policy head: every dimension's, side by side."""
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
            discrete = isinstance(obs_space, spaces.Discrete)
            n_out = int(obs_space.n) if discrete else packed_size(obs_space)
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

    def initial_acting_state(self, batch_size: int, device: torch.device | str) -> ActingState:
        core = self.initial_state(batch_size, device)
        return ActingState.initial(core, batch_size, device, self.action_shape)

    def distribution(self, logits: Tensor) -> ActionDist:
        """The policy over actions given the head's ``logits`` (..., n_actions)."""
        return ActionDist(logits, self.nvec)

    def action_one_hot(self, action: Tensor) -> Tensor:
        """(..., *action_shape) -> (..., n_actions): one one-hot per dimension, side by side."""
        if self.nvec is None:
            return nn.functional.one_hot(action.long(), self.n_actions).float()
        parts = zip(action.long().unbind(-1), self.nvec, strict=True)
        return torch.cat([nn.functional.one_hot(a, n).float() for a, n in parts], dim=-1)

    def step(self, obs: Tensor, acting: ActingState, forward: Forward | None = None) -> ACOutput:
        """One step (T = 1) from ``acting``: obs (B, *obs_shape) -> outputs with T = 1.

        Args:
            obs: (B, *obs_shape) the current observations.
            acting: what the previous steps left (core state, previous action and reward,
                episode starts).
            forward: what to call in place of ``self``, e.g. a ``torch.compile``d copy of this
                module run under autocast; same signature as ``forward``.
        """
        return (forward or self)(
            obs.unsqueeze(1),
            acting.prev_action.unsqueeze(1),
            acting.prev_reward.unsqueeze(1),
            acting.core,
            acting.episode_start.unsqueeze(1),
        )

    def act(
        self,
        obs: Tensor,
        acting: ActingState,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        forward: Forward | None = None,
    ) -> Acted:
        """Choose actions for obs (B, *obs_shape): the argmax if ``greedy``, else a sample.

        Sampling draws from ``generator`` if given, else from torch's global generator (in the
        same order as ``Categorical.sample``, so runs stay reproducible). See ``step`` for
        ``forward``. Fold the env's answer in with ``acting.advance(acted.state, ...)``.
        """
        out = self.step(obs, acting, forward)
        logits = out.logits[:, 0].float()  # (B, A)
        dist = self.distribution(logits)
        action = dist.mode() if greedy else dist.sample(generator)
        return Acted(action, dist.log_prob(action), out.value[:, 0], logits, out.state)

    def forward(
        self,
        obs: Tensor,
        prev_action: Tensor,
        prev_reward: Tensor,
        state: State,
        episode_start: Tensor,
    ) -> ACOutput:
        """obs (B, T, *obs_shape); prev_action (B, T, *action_shape); prev_reward,
        episode_start (B, T)."""
        keep = (~episode_start).unsqueeze(-1).float()  # (B, T, 1)
        parts = [self.encoder(obs)]
        if self.cfg.prev_action:
            parts.append(self.action_one_hot(prev_action) * keep)
        if self.cfg.prev_reward:
            parts.append(prev_reward.unsqueeze(-1).float() * keep)
        x = self.proj(torch.cat(parts, dim=-1))  # (B, T, d_model)
        out = self.core(x, state, episode_start)
        return ACOutput(
            self.policy(out.y), self.value(out.y).squeeze(-1), out.state, out.aux_loss, out.y
        )
