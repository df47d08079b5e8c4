"""Any gymnasium env: ``package:EnvId`` ids, every standard observation space, success that is
"not available" rather than a false 0, and PPO's bootstrap, minibatch and seed details."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnemo.agents.cli import main
from mnemo.agents.config_loader import ConfigError
from mnemo.agents.rl.config import load_rl_config
from mnemo.agents.rl.evaluate import evaluate
from mnemo.agents.rl.ppo import PPO
from mnemo.agents.rl.vector_env import GymVectorEnv

KINDS = ["Box", "Box2d", "Image", "Discrete", "MultiDiscrete", "MultiBinary", "Tuple", "Dict"]
SMALL = [
    "env.num_envs=2",
    "ppo.rollout_len=8",
    "ppo.bptt_len=4",
    "ppo.minibatches=2",
    "ppo.epochs=1",
    "core.name=gru",
    "core.d_model=16",
    "agent.encoder_hidden=16",
    "run.progress=false",
]


def _cfg(env_id: str, *extra: str):
    return load_rl_config(None, [f"env.id={env_id}", *SMALL, *extra])


@pytest.mark.parametrize("kind", KINDS)
def test_each_space_kind_trains(kind: str) -> None:
    """A package-style id per space kind builds an encoder and runs two PPO updates."""
    ppo = PPO(_cfg(f"envs_for_tests:Tiny-{kind}-v0"))
    for _ in range(2):
        scalars = ppo.iterate()
        assert math.isfinite(scalars["losses/policy"]), kind
    assert scalars["charts/episodic_return"] >= 0
    assert "charts/success_rate" not in scalars  # the env reports none: never a false 0


def test_recon_loss_on_a_dict_space() -> None:
    ppo = PPO(_cfg("envs_for_tests:Tiny-Dict-v0", "agent.recon_coef=0.1"))
    assert math.isfinite(ppo.iterate()["losses/policy"])


def test_minigrid_grid_keeps_the_one_hot_grid_encoder() -> None:
    from mnemo.agents.rl.encoders import MINIGRID_CELL_VALUES, GridEncoder

    ppo = PPO(_cfg("MiniGrid-Empty-5x5-v0", "env.batched=false"))
    assert isinstance(ppo.model.encoder, GridEncoder)
    assert ppo.model.encoder.n_onehot == sum(MINIGRID_CELL_VALUES)
    twin = PPO(_cfg("mnemo/KeyChest-Match-D64-v0", "ppo.rollout_len=4"))
    assert isinstance(twin.model.encoder, GridEncoder)


@pytest.mark.parametrize(
    ("env_id", "expect"),
    [
        ("Nope-v0", "unknown env 'Nope-v0'; mnemo envs: mnemo/"),
        ("no_such_package_xyz:Tiny-v0", "'no_such_package_xyz' (install it, or add its folder"),
        ("envs_for_tests:Tiny-Text-v0", "observation space Text"),
    ],
)
def test_bad_env_one_line(env_id: str, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "configs/recall_lstm.yaml", f"env.id={env_id}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err
    assert "package:EnvId" in err or "unknown" not in expect


def test_missing_twin_warns_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnemo.agents.rl import vector_env

    monkeypatch.setattr(vector_env, "_warned_no_twin", set())  # earlier tests warned already
    PPO(_cfg("envs_for_tests:Tiny-Box-v0"))
    PPO(_cfg("envs_for_tests:Tiny-Box-v0"))
    assert capsys.readouterr().err.count("has no tensor twin") == 1
    PPO(_cfg("envs_for_tests:Tiny-Discrete-v0", "env.batched=false"))
    assert "twin" not in capsys.readouterr().err


def test_success_not_available_then_derived_from_return() -> None:
    cfg = _cfg("envs_for_tests:Tiny-Box-v0")
    ppo = PPO(cfg)
    res = evaluate(ppo.model, cfg, episodes=6, num_envs=2)
    assert math.isnan(res.success_rate) and "success n/a" in res.summary()
    assert "mean return" in res.summary() and res.return_ci_low <= res.mean_return
    with pytest.raises(ConfigError, match="does not report success"):
        _cfg("envs_for_tests:Tiny-Box-v0", "ppo.target_success=0.5")
    cfg = _cfg("envs_for_tests:Tiny-Box-v0", "env.success_return=2", "ppo.target_success=0.5")
    ppo = PPO(cfg)
    scalars = ppo.iterate()
    assert 0 <= scalars["charts/success_rate"] <= 1
    res = evaluate(ppo.model, cfg, episodes=6, num_envs=2, greedy=False)
    assert 0 <= res.success_rate <= 1


def test_minibatches_must_divide_num_envs() -> None:
    with pytest.raises(ConfigError, match=r"ppo.minibatches \(4\) must divide env.num_envs \(6\)"):
        load_rl_config(None, ["env.num_envs=6", "ppo.minibatches=4"])


def test_terminated_and_truncated_is_not_bootstrapped() -> None:
    """An episode that ends both ways at once is terminal: its reward is the env's alone."""
    ppo = PPO(_cfg("envs_for_tests:Tiny-EndsBoth-v0", "env.batched=false"))
    with torch.no_grad():
        ppo.model.value.bias.fill_(10.0)  # a bootstrap would add gamma * ~10
    ro, _ = ppo.collect()
    assert ro.done.any()
    assert torch.equal(ro.reward, ro.done.float())


def test_run_seeds_do_not_share_env_seeds() -> None:
    """Run seed 0's envs 1..N-1 must not replay run seed 1's envs 0..N-2 (gymnasium's seed + i)."""
    a = GymVectorEnv("envs_for_tests:Tiny-Box-v0", 4, "cpu")
    b = GymVectorEnv("envs_for_tests:Tiny-Box-v0", 4, "cpu")
    obs_a, _ = a.reset(seed=0)
    obs_b, _ = b.reset(seed=1)
    for i in range(1, 4):
        for j in range(4):
            assert not np.allclose(obs_a[i].numpy(), obs_b[j].numpy())


@pytest.mark.parametrize("kind", ["Dict", "Tuple", "Box"])
def test_video_episode_of_any_env(kind: str) -> None:
    """A video episode reads the observation as training does (Tuple/Dict packed), and its
    success is what training counts: not available unless the env says or success_return does."""
    from mnemo.agents.rl.video import record_episode

    cfg = _cfg(f"envs_for_tests:Tiny-{kind}-v0")
    ppo = PPO(cfg)
    ep = record_episode(ppo.model, cfg, seed=3)
    assert ep.length == 4 and len(ep.frames) == 5 and ep.success is None
    cfg.env.success_return = -1.0  # every return reaches it
    assert record_episode(ppo.model, cfg, seed=3).success is True


def test_eval_needs_frames_only_for_video(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run trained with videos evaluates where its env cannot render (another machine);
    ``--video`` there is refused in one line before evaluating."""
    import envs_for_tests

    run = tmp_path / "run"
    argv = ["train", "configs/recall_lstm.yaml", "env.id=envs_for_tests:Tiny-Box-v0", *SMALL]
    assert main([*argv, "ppo.total_steps=16", "run.video_every=1", f"run.dir={run}"]) == 0
    monkeypatch.setattr(envs_for_tests.SpaceEnv, "render", lambda self: None)
    assert main(["eval", str(run), "--episodes", "2"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2", "--video", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--video: envs_for_tests:Tiny-Box-v0's render() gives" in err


def test_counted_success_is_one_rule_for_floats_and_tensors() -> None:
    """Training (tensors), evaluation and videos (floats) count success by the same rule."""
    import torch

    from mnemo.agents.rl.vector_env import counted_success

    assert counted_success(5.0, None, None) is None  # the env said nothing: never guessed
    assert counted_success(5.0, False, 4.0) is True  # success_return overrides the env
    assert counted_success(3.0, True, 4.0) is False
    said = torch.tensor([1.0, float("nan"), 0.0])
    assert counted_success(torch.tensor([1.0, 9.0, 2.0]), said, None) is said
    got = counted_success(torch.tensor([1.0, 9.0, 2.0]), said, 2.0)
    assert got.tolist() == [False, True, True]
