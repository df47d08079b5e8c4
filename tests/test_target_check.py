"""``ppo.target_check_episodes``: the target stops a run only if the current weights' greedy
policy also reaches it on validation seeds; the check leaves the run's random streams as they
were, so a run that checks and goes on is the run it would have been."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnemo.agents.errors import ConfigError
from mnemo.agents.rl import train as train_module
from mnemo.agents.rl.config import load_rl_config
from mnemo.agents.rl.evaluate import HELD_OUT_SEED_OFFSET, VALIDATION_SEED_OFFSET
from mnemo.agents.rl.train import train

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "env.id=mnemo/Recall-D8-v0",
    "env.kwargs.delay=2",
    "env.num_envs=8",
    "ppo.total_steps=512",
    "ppo.rollout_len=16",
    "ppo.bptt_len=16",
    "ppo.minibatches=2",
    "ppo.target_episodes=1",
    "run.progress=false",
    "run.print_every=0",
    "threads=1",
]


def config(tmp_path: Path, name: str, *extra: str):
    cfg = load_rl_config(
        str(ROOT / "configs/recall_lstm.yaml"), [*OVERRIDES, f"run.dir={tmp_path / name}", *extra]
    )
    return cfg


def checks(monkeypatch: pytest.MonkeyPatch, verdict: float) -> list[float]:
    """Run the real check, then answer ``verdict``; returns the real checks' success rates."""
    seen: list[float] = []
    original = train_module.PPOTrainer.validate

    def spy(self, scalars):
        seen.append(original(self, scalars))
        return verdict

    monkeypatch.setattr(train_module.PPOTrainer, "validate", spy)
    return seen


def test_a_failed_check_keeps_training_and_changes_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = train(config(tmp_path, "plain"))
    seen = checks(monkeypatch, 0.0)
    checked = train(
        config(tmp_path, "checked", "ppo.target_success=0.01", "ppo.target_check_episodes=8")
    )
    assert len(seen) == 512 // (8 * 16)  # the training criterion held at every update
    assert all(0.0 <= s <= 1.0 for s in seen)
    assert checked.steps_to_target is None and checked.steps == plain.steps
    a = torch.load(plain.run_dir / "checkpoints/last.pt", weights_only=False)["model"]
    b = torch.load(checked.run_dir / "checkpoints/last.pt", weights_only=False)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_a_passed_check_stops_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = checks(monkeypatch, 1.0)
    run = train(config(tmp_path, "run", "ppo.target_success=0.01", "ppo.target_check_episodes=8"))
    assert len(seen) == 1 and run.steps_to_target == run.steps == 8 * 16


def test_no_check_without_a_target_or_below_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = checks(monkeypatch, 1.0)
    train(config(tmp_path, "a", "ppo.target_check_episodes=8"))
    # a random policy never has all its episodes succeed: training success stays below 1.0
    train(config(tmp_path, "b", "ppo.target_success=1.0", "ppo.target_check_episodes=8"))
    assert seen == []


def test_validation_seeds_are_apart_and_a_negative_count_is_refused(tmp_path: Path) -> None:
    assert abs(VALIDATION_SEED_OFFSET - HELD_OUT_SEED_OFFSET) > 100_000
    with pytest.raises(ConfigError, match=r"ppo\.target_check_episodes must be >= 0"):
        config(tmp_path, "bad", "ppo.target_check_episodes=-1")
