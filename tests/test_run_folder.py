"""A run folder is its run's own: a fresh ``mnemo train`` / ``mnemo lm train`` into a folder
that holds a checkpoint is refused in one line (``--resume`` or ``run.overwrite=true``), and a
second process writing the same folder is refused by its lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mnemo.agents.cli import main
from mnemo.agents.run_loop import lock_run_dir

ROOT = Path(__file__).resolve().parents[1]
RL = ["env.num_envs=8", "ppo.rollout_len=16", "ppo.bptt_len=8", "ppo.total_steps=128"]
RL += ["run.progress=false", "threads=1"]
LM = ["core.d_model=16", "train.steps=2", "train.batch_size=2", "train.segment_len=16"]
LM += ["train.eval_every=2", "train.eval_bytes=200", "train.sample_bytes=0"]
LM += ["data.synthetic.docs=20", "data.synthetic.val_docs=3", "run.progress=false", "threads=1"]


def rl_args(run: Path, *extra: str) -> list[str]:
    return ["train", str(ROOT / "configs/recall_lstm.yaml"), f"run.dir={run}", *RL, *extra]


def lm_args(run: Path, *extra: str) -> list[str]:
    return ["lm", "train", str(ROOT / "configs/lm_lstm.yaml"), f"run.dir={run}", *LM, *extra]


@pytest.mark.parametrize("args", [rl_args, lm_args], ids=["train", "lm-train"])
def test_fresh_run_over_a_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args
) -> None:
    run = tmp_path / "run"
    assert main(args(run)) == 0
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    capsys.readouterr()
    assert main(args(run)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume" in err and "run.overwrite=true" in err, err
    assert last.read_bytes() == before  # untouched
    assert main(args(run, "run.overwrite=true")) == 0  # on purpose: allowed


@pytest.mark.parametrize("args", [rl_args, lm_args], ids=["train", "lm-train"])
def test_a_second_process_in_the_same_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args
) -> None:
    run = tmp_path / "run"
    fd = lock_run_dir(run)  # another process training there (a separate open file: its lock)
    try:
        assert main(args(run)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "in use" in err and ".lock" in err, err
        assert not (run / "checkpoints").exists()
    finally:
        os.close(fd)
    assert main(args(run)) == 0  # lock released: the folder is free again


def test_an_overwritten_run_shows_only_the_new_run_in_tensorboard(tmp_path: Path) -> None:
    """run.overwrite=true starts over: TensorBoard hides the old run's events in the folder
    (they stay on disk), so its curves do not interleave with the new run's."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert main(rl_args(run, "ppo.total_steps=512")) == 0
    assert main(rl_args(run, "run.overwrite=true", "seed=1")) == 0
    events = EventAccumulator(str(run))
    events.Reload()
    assert [e.step for e in events.Tensors("losses/policy")] == [128]
    assert len(events.Tensors("config/text_summary")) == 1
