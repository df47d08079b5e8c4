"""Learning, not just running: memory solves recall, the memoryless control cannot.

Seeds are fixed to ones measured as representative (NOTES: steps-to-solve vary ~4x across seeds);
LSTM at delay 16 solved seeds 0-3 in 0.8-1.4M steps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnemo.agents.rl.config import load_rl_config
from mnemo.agents.rl.train import train


def run(tmp_path: Path, *overrides: str):
    torch.set_num_threads(1)
    cfg = load_rl_config(
        "configs/recall_lstm.yaml",
        [f"run.dir={tmp_path / 'run'}", "run.progress=false", *overrides],
    )
    return train(cfg)


def test_lstm_solves_recall_d16(tmp_path: Path) -> None:
    res = run(tmp_path, "seed=1", "ppo.total_steps=2000000", "ppo.target_success=0.9")
    assert res.steps_to_target is not None, f"LSTM stuck at {res.final_success:.2f}"
    assert res.final_success >= 0.9


def test_memoryless_stays_at_chance(tmp_path: Path) -> None:
    res = run(tmp_path, "seed=1", "core.name=none", "ppo.total_steps=400000")
    chance = 0.25
    recent = [s for _, s in res.history[-5:]]
    assert max(recent) <= chance + 0.1, recent


@pytest.mark.slow
def test_gru_solves_recall_d64(tmp_path: Path) -> None:
    # configs/recall_gru_d64.yaml: seeds 0-3 reached 0.9 at 1.7, 2.7, 1.4, 3.9M steps;
    # seed 0 takes ~67 s on a quiet 2-core CPU.
    torch.set_num_threads(1)
    cfg = load_rl_config(
        "configs/recall_gru_d64.yaml",
        [f"run.dir={tmp_path / 'run'}", "run.progress=false", "seed=0", "ppo.target_success=0.9"],
    )
    res = train(cfg)
    assert res.steps_to_target is not None, f"GRU stuck at {res.final_success:.2f}"


@pytest.mark.slow
def test_lstm_solves_recall_d256(tmp_path: Path) -> None:
    # configs/recall_d256_lstm.yaml (chrono init, one-episode windows): seed 1 reached 0.9 at
    # 16.0M steps (566 s while other runs shared the CPU; ~48k steps/s on a quiet one), seed 0 at
    # 13.9M in an exploratory run of the same algorithm.
    torch.set_num_threads(1)
    cfg = load_rl_config(
        "configs/recall_d256_lstm.yaml",
        [f"run.dir={tmp_path / 'run'}", "run.progress=false", "seed=1"],
    )
    res = train(cfg)
    assert res.steps_to_target is not None, f"LSTM stuck at {res.final_success:.2f}"
