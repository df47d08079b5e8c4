"""Observation encoders: an observation space in, a (B, T, hidden) feature out."""

from __future__ import annotations

import torch
from gymnasium import spaces
from torch import Tensor, nn

from mnemo.agents.errors import ConfigError

SUPPORTED = (
    "Box with 1 dimension (MLP), Box (H, W, C) with small integer cells such as minigrid's "
    "7x7x3 image (CNN), Discrete (embedding), Dict with an 'image' key (minigrid; the image "
    "is used)"
)


class UnsupportedSpaceError(ConfigError):
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


MINIGRID_CELL_VALUES = (11, 6, 3)
"""Sizes of minigrid's cell vocabularies: object, colour, state (minigrid.core.constants;
tests/test_encoders.py checks them against minigrid)."""


class GridEncoder(nn.Module):
    """CNN over a grid of small-integer cells (minigrid: object, colour, state per cell).

    Each channel's value is one-hot encoded over its vocabulary (a colour is a category, not a
    magnitude), then three 2x2 convolutions (the shape of the usual minigrid CNN). Against the
    embedding per value it replaced, the one-hot input is the same model without its rank
    limit and ~1.8x cheaper to train on CPU: the first convolution needs no input gradient,
    there is no lookup of ~600k cells per minibatch, and minigrid's vocabularies need 20 input
    channels, not 48. Raw values scaled to [0, 1] (SB3's minigrid CNN) were cheaper still but
    had not learned KeyChest-Match at 1.3M steps, where this solved it at 1.44M.

    Args:
        cell_values: vocabulary size per channel; values beyond it share its last slot.
            Default: minigrid's for 3 channels, 16 per channel otherwise.
    """

    def __init__(
        self, shape: tuple[int, int, int], hidden: int, cell_values: tuple[int, ...] | None = None
    ) -> None:
        super().__init__()
        h, w, c = shape
        if h < 4 or w < 4:
            raise UnsupportedSpaceError(f"grid observations must be at least 4x4, got {h}x{w}")
        if cell_values is None:
            cell_values = MINIGRID_CELL_VALUES if c == 3 else (16,) * c
        if len(cell_values) != c:
            raise UnsupportedSpaceError(f"{len(cell_values)} cell vocabularies for {c} channels")
        sizes = torch.tensor(cell_values)
        self.register_buffer("top", sizes - 1, persistent=False)
        self.register_buffer("offset", torch.cumsum(sizes, 0) - sizes, persistent=False)
        self.n_onehot = int(sizes.sum())
        self.conv = nn.Sequential(
            nn.Conv2d(self.n_onehot, 16, 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 2),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Linear(32 * (h - 3) * (w - 3), hidden), nn.ReLU())

    def forward(self, obs: Tensor) -> Tensor:
        lead, (h, w, c) = obs.shape[:-3], obs.shape[-3:]
        cells = obs.reshape(-1, h, w, c).long()
        slot = torch.minimum(cells.clamp(min=0), self.top) + self.offset  # (N, H, W, C)
        onehot = torch.zeros(*slot.shape[:3], self.n_onehot, device=obs.device)
        onehot.scatter_(-1, slot, 1.0)
        x = self.conv(onehot.permute(0, 3, 1, 2))  # (N, n_onehot, H, W), channels-last
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
