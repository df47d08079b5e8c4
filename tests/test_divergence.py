"""Divergence (issue 18.5): non-finite settings refused at start, and loss, gradients, weights
and outputs checked before every optimizer step and checkpoint; one line naming the step and
the quantity, exit 1; a checkpoint that is written can always be resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_lm_resume import lm_train_args
from test_reliability import STEPS_PER_UPDATE, TINY

from mnemo.agents import divergence
from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.cli import main
from mnemo.agents.errors import NonFiniteError

ROOT = Path(__file__).resolve().parents[1]
TINY_RL = ["configs/recall_lstm.yaml", *TINY]
OPTIMIZER_STEPS_PER_UPDATE = 4 * 4  # epochs x minibatches of configs/base/recall.yaml
LM = str(ROOT / "configs/lm_lstm.yaml")


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["train", *TINY_RL, "ppo.lr=.inf"], "ppo.lr: expected a finite number, got inf"),
        (["train", *TINY_RL, "ppo.lr=1e999"], "ppo.lr: expected a finite number, got inf"),
        (["train", *TINY_RL, "ppo.max_grad_norm=.nan"], "ppo.max_grad_norm: expected a finite"),
        (["train", *TINY_RL, "ppo.max_grad_norm=0"], "ppo.max_grad_norm must be > 0"),
        (["train", *TINY_RL, "ppo.adam_eps=-1e-5"], "ppo.adam_eps must be > 0"),
        (["train", *TINY_RL, "ppo.ent_coef=-.inf"], "ppo.ent_coef: expected a finite number"),
        (["lm", "train", LM, "train.lr=.inf"], "train.lr: expected a finite number, got inf"),
        (["lm", "train", LM, "train.grad_clip=.nan"], "train.grad_clip: expected a finite"),
    ],
)
def test_non_finite_settings_are_refused_at_start(
    argv: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, f"run.dir={tmp_path / 'run'}"]) == 2
    assert one_line(capsys).startswith(f"error: {said}")
    assert not (tmp_path / "run").exists()


def test_a_huge_learning_rate_stops_at_the_first_update_without_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Adam moves every weight by ~lr: 1e30 makes the next minibatch's logits overflow.
    argv = ["train", *TINY_RL, "ppo.lr=1e30", "ppo.total_steps=1024", f"run.dir={tmp_path}"]
    assert main(argv) == 1
    line = one_line(capsys)
    assert line.startswith("error: non-finite loss (policy logits") and "another rank" not in line
    assert line.endswith(f"at step {STEPS_PER_UPDATE} (update 1); no checkpoint kept"), line
    assert not (tmp_path / "checkpoints" / "last.pt").exists()


def blow_up_after(monkeypatch: pytest.MonkeyPatch, optimizer: type, n_steps: int) -> None:
    """After the optimizer's ``n_steps``-th step, set every weight to 3e38: finite, but every
    matmul overflows, as when a run's weights grow without bound."""
    original, calls = optimizer.step, [0]

    def step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = original(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == n_steps:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(3e38)
        return out

    monkeypatch.setattr(optimizer, "step", step)


def test_ppo_never_checkpoints_weights_that_cannot_be_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blow_up_after(monkeypatch, torch.optim.Adam, 3 * OPTIMIZER_STEPS_PER_UPDATE)
    argv = ["train", *TINY_RL, "ppo.total_steps=1024", f"run.dir={tmp_path}"]
    assert main(argv) == 1
    line = one_line(capsys)
    assert line.startswith(
        f"error: non-finite policy output after update 3 (step {3 * STEPS_PER_UPDATE}): "
        "the weights grew too large"
    ), line
    assert line.endswith("; the last good checkpoint is kept")
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 2 * STEPS_PER_UPDATE
    monkeypatch.undo()
    assert main(["train", "--resume", str(tmp_path), "ppo.total_steps=512"]) == 0
    assert load_checkpoint(tmp_path)["step"] == 512


def test_lm_never_checkpoints_weights_that_cannot_be_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Checkpoints every 3 steps: the weights of step 6 fail the check before its checkpoint.
    blow_up_after(monkeypatch, torch.optim.AdamW, 6)
    assert main(lm_train_args("lstm", tmp_path)) == 1
    line = one_line(capsys)
    assert line == "error: non-finite loss at step 7; the last good checkpoint is kept", line
    assert load_checkpoint(tmp_path)["step"] == 3
    monkeypatch.undo()
    assert main(["lm", "train", "--resume", str(tmp_path)]) == 0
    assert load_checkpoint(tmp_path)["step"] == 8


def test_lm_divergence_before_any_checkpoint_says_none_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every weight at the first step's learning rate of 1e30 (AdamW moves each by ~lr).
    argv = lm_train_args("lstm", tmp_path, "train.lr=1e30", "train.warmup_steps=0")
    assert main(argv) == 1
    line = one_line(capsys)
    assert line.startswith("error: non-finite ") and line.endswith("; no checkpoint kept"), line
    assert "another rank" not in line


def test_weights_and_gradients_are_named_before_the_optimizer_step() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model(torch.ones(1, 3)).sum().backward()
    divergence.check_before_step(model, torch.tensor(1.0), "at step 7")  # all finite: passes
    with torch.no_grad():
        model[1].bias[0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"^non-finite weights \(1.bias\) at step 7$"):
        divergence.check_before_step(model, torch.tensor(1.0), "at step 7")
    model[0].weight.grad[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"^non-finite gradient \(of 0.weight\) at step 7$"):
        divergence.check_before_step(model, torch.tensor(float("inf")), "at step 7")


def test_a_single_process_never_blames_another_rank() -> None:
    assert divergence.named([]) == "unknown"
    assert divergence.named(["a", "b", "c", "d", "e"]) == "a, b, c (+2 more)"
