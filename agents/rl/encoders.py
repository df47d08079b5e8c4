"""Observation encoders: an observation space in, a (B, T, hidden) feature out.

``make_encoder`` composes them: each standard space has one, and Tuple / Dict observations (which
agents/rl/vector_env.py packs into one flat vector, leaves in the space's order) are split back,
each part encoded by its own encoder and the parts concatenated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from mnemo.agents.errors import ConfigError

SUPPORTED = (
    "Box vectors or any non-image shape (MLP), Box (H, W, C) images (CNN; uint8 scaled by 1/255), "
    "minigrid's (H, W, 3) cell grids (one-hot CNN), Discrete, MultiDiscrete, MultiBinary, and "
    "Tuple / Dict of these (nested; minigrid's Dict uses its image)"
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
    def __init__(self, n: int, hidden: int, start: int = 0) -> None:
        super().__init__()
        self.start = start
        self.embed = nn.Embedding(n, hidden)

    def forward(self, obs: Tensor) -> Tensor:
        return self.embed(obs.long() - self.start)


class MultiDiscreteEncoder(nn.Module):
    """One embedding table for all dimensions (offset per dimension); the embeddings are summed,
    as a one-hot per dimension through one linear layer would be."""

    def __init__(self, space: spaces.MultiDiscrete, hidden: int) -> None:
        super().__init__()
        nvec = torch.as_tensor(np.asarray(space.nvec).reshape(-1), dtype=torch.long)
        start = torch.as_tensor(np.asarray(space.start).reshape(-1), dtype=torch.long)
        self.register_buffer("offset", torch.cumsum(nvec, 0) - nvec - start, persistent=False)
        self.obs_dims = np.asarray(space.nvec).ndim
        self.embed = nn.Embedding(int(nvec.sum()), hidden)

    def forward(self, obs: Tensor) -> Tensor:
        lead = obs.shape[: obs.dim() - self.obs_dims]
        idx = obs.reshape(*lead, -1).long() + self.offset
        return torch.relu(self.embed(idx).sum(-2))


class ImageEncoder(nn.Module):
    """A small CNN over (H, W, C) pixel images of any size, Atari-style (Mnih et al. 2015's three
    convolutions, here 3x3 with padding and a final adaptive pool so small images work too)."""

    def __init__(self, shape: tuple[int, int, int], hidden: int, scale: float) -> None:
        super().__init__()
        c = shape[2]
        self.scale = scale
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Linear(64 * 16, hidden), nn.ReLU())

    def forward(self, obs: Tensor) -> Tensor:
        lead, (h, w, c) = obs.shape[:-3], obs.shape[-3:]
        x = obs.reshape(-1, h, w, c).permute(0, 3, 1, 2).float() * self.scale  # (N, C, H, W)
        return self.head(self.conv(x).flatten(1)).reshape(*lead, -1)


def composite_leaves(space: spaces.Space, path: tuple = ()) -> Iterator[tuple[tuple, spaces.Space]]:
    """(path, leaf space) of a Tuple / Dict space, depth first in the space's order."""
    if isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            yield from composite_leaves(sub, (*path, key))
    elif isinstance(space, spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            yield from composite_leaves(sub, (*path, i))
    else:
        yield path, space


def _leaf_shape(space: spaces.Space) -> tuple[int, ...]:
    return () if isinstance(space, spaces.Discrete) else tuple(space.shape)


class CompositeEncoder(nn.Module):
    """Tuple / Dict: split the packed vector into leaves, encode each, concatenate, project."""

    def __init__(self, space: spaces.Space, hidden: int) -> None:
        super().__init__()
        leaves = [leaf for _, leaf in composite_leaves(space)]
        self.shapes = [_leaf_shape(leaf) for leaf in leaves]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.parts = nn.ModuleList(make_encoder(leaf, hidden) for leaf in leaves)
        self.head = nn.Sequential(nn.Linear(hidden * len(leaves), hidden), nn.ReLU())

    def forward(self, obs: Tensor) -> Tensor:
        lead = obs.shape[:-1]
        chunks = obs.split(self.sizes, dim=-1)
        feats = [
            enc(x.reshape(*lead, *shape))
            for enc, x, shape in zip(self.parts, chunks, self.shapes, strict=True)
        ]
        return self.head(torch.cat(feats, dim=-1))


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


def _cell_values(space: spaces.Box) -> tuple[int, ...] | None:
    """Vocabulary per channel when ``space`` is a grid of small categories (an integer Box whose
    ``high`` is below 255, as agents/rl/vector_env.py declares minigrid's), else None (pixels)."""
    if not np.issubdtype(space.dtype, np.integer) or space.low.min() < 0:
        return None
    high = space.high.reshape(-1, space.shape[-1]).max(0)
    return None if high.max() >= 255 else tuple(int(v) + 1 for v in high)


def cell_grid_space(space: spaces.Box) -> spaces.Box:
    """Minigrid's (H, W, 3) image declares values up to 255; its cells are object, colour and
    state indices. Narrowing ``high`` to those vocabularies tells ``make_encoder`` it is a grid
    of categories (one-hot CNN), not pixels."""
    high = np.broadcast_to(np.array(MINIGRID_CELL_VALUES, dtype=np.uint8) - 1, space.shape)
    return spaces.Box(np.zeros(space.shape, np.uint8), high.copy(), dtype=np.uint8)


def packed_size(space: spaces.Space) -> int:
    """Length of an observation once flattened (Tuple / Dict: packed, see vector_env.py)."""
    return sum(int(np.prod(_leaf_shape(leaf))) for _, leaf in composite_leaves(space))


def make_encoder(space: spaces.Space, hidden: int) -> nn.Module:
    """The encoder for one env's observation space, or a clear error naming what is supported."""
    if isinstance(space, spaces.Dict) and {"image", "mission"} <= set(space.spaces):
        space = cell_grid_space(space.spaces["image"])  # minigrid: the image, as vector_env does
    if isinstance(space, spaces.Dict | spaces.Tuple):
        for _, leaf in composite_leaves(space):
            _check_leaf(leaf)
        return CompositeEncoder(space, hidden)
    _check_leaf(space)
    if isinstance(space, spaces.Discrete):
        return DiscreteEncoder(int(space.n), hidden, int(space.start))
    if isinstance(space, spaces.MultiDiscrete):
        return MultiDiscreteEncoder(space, hidden)
    if isinstance(space, spaces.MultiBinary):
        return _Flat(MLPEncoder(int(np.prod(space.shape)), hidden), len(space.shape))
    assert isinstance(space, spaces.Box)
    if len(space.shape) == 3:
        cells = _cell_values(space)
        if cells is not None:
            return GridEncoder(space.shape, hidden, cells)  # type: ignore[arg-type]
        scale = 1 / 255 if space.dtype == np.uint8 else 1.0
        return ImageEncoder(space.shape, hidden, scale)  # type: ignore[arg-type]
    if len(space.shape) == 1:
        return MLPEncoder(space.shape[0], hidden)
    return _Flat(MLPEncoder(int(np.prod(space.shape)), hidden), len(space.shape))


class _Flat(nn.Module):
    """Flatten the last ``dims`` dimensions, then ``inner``."""

    def __init__(self, inner: nn.Module, dims: int) -> None:
        super().__init__()
        self.inner, self.dims = inner, dims

    def forward(self, obs: Tensor) -> Tensor:
        return self.inner(obs.reshape(*obs.shape[: obs.dim() - self.dims], -1))


def space_words(space: object) -> str:
    """A space on one short line: its repr, or its kind and shape where the repr is long (a
    space with bounds per cell, or a 2-D ``nvec``, prints over several lines)."""
    text = " ".join(str(space).split())
    if "\n" not in str(space) and len(text) <= 80:
        return text
    shape = getattr(space, "shape", None)
    if shape is None:  # Text, Sequence, Graph: no shape to name
        return text[:77] + "..." if len(text) > 80 else text
    return f"{type(space).__name__} of shape {shape}"


def _check_leaf(space: Any) -> None:
    kinds = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
    if not isinstance(space, kinds):
        raise UnsupportedSpaceError(
            f"observation space {space_words(space)} is not supported; supported: {SUPPORTED}"
        )
