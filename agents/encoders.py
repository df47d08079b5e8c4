"""Observation encoders: an observation space in, a (B, T, hidden) feature out."""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import Tensor, nn

SUPPORTED = (
    "Box with 1 dimension (MLP), Box (H, W, C) with small integer cells such as minigrid's "
    "7x7x3 image (CNN), Discrete (embedding), Dict with an 'image' key (minigrid; the image "
    "is used)"
)


class UnsupportedSpaceError(ValueError):
    pass


class MLPEncoder(nn.Module):
    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self, obs: Tensor) -> Tensor:
        return torch.relu(self.net(obs.float()))


class DiscreteEncoder(nn.Module):
    def __init__(self, n: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n, hidden)

    def forward(self, obs: Tensor) -> Tensor:
        return self.embed(obs.long())


class GridEncoder(nn.Module):
    """CNN over a grid of small-integer cells (minigrid: object, colour, state per cell).

    Each channel's value is embedded (a colour is a category, not a magnitude), then three 2x2
    convolutions (the shape of the usual minigrid CNN, which costs half of a 3x3 stack here).
    """

    def __init__(self, shape: tuple[int, int, int], hidden: int, n_values: int = 16) -> None:
        super().__init__()
        h, w, c = shape
        if h < 4 or w < 4:
            raise UnsupportedSpaceError(f"grid observations must be at least 4x4, got {h}x{w}")
        self.n_values = n_values
        self.embed = nn.Embedding(c * n_values, 8)
        self.register_buffer("offsets", torch.arange(c) * n_values, persistent=False)
        self.conv = nn.Sequential(
            nn.Conv2d(8 * c, 16, 2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 2),
            nn.ReLU(),
            nn.Conv2d(32, 32, 2),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(32 * (h - 3) * (w - 3), hidden), nn.ReLU())

    def forward(self, obs: Tensor) -> Tensor:
        lead = obs.shape[:-3]
        x = obs.reshape(-1, *obs.shape[-3:]).long().clamp_(0, self.n_values - 1)  # (N, H, W, C)
        x = self.embed(x + self.offsets).flatten(-2)  # (N, H, W, C*8)
        x = self.conv(x.permute(0, 3, 1, 2))
        return self.head(x.flatten(1)).reshape(*lead, -1)


def make_encoder(space: spaces.Space, hidden: int) -> nn.Module:
    """The encoder for one env's observation space, or a clear error naming what is supported."""
    if isinstance(space, spaces.Dict) and "image" in space.spaces:
        space = space.spaces["image"]
    if isinstance(space, spaces.Discrete):
        return DiscreteEncoder(int(space.n), hidden)
    if isinstance(space, spaces.Box) and len(space.shape) == 1:
        return MLPEncoder(space.shape[0], hidden)
    if isinstance(space, spaces.Box) and len(space.shape) == 3:
        return GridEncoder(space.shape, hidden)  # type: ignore[arg-type]
    raise UnsupportedSpaceError(
        f"observation space {space} is not supported; supported: {SUPPORTED}"
    )
