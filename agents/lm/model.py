"""The byte-level language model: embed -> any registered memory core -> unembed.

The core is built by ``memory.make_core`` and used unchanged, exactly as the PPO agent uses
it: the LM only adds a byte embedding in front and a LayerNorm + linear read-out behind.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from mnemo import memory
from mnemo.memory.base import State

VOCAB = 256


class LMOutput(NamedTuple):
    logits: Tensor
    """(B, T, 256) next-byte logits."""
    state: State
    aux_loss: Tensor
    """Scalar aux loss of the core (0 for most cores)."""


class ByteLM(nn.Module):
    """Next-byte model around one memory core.

    Args:
        core_name: a registered core (``memory.core_names()``).
        d_model: width of the embedding and the core.
        core_options: options of that core (validated by the registry).
    """

    def __init__(self, core_name: str, d_model: int, core_options: dict | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d_model)
        self.core = memory.make_core(core_name, d_model, **(core_options or {}))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)
        nn.init.normal_(self.embed.weight, std=0.1)

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return self.core.initial_state(batch_size, device)

    def detach(self, state: State) -> State:
        return self.core.detach(state)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> LMOutput:
        """x: (B, T) byte ids; episode_start: (B, T) bool (True at a document's first byte)."""
        h = self.embed(x)  # (B, T, D)
        out = self.core(h, state, episode_start)
        logits = self.head(self.norm(out.y))  # (B, T, 256)
        return LMOutput(logits, out.state, out.aux_loss)


def build_model(core_name: str, d_model: int, core_options: dict | None = None) -> ByteLM:
    """Build a ByteLM, turning the registry's errors into one-line config errors."""
    from mnemo.agents.config_loader import ConfigError

    try:
        return ByteLM(core_name, d_model, core_options)
    except memory.CoreConfigError as e:
        raise ConfigError(str(e)) from e


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
