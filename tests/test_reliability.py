"""Resume exactly, stop cleanly on Ctrl-C, survive kill -9, refuse NaN, stay deterministic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.cli import main
from mnemo.agents.rl.config import load_rl_config
from mnemo.agents.rl.ppo import PPO, NonFiniteError
from mnemo.agents.rl.train import train

TINY = [
    "env.id=mnemo/Recall-D8-v0",
    "env.num_envs=8",
    "ppo.rollout_len=16",
    "ppo.bptt_len=8",
    "run.progress=false",
    "run.checkpoint_every=1",
    "threads=1",
]
STEPS_PER_UPDATE = 8 * 16


def params(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run)["model"]


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("batched", ["true", "false"])
def test_resume_is_bit_identical(tmp_path: Path, batched: str) -> None:
    full, half = tmp_path / "full", tmp_path / "half"
    extra = [*TINY, f"env.batched={batched}"]
    assert (
        main(
            ["train", "configs/recall_lstm.yaml", *extra, "ppo.total_steps=768", f"run.dir={full}"]
        )
        == 0
    )
    assert (
        main(
            ["train", "configs/recall_lstm.yaml", *extra, "ppo.total_steps=384", f"run.dir={half}"]
        )
        == 0
    )
    assert load_checkpoint(half)["step"] == 384
    assert main(["train", "--resume", str(half), "ppo.total_steps=768"]) == 0
    assert load_checkpoint(half)["step"] == 768
    assert_same(params(full), params(half))
    opt_a, opt_b = load_checkpoint(full)["optimizer"], load_checkpoint(half)["optimizer"]
    for k in opt_a["state"]:
        assert torch.equal(opt_a["state"][k]["exp_avg"], opt_b["state"][k]["exp_avg"])


def test_same_seed_same_result(tmp_path: Path) -> None:
    for name in ("a", "b"):
        cfg = load_rl_config(
            "configs/recall_lstm.yaml", [*TINY, "ppo.total_steps=256", f"run.dir={tmp_path / name}"]
        )
        train(cfg)
    assert_same(params(tmp_path / "a"), params(tmp_path / "b"))


def test_nan_stops_with_step_and_keeps_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = PPO.update

    def poisoned(self: PPO, ro, last_value):  # type: ignore[no-untyped-def]
        if self.update_idx == 2:
            with torch.no_grad():
                next(self.model.value.parameters()).fill_(float("nan"))
        return original(self, ro, last_value)

    monkeypatch.setattr(PPO, "update", poisoned)
    cfg = load_rl_config(
        "configs/recall_lstm.yaml", [*TINY, "ppo.total_steps=1024", f"run.dir={tmp_path}"]
    )
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(.*value.*\) at step 384"):
        train(cfg)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["step"] == 256
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_non_finite_gradient_stops_before_the_optimizer_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A finite loss whose gradient is inf: the weights must not take that step.
    original = torch.nn.utils.clip_grad_norm_

    def poisoned(params, *args, **kwargs):  # type: ignore[no-untyped-def]
        params = list(params)
        params[0].grad.fill_(float("inf"))
        return original(params, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", poisoned)
    cfg = load_rl_config(
        "configs/recall_lstm.yaml", [*TINY, "ppo.total_steps=1024", f"run.dir={tmp_path}"]
    )
    with pytest.raises(
        NonFiniteError, match=r"non-finite gradient \(of .+\) at step 128 \(update 1\)"
    ):
        train(cfg)


def spawn_train(run: Path, steps: int) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "mnemo.agents.cli",
        "train",
        "configs/recall_lstm.yaml",
        *TINY,
        f"ppo.total_steps={steps}",
        f"run.dir={run}",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(run: Path, proc: subprocess.Popen, min_step: int = 1) -> None:
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if last.exists():
            try:
                if load_checkpoint(last)["step"] >= min_step:
                    return
            except ValueError:
                pass  # never half-written, but the rename may race our read of the folder
        time.sleep(0.2)
    raise TimeoutError("no checkpoint")


def test_ctrl_c_writes_a_checkpoint_then_resume_finishes(tmp_path: Path) -> None:
    proc = spawn_train(tmp_path, 10_000_000)
    wait_for_checkpoint(tmp_path, proc, 2 * STEPS_PER_UPDATE)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: stopped at step" in err and "Traceback" not in err
    step = load_checkpoint(tmp_path)["step"]
    assert step >= 2 * STEPS_PER_UPDATE
    assert main(["train", "--resume", str(tmp_path), f"ppo.total_steps={step + 256}"]) == 0
    assert load_checkpoint(tmp_path)["step"] == step + 256


def test_kill_9_loses_at_most_one_interval(tmp_path: Path) -> None:
    proc = spawn_train(tmp_path, 10_000_000)
    wait_for_checkpoint(tmp_path, proc, 3 * STEPS_PER_UPDATE)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    ckpt = load_checkpoint(tmp_path)  # intact: written atomically
    assert ckpt["step"] >= 3 * STEPS_PER_UPDATE
    assert main(["train", "--resume", str(tmp_path), f"ppo.total_steps={ckpt['step'] + 128}"]) == 0
