"""The memoryless control: a per-step MLP with the core interface.

Every comparison in mnemo includes it: a memory core that cannot beat ``none`` on a recall task
has not shown that it remembers. Its state is an empty (B, 0) tensor so that code handling
states never needs a special case.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mnemo.memory.base import CoreOutput, MemoryCore, State
from mnemo.memory.options import CoreOptions, option
from mnemo.memory.registry import register_core


@dataclass(frozen=True)
class MemorylessOptions(CoreOptions):
    """Options of the ``none`` core."""

    hidden: int | None = option(None, at_least=1)
    """Hidden width of the per-step MLP (None: 2 x d_model)."""


@register_core("none")
class MemorylessCore(MemoryCore):
    """y_t = MLP(x_t): no information crosses time steps."""

    options_type = MemorylessOptions

    def __init__(self, d_model: int, opts: MemorylessOptions) -> None:
        super().__init__()
        self.d_model = d_model
        hidden = opts.hidden or 2 * d_model
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, d_model))

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return torch.zeros(batch_size, 0, device=device)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> CoreOutput:
        return CoreOutput(self.net(x), state, self.zero_aux(x))
