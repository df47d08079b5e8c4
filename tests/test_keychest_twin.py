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


@pytest.mark.parametrize(
    ("delay", "num_colors", "apple_regrow", "shuffle"),
    [(0, 4, 10, True), (5, 4, 3, False), (9, 3, 2, True), (12, 2, 10, False)],
)
def test_twin_equals_minigrid(
    delay: int, num_colors: int, apple_regrow: int, shuffle: bool
) -> None:
    n, steps = 10, 200
    kwargs = {
        "delay": delay,
        "num_colors": num_colors,
        "apple_regrow": apple_regrow,
        "shuffle_chests": shuffle,
    }
    twin = BatchedKeyChestMatch(n, **kwargs)
    grid_envs = [KeyChestMatchEnv(**kwargs) for _ in range(n)]
    obs, info = twin.reset(seed=3)
    for i, env in enumerate(grid_envs):
        ref, ref_info = env.reset(seed=i, options={"layout": layout_of(twin, i)})
        assert np.array_equal(obs[i].numpy(), ref["image"])
        assert PHASES[int(info["phase"][i])] == ref_info["phase"]

    rng = np.random.default_rng(0)
    seen = {"apple": 0, "success": 0, "failure": 0}
    for _ in range(steps):
        actions = rng.choice(3, size=n, p=[0.25, 0.25, 0.5])  # forward often, to use things
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
            seen["apple"] += ref_info["phase"] == "distractor" and r > 0
            if t:
                assert bool(info["success"][i]) == ref_info["success"], where
                seen["success" if ref_info["success"] else "failure"] += 1
                ref, _ = env.reset(options={"layout": layout_of(twin, i)})
            assert np.array_equal(obs[i].numpy(), ref["image"]), where
    # The random walk must have exercised every rule, or the comparison proves little.
    assert seen["success"] > 0 and seen["failure"] > 0
    assert seen["apple"] > 0 or delay == 0


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
