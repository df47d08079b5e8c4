"""SIGTERM and SIGHUP (``timeout``, ``docker stop``, SLURM pre-emption, a closed terminal) stop
``mnemo train`` and ``mnemo lm train`` as Ctrl-C does: the update in flight finishes, a
checkpoint is written, one line names the signal and the exit code is 128 + its number."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from test_lm_resume import spawn_until_checkpoint
from test_reliability import STEPS_PER_UPDATE, spawn_train, wait_for_checkpoint

from mnemo.agents import interrupt
from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.errors import Interrupted, exit_codes
from mnemo.agents.interrupt import GracefulStop


def assert_stopped_by(proc: subprocess.Popen, run: Path, signum: int, name: str) -> None:
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "Traceback" not in err, err
    step = load_checkpoint(run)["step"]
    assert lines[0].startswith(f"interrupted: stopped at step {step}; checkpoint: "), lines
    assert lines[0].endswith(f"({name})"), lines


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")]
)
def test_train_checkpoints_and_exits_128_plus_signal(
    tmp_path: Path, signum: int, name: str
) -> None:
    proc = spawn_train(tmp_path, 10_000_000)
    wait_for_checkpoint(tmp_path, proc, STEPS_PER_UPDATE)
    assert_stopped_by(proc, tmp_path, signum, name)


def test_lm_train_checkpoints_and_exits_143_on_sigterm(tmp_path: Path) -> None:
    proc = spawn_until_checkpoint(tmp_path)
    assert_stopped_by(proc, tmp_path, signal.SIGTERM, "SIGTERM")


def test_a_second_signal_stops_at_once_and_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interrupt, "REPEAT_GRACE_S", -1.0)
    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM
        with pytest.raises(Interrupted, match="second SIGHUP; the last checkpoint") as e:
            signal.raise_signal(signal.SIGHUP)
    assert e.value.signum == signal.SIGHUP
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers put back


def test_sigterm_outside_the_loop_is_one_line_and_143(capsys: pytest.CaptureFixture) -> None:
    @exit_codes
    def command(args: object) -> int:
        signal.raise_signal(signal.SIGTERM)  # e.g. while envs are built or a run is evaluated
        return 0

    assert command(None) == 143
    assert capsys.readouterr().err == "interrupted: stopped by SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
