"""The memoryless control: a per-step MLP with the core interface.

Every comparison in mnemo includes it: a memory core that cannot beat ``none`` on a recall task
has not shown that it remembers. Its state is an empty (B, 0) tensor so that code handling
states never needs a special case.
"""

from __future__ import annotations

import torch
from mnemo.memory.base import CoreOutput, MemoryCore, State
from mnemo.memory.registry import register_core
from torch import Tensor, nn


@register_core("none")
class MemorylessCore(MemoryCore):
    """y_t = MLP(x_t): no information crosses time steps."""

    def __init__(self, d_model: int, hidden: int | None = None) -> None:
        super().__init__()
        self.d_model = d_model
        hidden = hidden or 2 * d_model
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, d_model))

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return torch.zeros(batch_size, 0, device=device)

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> CoreOutput:
        return CoreOutput(self.net(x), state, self.zero_aux(x))
