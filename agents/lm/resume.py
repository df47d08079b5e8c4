"""Resuming ``mnemo lm train`` exactly: what a checkpoint holds and which config changes a
resume may make.

A checkpoint holds the weights, the optimizer, the step, the number of segments read so far
(the data position: segment ``i`` of a run is always segment ``i % n_segments`` of the
streams) and, for every data-parallel rank, the core state carried into the next segment, the
RNG states and the unlogged training loss. Continuing from it gives the same weights, to the
bit, as never stopping.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from mnemo.agents import checkpoint as checkpoint_rules
from mnemo.agents.checkpoint import (
    LM_KIND,
    check_head,
    load_checkpoint,
    load_weights,
    rng_state,
    set_rng_state,
)
from mnemo.agents.config_loader import apply_overrides, from_dict, to_dict
from mnemo.agents.errors import CheckpointError
from mnemo.agents.lm.config import LMConfig, check_core, load_lm_config
from mnemo.agents.lm.data import DataError
from mnemo.memory.base import State, tree_map

KIND = LM_KIND
FROZEN = ("data", "core", "train.batch_size", "train.segment_len", "seed")
"""Config keys a resume must keep: they fix the model's shapes or which bytes come next."""


class Position(NamedTuple):
    """Where a run stands: what the training loop needs besides weights and optimizer."""

    step: int
    segments: int
    """Segments read so far by each rank."""
    state: State
    """This rank's core state, carried into the next segment."""
    log_nats: float
    """Training loss summed since the last logged step, and how many steps that is."""
    log_n: int


def load_lm_checkpoint(path: str | Path, use_instead: str = "mnemo eval") -> dict[str, Any]:
    """A checkpoint written by ``mnemo lm train`` (a file or a run folder); an RL one is
    refused in one line naming ``use_instead``, the command for it."""
    ckpt = load_checkpoint(path)
    check_head(ckpt, path, lm=True, use_instead=use_instead)
    return ckpt


def check_frozen(saved: dict[str, Any], cfg: LMConfig) -> None:
    """Fail in one line if ``cfg`` changes a FROZEN key of the checkpoint's config."""
    checkpoint_rules.check_frozen(saved, to_dict(cfg), FROZEN, to_dict(LMConfig()))


def resume_config(ckpt: dict[str, Any], path: str | None, overrides: list[str]) -> LMConfig:
    """The config to continue ``ckpt`` with: the YAML at ``path`` if given, else the
    checkpoint's own, plus ``overrides`` (e.g. ``train.steps=4000``)."""
    if "ranks" not in ckpt:
        raise CheckpointError("this checkpoint predates resumable LM runs (no data position saved)")
    if path is not None:
        cfg = load_lm_config(path, overrides)
    else:
        cfg = from_dict(LMConfig, apply_overrides(copy.deepcopy(ckpt["config"]), overrides))
        check_core(cfg.core.name, cfg.core.options)
    check_frozen(ckpt["config"], cfg)
    return cfg


def checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: LMConfig,
    pos: Position,
    data: str | None = None,
) -> dict[str, Any]:
    """What every rank shares (rank 0 writes it); ``ranks`` is added from ``rank_state``.
    ``data`` is the training corpus's ``fingerprint()``."""
    return {
        "data_fingerprint": data,
        "kind": KIND,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "config": to_dict(cfg),
        "step": pos.step,
        "segments": pos.segments,
    }


def rank_state(pos: Position, device: torch.device) -> dict[str, Any]:
    """What differs between data-parallel ranks."""
    return {"state": pos.state, "rng": rng_state(device), "log": [pos.log_nats, pos.log_n]}


def restore(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ckpt: dict[str, Any],
    mine: dict[str, Any],
    device: torch.device,
    data: str | None = None,
) -> Position:
    """Load weights, optimizer and this rank's RNG into place; returns where to go on from.

    ``data`` is the training corpus's ``fingerprint()``: a resume must read the same bytes.
    """
    saved = ckpt.get("data_fingerprint")
    if saved is not None and data is not None and saved != data:
        raise DataError(
            f"cannot resume: data.path {ckpt['config']['data']['path']!r} holds other bytes than "
            f"the run read (checkpoint: {saved}; now: {data})"
        )
    load_weights(model, ckpt["model"], "the checkpoint")
    optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(mine["rng"], device)
    state = tree_map(lambda t: t.to(device), mine["state"])
    log_nats, log_n = mine["log"]
    return Position(ckpt["step"], ckpt["segments"], state, log_nats, log_n)
