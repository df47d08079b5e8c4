"""Opening a checkpoint runs no code from it (weights_only, and a restricted unpickler for
pickled envs); a damaged one is refused by its CRC-32; saves leave no stale temp files and
ordinary permissions."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reliability import TINY

from mnemo.agents.checkpoint import (
    load_checkpoint,
    rng_state,
    safe_unpickle,
    save_atomic,
    set_rng_state,
)
from mnemo.agents.cli import main
from mnemo.agents.errors import CheckpointError


class TouchesAFile:
    """What an attacker would put in a checkpoint: unpickling it creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny PPO run with gymnasium (pickled) envs."""
    run = tmp_path_factory.mktemp("run")
    args = ["train", "configs/recall_lstm.yaml", *TINY, "env.batched=false"]
    assert main([*args, "ppo.total_steps=128", f"run.dir={run}"]) == 0
    return run


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    ckpt = load_checkpoint(run)
    evil = tmp_path / "evil" / "checkpoints" / "last.pt"
    save_atomic({**ckpt, "extra": TouchesAFile(marker)}, evil)
    capsys.readouterr()
    assert main(["eval", str(evil), "--episodes", "1"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "not a readable mnemo checkpoint" in err and "nothing in it was run" in err
    assert main(["train", "--resume", str(evil.parent.parent)]) == 2
    assert "not a readable mnemo checkpoint" in one_line(capsys.readouterr().err)
    assert not marker.exists()


def test_a_crafted_env_state_is_refused_and_runs_nothing(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    ckpt = load_checkpoint(run)
    assert isinstance(ckpt["ranks"][0]["trainer"]["env"], bytes)  # pickled gymnasium envs
    ckpt["ranks"][0]["trainer"]["env"] = pickle.dumps(TouchesAFile(marker))
    save_atomic(ckpt, tmp_path / "evil" / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "evil"), "ppo.total_steps=256"]) == 2
    assert "env state holds io.open, which is not part of an env" in one_line(
        capsys.readouterr().err
    )
    assert not marker.exists()


def test_pickled_mnemo_envs_unpickle_safely(run: Path) -> None:
    envs = safe_unpickle(load_checkpoint(run)["ranks"][0]["trainer"]["env"])
    assert len(envs) == 8


def test_minigrid_envs_unpickle_but_their_other_functions_stay_refused() -> None:
    """A minigrid env holds its class's static ``_gen_mission`` (its mission space's
    ``mission_func``): allowed, so minigrid runs resume; a module function or an env class's
    ordinary method named the same way is still refused."""
    import gymnasium as gym
    from minigrid.envs.memory import MemoryEnv

    env = gym.make("MiniGrid-MemoryS7-v0")
    env.reset(seed=0)
    (back,) = safe_unpickle(pickle.dumps([env]))
    assert back.unwrapped.observation_space["mission"].mission_func is MemoryEnv._gen_mission

    class Evil:
        def __init__(self, func: object) -> None:
            self.func = func

        def __reduce__(self) -> tuple:
            return (self.func, ())

    for func in (gym.make, MemoryEnv.reset):  # a module function; a method that is not static
        with pytest.raises(CheckpointError, match="not part of an env"):
            safe_unpickle(pickle.dumps(Evil(func)))


def test_flipped_bytes_are_refused(run: Path, tmp_path: Path) -> None:
    data = bytearray((run / "checkpoints" / "last.pt").read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = bytes(b ^ 0xFF for b in data[middle : middle + 400])
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"is damaged: its record .* fails its CRC-32"):
        load_checkpoint(tmp_path / "bad.pt")


def test_a_killed_save_leaves_no_tmp_and_files_get_ordinary_permissions(tmp_path: Path) -> None:
    stale = tmp_path / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    save_atomic({"x": torch.zeros(2)}, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_rng_states_are_plain_data_and_round_trip(tmp_path: Path) -> None:
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal()  # a cached gaussian in numpy's state
    st = rng_state()
    save_atomic(st, tmp_path / "rng.pt")
    expected = (np.random.random(5), random.random(), torch.rand(3))
    np.random.seed(0)
    random.seed(0)
    torch.manual_seed(0)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (np.random.random(5), random.random(), torch.rand(3))
    assert np.array_equal(expected[0], got[0]) and expected[1] == got[1]
    assert torch.equal(expected[2], got[2])


def test_checkpoints_written_before_still_load(tmp_path: Path) -> None:
    """Older checkpoints hold numpy's RNG tuple (an ndarray): those numpy types alone are
    allowed when reading."""
    np.random.seed(5)
    state = np.random.get_state()
    save_atomic({"rng": {"numpy": state}}, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")["rng"]["numpy"]
    assert np.array_equal(loaded[1], state[1]) and loaded[2] == state[2]
    np.random.set_state(loaded)
