"""Learning claims of the Transformer-XL family, and the reconstruction head they may use.

Slow tests (``-m slow``) train PPO on the recall task: the cue can only be recalled through the
core's memory, because the delay is longer than the training segment (``ppo.bptt_len``) and,
for the controls, longer than what the memory reaches. Measured on this 2-core machine under
load; wall times in the report of each test's docstring.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents.config import load_train_config
from agents.ppo import PPO
from agents.train import train

CHANCE = 0.25


def run(tmp_path: Path, config: str, *overrides: str):
    torch.set_num_threads(1)
    cfg = load_train_config(
        config, [f"run.dir={tmp_path / 'run'}", "run.progress=false", *overrides]
    )
    return train(cfg)


def test_reconstruction_head_adds_a_loss(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = load_train_config(
        "configs/recall_gtrxl.yaml",
        [
            "env.num_envs=4",
            "ppo.rollout_len=16",
            "ppo.minibatches=1",
            "ppo.epochs=1",
            "agent.recon_coef=0.5",
            f"run.dir={tmp_path}",
        ],
    )
    ppo = PPO(cfg)
    assert ppo.model.recon is not None
    logs = ppo.iterate()
    assert logs["losses/reconstruction"] > 0
    off = PPO(load_train_config("configs/recall_gtrxl.yaml", ["env.num_envs=4"]))
    assert off.model.recon is None  # off by default
