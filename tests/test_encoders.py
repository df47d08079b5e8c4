"""The grid encoder's one-hot cells: minigrid's vocabularies, every cell value seen apart."""

from __future__ import annotations

import pytest
import torch
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

from mnemo.agents.rl.encoders import MINIGRID_CELL_VALUES, GridEncoder, UnsupportedSpaceError


def test_minigrid_vocabularies_match_minigrid() -> None:
    assert (len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX)) == MINIGRID_CELL_VALUES


def test_one_hot_cells_tell_values_apart_and_clamp_beyond() -> None:
    torch.manual_seed(0)
    enc = GridEncoder((7, 7, 3), 32)
    obs = torch.zeros(2, 5, 7, 7, 3, dtype=torch.uint8)
    feats = {}
    for colour in range(7):  # 6 colours, then one beyond the vocabulary
        o = obs.clone()
        o[..., 3, 3, 1] = colour
        feats[colour] = enc(o)
    assert feats[0].shape == (2, 5, 32)
    assert all(not torch.equal(feats[a], feats[b]) for a in range(6) for b in range(a))
    assert torch.equal(feats[5], feats[6])  # beyond the vocabulary: the last slot


def test_vocabularies_must_match_channels() -> None:
    with pytest.raises(UnsupportedSpaceError, match="2 cell vocabularies for 3 channels"):
        GridEncoder((7, 7, 3), 32, cell_values=(4, 4))
