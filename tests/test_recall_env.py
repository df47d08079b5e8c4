from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import mnemo.envs  # noqa: F401
from mnemo.envs.batched import make_batched
from mnemo.envs.recall import RecallEnv


@pytest.mark.parametrize("env_id", ["mnemo/Recall-D8-v0", "mnemo/Recall-D32-v0"])
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


def play(env: RecallEnv, policy, episodes: int, seed: int = 0) -> tuple[float, int]:
    rng = np.random.default_rng(seed)
    total, lengths = 0.0, set()
    env.reset(seed=seed)
    for _ in range(episodes):
        env.reset()
        done, steps = False, 0
        while not done:
            _, r, term, trunc, info = env.step(policy(env, rng))
            total += r
            steps += 1
            done = term or trunc
        assert "success" in info
        lengths.add(steps)
    return total / episodes, lengths.pop() if len(lengths) == 1 else -1


def test_oracle_gets_max_and_random_gets_chance() -> None:
    env = RecallEnv(delay=8, num_symbols=4)
    oracle, length = play(env, lambda e, rng: e.oracle_action(), 200)
    assert oracle == 1.0 and length == 10
    rand, _ = play(env, lambda e, rng: int(rng.integers(4)), 4000)
    assert abs(rand - 0.25) < 0.03


def test_bad_kwargs_are_clear() -> None:
    with pytest.raises(ValueError, match="delay"):
        RecallEnv(delay=-1)
    with pytest.raises(ValueError, match="num_symbols"):
        RecallEnv(num_symbols=1)


def test_twin_matches_gym_env() -> None:
    n, delay = 5, 6
    twin = make_batched("mnemo/Recall-D8-v0", n, delay=delay)
    obs_t, _ = twin.reset(seed=3)
    gyms = [RecallEnv(delay=delay) for _ in range(n)]
    obs_g = []
    for i, e in enumerate(gyms):
        e.reset(seed=i)
        e._symbol = int(twin.symbol[i])  # same symbols, drawn by the twin
        obs_g.append(e._obs())
    rng = np.random.default_rng(0)
    for _ in range(3 * (delay + 2)):
        assert np.allclose(obs_t.numpy(), np.stack(obs_g))
        actions = rng.integers(4, size=n)
        obs_t, r_t, term_t, _, info = twin.step(torch.as_tensor(actions))
        obs_g = []
        for i, e in enumerate(gyms):
            o, r, term, _, inf = e.step(int(actions[i]))
            assert r == r_t[i].item() and term == term_t[i].item()
            if term:
                assert inf["success"] == bool(info["success"][i])
                e.reset()
                e._symbol = int(twin.symbol[i])
                o = e._obs()
            obs_g.append(o)


def test_every_registered_delay_has_the_env_and_its_twin() -> None:
    from mnemo.envs import RECALL_DELAYS
    from mnemo.envs.batched import BatchedRecall

    assert RECALL_DELAYS[-2:] == (512, 1024)
    for d in RECALL_DELAYS:
        env_id = f"mnemo/Recall-D{d}-v0"
        assert gym.make(env_id).unwrapped.delay == d
        twin = make_batched(env_id, 2)
        assert isinstance(twin, BatchedRecall) and twin.delay == d
