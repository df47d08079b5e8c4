"""``run.init_from``: a run starts from another run's weights (warm start, curriculum), and a
checkpoint whose weights do not fit is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.errors import CheckpointError
from mnemo.agents.rl.config import load_rl_config
from mnemo.agents.rl.train import PPOTrainer, train

TINY = ["env.num_envs=8", "ppo.rollout_len=16", "ppo.bptt_len=16", "ppo.minibatches=2"]
TINY += ["run.progress=false", "ppo.total_steps=128", "env.id=mnemo/Recall-D8-v0"]


def test_init_from_takes_the_weights_only(tmp_path: Path) -> None:
    train(load_rl_config("configs/recall_lstm.yaml", [*TINY, f"run.dir={tmp_path / 'a'}"]))
    done = load_checkpoint(tmp_path / "a")["model"]
    # A longer delay: a curriculum step keeps the weights, nothing else.
    cfg = load_rl_config(
        "configs/recall_lstm.yaml",
        [*TINY, "env.id=mnemo/Recall-D16-v0", f"run.init_from={tmp_path / 'a'}"],
    )
    trainer = PPOTrainer(cfg, None, None)
    for k, v in trainer.ppo.model.state_dict().items():
        assert torch.equal(v, done[k]), k
    assert trainer.ppo.global_step == 0


def test_init_from_a_model_that_does_not_fit(tmp_path: Path) -> None:
    train(load_rl_config("configs/recall_lstm.yaml", [*TINY, f"run.dir={tmp_path / 'a'}"]))
    cfg = load_rl_config(
        "configs/recall_lstm.yaml", [*TINY, "core.d_model=32", f"run.init_from={tmp_path / 'a'}"]
    )
    with pytest.raises(CheckpointError, match="weights do not fit this model"):
        PPOTrainer(cfg, None, None)
