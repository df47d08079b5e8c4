"""The KeyChest-Match tensor twin equals the minigrid env, step for step."""

from __future__ import annotations

import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np
import pytest
import torch

from mnemo.envs.batched import TWINS, make_batched
from mnemo.envs.batched.keychest import BatchedKeyChestMatch
from mnemo.envs.keychest.common import PHASES
from mnemo.envs.keychest.match import KeyChestMatchEnv


def layout_of(twin: BatchedKeyChestMatch, i: int) -> dict:
    lay = twin.layout()
    return {"key_color": int(lay["key_color"][i]), "chest_colors": lay["chest_colors"][i].tolist()}


# The last cases are long enough for the apple budget to bind: apples stop growing back once
# max_apples have appeared (6 of them at 0.3, 2 at 0.1: fewer than the room's 4 cells), or
# never stop (None). There the actions mix in the oracle's, which heads for the apples. Two
# cases grow apples of a colour no key has (yellow, grey).
@pytest.mark.parametrize(
    ("delay", "num_colors", "apple_regrow", "shuffle", "apple_budget", "oracle_share", "apples"),
    [
        (0, 4, 10, True, 0.2, 0.0, "green"),
        (5, 4, 3, False, 0.2, 0.0, "green"),
        (9, 3, 2, True, 0.2, 0.0, "green"),
        (12, 2, 10, False, 0.2, 0.0, "yellow"),
        (60, 4, 3, False, 0.3, 0.6, "green"),
        (40, 2, 2, True, 0.1, 0.6, "grey"),
        (30, 3, 3, False, None, 0.6, "green"),
    ],
)
def test_twin_equals_minigrid(
    delay: int,
    num_colors: int,
    apple_regrow: int,
    shuffle: bool,
    apple_budget: float | None,
    oracle_share: float,
    apples: str,
) -> None:
    n, steps = 10, 200
    kwargs = {
        "delay": delay,
        "num_colors": num_colors,
        "apple_regrow": apple_regrow,
        "shuffle_chests": shuffle,
        "apple_budget": apple_budget,
        "apple_color": apples,
    }
    twin = BatchedKeyChestMatch(n, **kwargs)
    grid_envs = [KeyChestMatchEnv(**kwargs) for _ in range(n)]
    obs, info = twin.reset(seed=3)
    for i, env in enumerate(grid_envs):
        ref, ref_info = env.reset(seed=i, options={"layout": layout_of(twin, i)})
        assert np.array_equal(obs[i].numpy(), ref["image"])
        assert PHASES[int(info["phase"][i])] == ref_info["phase"]

    rng = np.random.default_rng(0)
    seen = {"apple": 0, "success": 0, "failure": 0, "budget_spent": 0}
    apples = np.zeros(n, dtype=int)  # apples eaten in each env's current episode
    max_apples = grid_envs[0].max_apples
    for _ in range(steps):
        actions = rng.choice(3, size=n, p=[0.25, 0.25, 0.5])  # forward often, to use things
        if oracle_share:
            oracle = np.array([env.oracle_action() for env in grid_envs])
            actions = np.where(rng.random(n) < oracle_share, oracle, actions)
        obs, reward, term, trunc, info = twin.step(torch.as_tensor(actions))
        assert not trunc.any()
        for i, env in enumerate(grid_envs):
            ref, r, t, tr, ref_info = env.step(int(actions[i]))
            where = f"env {i}, t={env.step_count}"
            assert not tr
            assert bool(term[i]) == t, where
            assert float(reward[i]) == pytest.approx(r), where
            assert PHASES[int(info["phase"][i])] == ref_info["phase"], where
            assert np.array_equal(info["final_obs"][i].numpy(), ref["image"]), where
            ate = ref_info["phase"] == "distractor" and r > 0
            seen["apple"] += ate
            apples[i] += ate
            if max_apples is not None:
                assert apples[i] <= max_apples, where
            if t:
                seen["budget_spent"] += apples[i] == max_apples
                apples[i] = 0
                assert bool(info["success"][i]) == ref_info["success"], where
                seen["success" if ref_info["success"] else "failure"] += 1
                ref, _ = env.reset(options={"layout": layout_of(twin, i)})
            assert np.array_equal(obs[i].numpy(), ref["image"]), where
    # The random walk must have exercised every rule, or the comparison proves little.
    assert seen["success"] > 0 and seen["failure"] > 0
    assert seen["apple"] > 0 or delay == 0
    if oracle_share and max_apples is not None:
        assert seen["budget_spent"] > 0, "no episode used up its apple budget"


def test_get_set_state_resumes_exactly() -> None:
    twin = BatchedKeyChestMatch(64, delay=6)
    twin.reset(seed=0)
    gen = torch.Generator().manual_seed(1)
    actions = torch.randint(0, 3, (80, 64), generator=gen)
    for a in actions[:40]:
        twin.step(a)
    state = twin.get_state()

    def run() -> list[torch.Tensor]:
        out = []
        for a in actions[40:]:
            obs, reward, term, _, info = twin.step(a)
            out += [obs, reward, term, info["success"]]
        return out

    first = run()
    twin.set_state(state)
    second = run()
    assert all(torch.equal(x, y) for x, y in zip(first, second))


def test_seeded_resets_are_identical_and_layouts_settable() -> None:
    a, b = BatchedKeyChestMatch(32), BatchedKeyChestMatch(32)
    obs_a, _ = a.reset(seed=5)
    obs_b, _ = b.reset(seed=5)
    assert torch.equal(obs_a, obs_b)
    b.reset(options={"key_color": torch.zeros(32), "chest_colors": torch.arange(4).repeat(32, 1)})
    assert (b.key_color == 0).all()
    with pytest.raises(ValueError, match="chest_colors"):
        b.reset(options={"chest_colors": torch.zeros(3, 4)})


def test_registered_as_twin() -> None:
    assert TWINS["mnemo.envs.keychest.match:KeyChestMatchEnv"] is BatchedKeyChestMatch
    twin = make_batched("mnemo/KeyChest-Match-D64-v0", 8)
    assert isinstance(twin, BatchedKeyChestMatch) and twin.delay == 64
    obs, _ = twin.reset(seed=0)
    assert obs.shape == (8, 7, 7, 3) and obs.dtype == torch.uint8
    assert twin.single_observation_space.contains(obs[0].numpy())


def test_twin_oracle_and_chance() -> None:
    """Opening the key's chest always succeeds; a fixed chest choice succeeds ~1/K."""
    n = 4000
    twin = BatchedKeyChestMatch(n, delay=0, shuffle_chests=True)
    twin.reset(seed=0)
    # delay 0: two cue steps (forward, blocked by the key), then the chest phase facing up.
    for _ in range(twin.cue_steps):
        twin.step(torch.full((n,), 2))
    *_, term, _, info = twin.step(torch.full((n,), 2))  # open the front chest
    assert term.all()
    assert abs(info["success"].float().mean().item() - 0.25) < 0.03

    twin.reset(seed=1)
    for _ in range(twin.cue_steps):
        twin.step(torch.full((n,), 2))
    slot = (twin.chest_colors == twin.key_color.unsqueeze(1)).float().argmax(1).tolist()
    routes = {0: [2], 1: [0, 2], 2: [1, 2], 3: [0, 0, 2]}  # front, left, right, behind
    ended = torch.zeros(n, dtype=torch.bool)
    won = torch.zeros(n, dtype=torch.bool)
    for k in range(3):
        a = torch.tensor([routes[s][k] if k < len(routes[s]) else 0 for s in slot])
        *_, term, _, info = twin.step(a)
        won |= term & ~ended & info["success"]
        ended |= term
    assert ended.all() and won.all()
