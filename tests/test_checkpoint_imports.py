"""A checkpoint never chooses code to run: pickled env state goes through the safe unpickler,
and an env.id of the form ``package:EnvId`` read from a checkpoint imports ``package`` only
when the user says so (``--import package``) or typed the id themselves."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
from test_checkpoint_safety import TouchesAFile, one_line
from test_reliability import TINY

from mnemo.agents.checkpoint import load_checkpoint, save_atomic
from mnemo.agents.cli import main
from mnemo.agents.errors import CheckpointError
from mnemo.agents.rl.vector_env import GymVectorEnv

PROBE = "mnemo_import_probe"


def test_env_state_is_unpickled_safely(tmp_path: Path) -> None:
    env = GymVectorEnv("mnemo/Recall-D8-v0", 2, "cpu")
    env.reset(seed=0)
    state = env.get_state()
    env.set_state(state)  # its own envs: accepted
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError, match=r"io\.open, which is not part of an env"):
        env.set_state(pickle.dumps(TouchesAFile(marker)))
    assert not marker.exists()


@pytest.fixture
def probe_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A run whose env.id names an installed module that, imported, creates a marker file."""
    run = tmp_path / "run"
    assert (
        main(["train", "configs/recall_lstm.yaml", *TINY, "ppo.total_steps=128", f"run.dir={run}"])
        == 0
    )
    ckpt = load_checkpoint(run)
    ckpt["config"]["env"]["id"] = f"{PROBE}:Probe-v0"
    save_atomic(ckpt, run / "checkpoints" / "last.pt")
    marker = tmp_path / "imported"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / f"{PROBE}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, PROBE, raising=False)
    return run, marker


def test_a_checkpoint_alone_imports_no_module(
    probe_checkpoint: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, marker = probe_checkpoint
    capsys.readouterr()
    for argv in (["eval", str(run), "--episodes", "1"], ["train", "--resume", str(run)]):
        assert main(argv) == 2
        line = one_line(capsys.readouterr().err)
        assert f"would import the module {PROBE!r}" in line and f"--import {PROBE}" in line
        assert not marker.exists()


def test_import_when_the_user_says_so(
    probe_checkpoint: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, marker = probe_checkpoint
    capsys.readouterr()
    # Imported as asked; the module registers no env, which is then said in one line.
    assert main(["eval", str(run), "--episodes", "1", "--import", PROBE]) == 2
    assert "unknown env" in one_line(capsys.readouterr().err)
    assert marker.exists()
    sys.modules.pop(PROBE, None)


class RunsACommand:
    """A pickled call of ``subprocess.Popen``: a class, from a module torch has imported."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import subprocess

        return (subprocess.Popen, (["touch", str(self.marker)],))


def test_an_already_imported_module_named_by_a_checkpoint_is_not_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # env.id 'subprocess:CartPole-v1' resolves (subprocess is imported, CartPole registered),
    # but subprocess's classes must not become acceptable in the pickled envs.
    assert "subprocess" in sys.modules
    run, marker = tmp_path / "run", tmp_path / "pwned"
    argv = ["train", "configs/recall_lstm.yaml", *TINY, "env.id=CartPole-v1", "env.batched=false"]
    assert main([*argv, "ppo.total_steps=128", f"run.dir={run}"]) == 0
    ckpt = load_checkpoint(run)
    ckpt["config"]["env"]["id"] = "subprocess:CartPole-v1"
    ckpt["ranks"][0]["trainer"]["env"] = pickle.dumps(RunsACommand(marker))
    save_atomic(ckpt, run / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "ppo.total_steps=256"]) == 2
    assert "subprocess.Popen, which is not part of an env" in one_line(capsys.readouterr().err)
    assert not marker.exists()
