"""``mnemo lm train``: resume bit-identically, stop cleanly on Ctrl-C, refuse NaN in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mnemo.agents.lm.train as lm_train
from mnemo.agents.checkpoint import load_checkpoint, save_atomic
from mnemo.agents.cli import main

ROOT = Path(__file__).resolve().parents[1]
# A corpus of 7 segments per pass: 8 steps of 2 segments wrap around it, and step 4 stops
# mid-pass, inside documents, so the carried state matters.
TINY = [
    "core.d_model=16",
    "train.steps=8",
    "train.batch_size=2",
    "train.segment_len=16",
    "train.detach_every=2",
    "train.warmup_steps=2",
    "train.eval_every=3",
    "train.eval_bytes=200",
    "train.sample_bytes=0",
    "data.synthetic.docs=4",
    "data.synthetic.val_docs=2",
    "data.synthetic.rounds=2",
    "data.synthetic.gap_max=10",
    "run.log_every=1",
    "run.checkpoint_every=3",
    "run.progress=false",
    "threads=1",
]
CORES = {
    "lstm": [],
    "gtrxl": ["core.n_layers=1", "core.n_heads=2", "core.mem_len=8"],
    "titans_mal": ["core.n_heads=2", "core.chunk_size=8", "core.window=8", "core.n_layers=1"],
}


def lm_train_args(core: str, run: Path, *extra: str) -> list[str]:
    cfg = str(ROOT / f"configs/lm_{core}.yaml")
    return ["lm", "train", cfg, f"run.dir={run}", *TINY, *CORES[core], *extra]


def interrupt_at(monkeypatch: pytest.MonkeyPatch, segment_call: int) -> None:
    """Send this process SIGINT during the given segment_loss call, as Ctrl-C would."""
    original, calls = lm_train.segment_loss, [0]

    def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += torch.is_grad_enabled()  # training segments, not the checkpoint's check
        if calls[0] == segment_call:
            signal.raise_signal(signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(lm_train, "segment_loss", wrapped)


def assert_same_tensors(a: object, b: object, where: str = "") -> None:
    """``a`` and ``b`` are equal to the bit: tensors, arrays and plain values in nested
    dicts, lists and tuples (RNG states, env states, optimizer states)."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("core", list(CORES))
def test_interrupted_then_resumed_is_bit_identical(
    core: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    full, half = tmp_path / "full", tmp_path / "half"
    assert main(lm_train_args(core, full)) == 0
    with monkeypatch.context() as m:
        interrupt_at(m, 7)  # during step 4 (2 segments a step): it finishes, then stops
        assert main(lm_train_args(core, half)) == 130
    assert "interrupted: stopped at step 4" in capsys.readouterr().err
    assert load_checkpoint(half)["step"] == 4
    assert main(["lm", "train", "--resume", str(half)]) == 0
    a, b = load_checkpoint(full), load_checkpoint(half)
    assert b["step"] == 8 and b["segments"] == a["segments"] == 16
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["optimizer"]["state"], b["optimizer"]["state"], "optimizer")
    assert_same_tensors(a["ranks"][0]["state"], b["ranks"][0]["state"], "carried state")
    acc = EventAccumulator(str(half)).Reload()
    assert [e.step for e in acc.Scalars("train/bits_per_byte")] == list(range(1, 9))


def test_data_position_wraps_around_the_streams() -> None:
    from mnemo.agents.lm.config import load_lm_config
    from mnemo.agents.lm.data import training_streams

    cfg = load_lm_config(str(ROOT / "configs/lm_lstm.yaml"), TINY)
    train_corpus, _ = lm_train.load_corpora(cfg.data)
    streams = training_streams(train_corpus, 2, 16)
    assert streams.n_segments(16) < 16  # 8 steps x 2 segments read some segments twice
    assert torch.equal(streams.segment(0, 16).x, next(iter(streams.segments(16))).x)


@pytest.mark.parametrize(
    ("quantity", "named"), [("loss", "loss"), ("aux", "aux loss"), ("state", "core state")]
)
def test_non_finite_stops_keeping_the_last_good_checkpoint(
    quantity: str,
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    original, calls = lm_train.segment_loss, [0]

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        nats, aux, state = original(*args, **kwargs)
        calls[0] += torch.is_grad_enabled()  # training segments, not the checkpoint's check
        if calls[0] == 10:  # step 5's last segment; step 3's checkpoint is the last good one
            nan = torch.tensor(float("nan"))
            if quantity == "loss":
                nats = nats + nan
            elif quantity == "aux":
                aux = aux + nan
            else:
                state = tuple(s + nan for s in state)
        return nats, aux, state

    monkeypatch.setattr(lm_train, "segment_loss", poisoned)
    assert main(lm_train_args("lstm", tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: non-finite {named} at step 5; the last good checkpoint is kept"]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_resume_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(lm_train_args("lstm", run, "train.steps=3")) == 0
    capsys.readouterr()
    two_ranks = load_checkpoint(run)
    two_ranks["ranks"] = two_ranks["ranks"] * 2
    save_atomic(two_ranks, tmp_path / "two" / "checkpoints" / "last.pt")
    save_atomic({"model": {}, "config": {}, "step": 0}, tmp_path / "ppo.pt")
    cases = [
        (["lm", "train", "--resume", str(tmp_path / "nope")], "checkpoint not found"),
        (["lm", "train", "--resume", str(run), "core.d_model=32"], "core.d_model changed"),
        (["lm", "train", "--resume", str(tmp_path / "ppo.pt")], "not a language-model"),
        (
            ["lm", "train", "--resume", str(tmp_path / "two"), "train.steps=4"],
            "torchrun --nproc_per_node 2",
        ),
        (["lm", "train"], "give a config file"),
        (["train", "--resume", str(run)], "mnemo lm train --resume"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    # A config file may be given with --resume; it must agree with the checkpoint.
    cfg = str(ROOT / "configs/lm_lstm.yaml")
    assert main(["lm", "train", cfg, *TINY, "train.steps=4", "--resume", str(run)]) == 0
    assert load_checkpoint(run)["step"] == 4


def spawn_until_checkpoint(run: Path) -> subprocess.Popen:
    """A long ``mnemo lm train`` in a subprocess, returned once its first checkpoint exists."""
    args = lm_train_args("lstm", run, "train.steps=1000000", "run.checkpoint_every=1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnemo.agents.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last, deadline = run / "checkpoints" / "last.pt", time.time() + 60
    while not last.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc


def test_kill_9_leaves_a_whole_checkpoint_that_resumes(tmp_path: Path) -> None:
    proc = spawn_until_checkpoint(tmp_path)
    time.sleep(0.5)  # several more checkpoints, so the kill likely lands mid-write
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    step = load_checkpoint(tmp_path)["step"]  # intact: written atomically
    assert step >= 1
    assert main(["lm", "train", "--resume", str(tmp_path), f"train.steps={step + 2}"]) == 0
    assert load_checkpoint(tmp_path)["step"] == step + 2


def test_ctrl_c_checkpoints_and_exits_130(tmp_path: Path) -> None:
    proc = spawn_until_checkpoint(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: stopped at step" in err and "Traceback" not in err
    step = load_checkpoint(tmp_path)["step"]
    assert f"stopped at step {step};" in err
