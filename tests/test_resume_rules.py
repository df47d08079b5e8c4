"""``--resume`` keeps what defines the run: a changed run-defining key is refused in one line
(exit 2) for ``mnemo train`` as for ``mnemo lm train``; a config file given with ``--resume``
supplies the keys that may change; LM data whose bytes changed under the same path is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_lm_resume import lm_train_args
from test_reliability import TINY

from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    args = ["train", "configs/recall_lstm.yaml", *TINY, "ppo.total_steps=128", f"run.dir={run}"]
    assert main(args) == 0
    return run


@pytest.mark.parametrize(
    "change",
    [
        "env.id=mnemo/Recall-D16-v0",
        "env.num_envs=16",
        "env.batched=false",
        "env.kwargs={delay: 4}",
        "core.name=gru",
        "core.d_model=32",
        "agent.encoder_hidden=32",
        "seed=7",
        "ppo.rollout_len=32",
        "ppo.bptt_len=16",
    ],
)
def test_a_changed_run_defining_key_is_refused(
    run: Path, change: str, capsys: pytest.CaptureFixture
) -> None:
    before = (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), change, "ppo.total_steps=256"]) == 2
    err = capsys.readouterr().err
    key = change.split("=")[0]
    assert err.count("\n") == 1 and err.startswith(f"error: cannot resume with {key}"), err
    assert (run / "checkpoints" / "last.pt").read_bytes() == before


def test_a_config_file_with_resume_gives_the_keys_that_may_change(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = load_checkpoint(run)["config"]
    cfg["ppo"]["total_steps"] = 256
    cfg["ppo"]["lr"] = 5e-4
    (tmp_path / "more.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "more.yaml"), "--resume", str(run)]) == 0
    done = load_checkpoint(run)
    assert done["step"] == 256 and done["config"]["ppo"]["lr"] == 5e-4
    cfg["seed"] = 99
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["train", str(tmp_path / "other.yaml"), "--resume", str(run)]) == 2
    assert "cannot resume with seed changed" in capsys.readouterr().err


def test_lm_data_changed_under_the_same_path_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    text = tmp_path / "book.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    run = tmp_path / "run"
    assert main(lm_train_args("lstm", run, f"data.path={text}", "train.steps=2")) == 0
    text.write_text("THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG. " * 40)  # same size
    capsys.readouterr()
    assert main(["lm", "train", "--resume", str(run), "train.steps=4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds other bytes than the run read" in err, err
    assert load_checkpoint(run)["step"] == 2


def test_a_resume_that_would_train_nothing_is_refused(
    tmp_path: Path, run: Path, capsys: pytest.CaptureFixture
) -> None:
    """A budget at or below the checkpoint's steps: one line naming the key, not a run that
    "finishes" at once and reports the checkpoint's numbers (an LM's bits per byte as nan)."""
    before = (run / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "ppo.total_steps=128"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ppo.total_steps=128: the checkpoint")
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    lm = tmp_path / "lm"
    assert main(lm_train_args("lstm", lm, "train.steps=2")) == 0
    capsys.readouterr()
    assert main(["lm", "train", "--resume", str(lm), "train.steps=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already trained 2 steps" in err and "train.steps" in err
