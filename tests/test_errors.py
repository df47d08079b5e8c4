"""agents/errors.py: user errors are one line and exit 2, divergence exits 1, Ctrl-C exits 130,
and anything else is a bug that keeps its traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import mnemo.agents.lm.train as lm_train
import mnemo.agents.rl.ppo as ppo
import mnemo.agents.rl.train as rl_train
from mnemo.agents import interrupt
from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.cli import main
from mnemo.agents.config_loader import ConfigError
from mnemo.agents.errors import (
    CheckpointError,
    Interrupted,
    NonFiniteError,
    UserError,
    exit_codes,
)
from mnemo.agents.lm.data import DataError

ROOT = Path(__file__).resolve().parents[1]


def test_one_family() -> None:
    for cls in (ConfigError, CheckpointError, DataError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError), cls
    assert ppo.NonFiniteError is lm_train.NonFiniteError is NonFiniteError
    assert not issubclass(NonFiniteError, UserError)
    assert rl_train.Interrupted is interrupt.Interrupted is Interrupted


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (UserError("give a flag\nsecond line"), 2, "error: give a flag"),
        (ConfigError("ppo.lr: expected a number"), 2, "error: ppo.lr: expected a number"),
        (NonFiniteError("non-finite loss at step 3"), 1, "error: non-finite loss at step 3"),
        (Interrupted("stopped at step 3; checkpoint: x"), 130, "interrupted: stopped at step 3"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_exit_codes_print_one_line(
    error: BaseException, code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def command(args: object) -> int:
        raise error

    assert exit_codes(command)(None) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line), err


@pytest.mark.parametrize(
    "error", [ValueError("our bug"), RuntimeError("our bug"), KeyError("our bug")]
)
def test_a_bug_is_not_a_user_error(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(rl_train, "train", broken)
    with pytest.raises(type(error), match="our bug"):
        main(["train", "configs/recall_lstm.yaml", "run.progress=false"])
    monkeypatch.setattr(lm_train, "train", broken)
    cfg = str(ROOT / "configs/lm_lstm.yaml")
    with pytest.raises(type(error), match="our bug"):
        main(["lm", "train", cfg, "run.progress=false"])


def test_a_bug_shows_its_traceback_from_the_command_line() -> None:
    code = (
        "import sys, mnemo.agents.rl.train as t\n"
        "def broken(*a, **k): raise ValueError('our bug')\n"
        "t.train = broken\n"
        "from mnemo.agents.cli import main\n"
        "sys.exit(main(['train', 'configs/recall_lstm.yaml']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ValueError: our bug" in proc.stderr
    assert "error: our bug" not in proc.stderr


def test_missing_and_unreadable_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable mnemo checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_a_second_ctrl_c_says_what_happened(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupt, "REPEAT_GRACE_S", -1.0)  # every repeat counts as a new one
    stop = interrupt.GracefulStop()
    stop._handle(2, None)
    with pytest.raises(KeyboardInterrupt, match="second Ctrl-C; the last checkpoint is kept"):
        stop._handle(2, None)
