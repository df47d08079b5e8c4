"""KeyChest minigrid envs: API checkers, seeding, oracle, memoryless baselines, SB3 smoke test."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import pytest
from minigrid.core.constants import OBJECT_TO_IDX
from minigrid.wrappers import ImgObsWrapper

from mnemo import envs
from mnemo.envs.keychest.common import APPLE_CELLS, CHEST, CUE
from mnemo.envs.keychest.match import CHEST_SLOTS

VARIANTS = ("Match", "Fetch", "Return")


def make(variant: str, delay: int = 16, **kwargs) -> gym.Env:
    return gym.make(f"mnemo/KeyChest-{variant}-D16-v0", delay=delay, **kwargs).unwrapped


def run_episode(env: gym.Env, policy, seed: int) -> tuple[float, dict, int]:
    env.reset(seed=seed)
    total, steps = 0.0, 0
    while True:
        _, reward, terminated, truncated, info = env.step(policy(env))
        total, steps = total + reward, steps + 1
        assert not truncated
        if terminated:
            return total, info, steps


def test_registered_ids() -> None:
    for variant in VARIANTS:
        for d in envs.KEYCHEST_DELAYS:
            env = gym.make(f"mnemo/KeyChest-{variant}-D{d}-v0")
            assert env.unwrapped.delay == d
            env.close()


@pytest.mark.parametrize("variant", VARIANTS)
def test_gymnasium_env_checker(variant: str) -> None:
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", module="pygame.*")
        check_env(make(variant, render_mode="rgb_array"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_sb3_env_checker(variant: str) -> None:
    # SB3 has no space for minigrid's mission string: it sees the env through ImgObsWrapper,
    # as its PPO does. Its only remark is that 7x7 is small for its default CnnPolicy.
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*minimal resolution for an image.*")
        check_env(ImgObsWrapper(make(variant)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_seeded_runs_are_identical(variant: str) -> None:
    def rollout() -> list:
        env = make(variant, delay=5)
        obs, _ = env.reset(seed=7)
        env.action_space.seed(3)
        out = [obs["image"].copy()]
        for _ in range(200):
            obs, r, term, _, info = env.step(env.action_space.sample())
            out += [obs["image"].copy(), r, term, info["phase"]]
            if term:
                obs, _ = env.reset()
                out.append(obs["image"].copy())
        return out

    a, b = rollout(), rollout()
    assert len(a) == len(b)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("delay", [0, 16, 64, 256, 1024])
def test_oracle_succeeds_at_every_delay(variant: str, delay: int) -> None:
    env = make(variant, delay=delay)
    for seed in range(3 if delay >= 256 else 10):
        total, info, steps = run_episode(env, lambda e: e.oracle_action(), seed)
        assert info["success"] is True and info["phase"] == "chest"
        assert total >= 1.0
        assert env.cue_steps + delay < steps <= env.max_steps


def oracle_returns(env: gym.Env, seed: int = 0) -> tuple[float, float]:
    """The scripted oracle's (distractor, other phases) return over one episode."""
    env.reset(seed=seed)
    apples = rest = 0.0
    while True:
        _, reward, terminated, _, info = env.step(env.oracle_action())
        if info["phase"] == "distractor":
            apples += reward
        else:
            rest += reward
        if terminated:
            assert info["success"] is True
            return apples, rest


@pytest.mark.parametrize("variant", VARIANTS)
def test_apple_budget_keeps_the_chest_the_signal_at_every_delay(variant: str) -> None:
    """The distractor pays at most ``apple_budget`` (0.2) however long the delay, so the
    chest is >= 80% of the oracle's return at every registered delay; unbounded apples
    (``apple_budget=None``, the old rule) would outweigh it from delay 256 on."""
    for d in envs.KEYCHEST_DELAYS:
        env = gym.make(f"mnemo/KeyChest-{variant}-D{d}-v0").unwrapped
        apples, chest = oracle_returns(env)
        assert 0 < apples <= env.apple_budget + 1e-9, (d, apples)
        assert chest / (apples + chest) >= 0.8, (d, apples, chest)
    apples, chest = oracle_returns(make(variant, delay=256, apple_budget=None))
    assert apples > chest


def test_apple_budget_rule() -> None:
    """At most floor(budget / reward) apples appear per episode; then eaten ones stay gone."""
    from mnemo.envs.keychest.common import APPLE_GONE, apple_allowance

    assert apple_allowance(0.05, 0.2) == 4 and apple_allowance(0.05, None) is None
    assert apple_allowance(0.03, 0.1) == 3 and apple_allowance(0.0, 0.2) is None
    with pytest.raises(ValueError, match="apple_budget"):
        make("Match", apple_budget=-1.0)
    env = make("Match", delay=200, apple_regrow=2, apple_budget=0.25)  # 5 apples
    apples, _ = oracle_returns(env)
    assert apples == pytest.approx(0.25)
    assert env.apples_shown == 5 and (env.apple_timer == APPLE_GONE).all()
    env = make("Match", delay=200, apple_budget=0.1)  # 2 apples: only 2 cells start with one
    env.reset(seed=0)
    while env.phase == CUE:
        env.step(env.oracle_action())
    assert list(env.apple_timer) == [0, 0, APPLE_GONE, APPLE_GONE]


@pytest.mark.parametrize("variant", VARIANTS)
def test_apple_color_paints_the_apples_and_refuses_unknown_colours(variant: str) -> None:
    """``apple_color`` sets the distractor's balls (every variant, via ``gym.make`` kwargs);
    an unknown colour fails in one line naming minigrid's colours."""
    env = gym.make(f"mnemo/KeyChest-{variant}-D16-v0", apple_color="yellow").unwrapped
    env.reset(seed=0)
    while env.phase == CUE:
        env.step(env.oracle_action())
    balls = [env.grid.get(x, y) for x, y in APPLE_CELLS]
    assert balls and all(b.type == "ball" and b.color == "yellow" for b in balls)
    apples, chest = oracle_returns(make(variant, apple_color="grey"))
    assert apples > 0 and chest > 0  # the oracle still finds and eats them
    with pytest.raises(ValueError, match=r"apple_color must be one of red, green, .*'pink'"):
        make(variant, apple_color="pink")


def test_phases_and_rewards_are_reported() -> None:
    env = make("Match", delay=12)
    _, info = env.reset(seed=0)
    assert info == {"phase": "cue"}
    phases, apple_reward = [], 0.0
    while True:
        _, r, term, _, info = env.step(env.oracle_action())
        phases.append(info["phase"])
        if info["phase"] == "distractor":
            apple_reward += r
        assert ("success" in info) == term
        if term:
            break
    assert phases == ["cue"] * env.cue_steps + ["distractor"] * 12 + ["chest"] * (len(phases) - 14)
    assert apple_reward >= 2 * env.apple_reward  # the oracle eats apples while it waits


def test_match_key_is_shown_then_chests() -> None:
    env = make("Match", delay=3)
    obs, _ = env.reset(seed=0, options={"layout": {"key_color": 2, "chest_colors": [3, 0, 2, 1]}})
    assert tuple(obs["image"][3, 5]) == (OBJECT_TO_IDX["key"], 2, 0)  # one cell ahead
    for _ in range(env.cue_steps + 3):
        obs, *_ = env.step(0)
    assert env.phase == CHEST
    assert tuple(obs["image"][3, 5]) == (OBJECT_TO_IDX["box"], 3, 0)  # front chest
    _, r, term, _, info = env.step(2)
    assert term and r == 0.0 and info["success"] is False


def test_match_memoryless_policy_is_at_chance() -> None:
    """Oracle everywhere but the chest choice, which is random: success ~ 1/K."""
    rng = np.random.default_rng(0)
    env = make("Match", delay=0)
    k, wins, n = env.num_colors, 0, 400
    for seed in range(n):
        guess = CHEST_SLOTS[rng.integers(k)]

        def policy(e, guess=guess) -> int:
            if e.phase != CHEST:
                return e.oracle_action()
            from mnemo.envs.keychest.common import plan

            return plan(e.grid, e.agent_pos, e.agent_dir, [guess])

        wins += run_episode(env, policy, seed)[1]["success"]
    assert abs(wins / n - 1 / k) < 0.07


def test_fetch_needs_the_key() -> None:
    env = make("Fetch", delay=4, pickup_reward=0.1)
    # Never picking up: turn in the cue phase, then play the oracle.
    total, info, _ = run_episode(env, lambda e: 0 if e.phase == CUE else e.oracle_action(), 0)
    assert info["success"] is False and total < 1.0
    total, info, _ = run_episode(env, lambda e: e.oracle_action(), 0)
    assert info["success"] is True and total >= 1.1 - 1e-9  # chest + pickup reward


def test_return_key_is_out_of_view_at_the_chest() -> None:
    env = make("Return", delay=2)
    for alcove in range(env.num_alcoves):
        obs, _ = env.reset(seed=0, options={"layout": {"alcove": alcove}})
        seen = False
        while env.phase == CUE:
            seen |= bool((obs["image"][..., 0] == OBJECT_TO_IDX["key"]).any())
            obs, *_ = env.step(env.oracle_action())
        seen |= bool((obs["image"][..., 0] == OBJECT_TO_IDX["key"]).any())
        assert seen, f"the key in alcove {alcove} is never seen in the cue phase"
        while env.phase != CHEST:
            obs, *_ = env.step(env.oracle_action())
        assert not (obs["image"][..., 0] == OBJECT_TO_IDX["key"]).any()
        assert env.chest_budget <= env.chest_steps  # so max_steps bounds every episode
        assert tuple(obs["image"][3, 5]) == (OBJECT_TO_IDX["box"], env.key_color, 0)


def test_return_memoryless_policies_are_near_chance() -> None:
    """A random alcove, or searching alcoves nearest first, succeeds ~1/K."""
    from mnemo.envs.keychest.return_key import alcove_cells

    env = make("Return", delay=0)
    k, n = env.num_alcoves, 150
    rng = np.random.default_rng(1)
    nearest_first = sorted(range(k), key=lambda i: -alcove_cells(i)[0][0])

    def searcher(e) -> int:
        if e.phase != CHEST:
            return e.oracle_action()
        for i in nearest_first:  # first alcove whose door is closed or that holds the key
            door, key = alcove_cells(i)
            if e.carrying is not None or not e.grid.get(*door).is_open or e.grid.get(*key):
                return e.route_action(i)
        return 0

    guesses = rng.integers(k, size=n)

    def random_alcove(e) -> int:
        return e.route_action(int(guesses[seed])) if e.phase == CHEST else e.oracle_action()

    wins_random = 0
    for seed in range(n):
        wins_random += run_episode(env, random_alcove, seed)[1]["success"]
    wins_search = sum(run_episode(env, searcher, seed)[1]["success"] for seed in range(n))
    assert abs(wins_random / n - 1 / k) < 0.08
    assert abs(wins_search / n - 1 / k) < 0.08


def test_bad_arguments_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="delay"):
        make("Match", delay=-1)
    with pytest.raises(ValueError, match="num_colors"):
        make("Match", num_colors=7)
    env = make("Match")
    with pytest.raises(ValueError, match="permutation"):
        env.reset(options={"layout": {"chest_colors": [0, 0, 1, 2]}})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="forward"):
        env.step(5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rgb_render(variant: str) -> None:
    env = make(variant, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


def test_sb3_ppo_trains_unchanged() -> None:
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    env = ImgObsWrapper(gym.make("mnemo/KeyChest-Match-D16-v0"))
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs)
    assert env.action_space.contains(int(action))


@pytest.mark.parametrize("variant", VARIANTS)
def test_pickled_env_resumes_exactly(variant: str) -> None:
    """The agent checkpoints gymnasium envs with pickle (RNG included)."""
    import pickle

    env = make(variant, delay=6)
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.oracle_action())
    copy = pickle.loads(pickle.dumps(env))
    for _ in range(60):
        action = env.oracle_action()
        a, b = env.step(action), copy.step(action)
        assert np.array_equal(a[0]["image"], b[0]["image"]) and a[1:] == b[1:]
        if a[2]:
            assert np.array_equal(env.reset()[0]["image"], copy.reset()[0]["image"])
