"""Tensor twin of ``envs.keychest.match.KeyChestMatchEnv``: N KeyChest-Match episodes per call.

The same rules, phases, rewards (apple budget included) and 7x7x3 uint8 images as the
minigrid env (see its docstring and ``envs.keychest.common``), so one trained agent runs on
both. The twin returns the image only, as the agent sees the minigrid env through minigrid's
``ImgObsWrapper``. Besides ``success`` and ``final_obs``, ``info["phase"]`` holds each env's
phase of the step's action as an integer (0 cue, 1 distractor, 2 chest; names in
``envs.keychest.common.PHASES``).

How it works: the 7x7 world of every env is a row of 49 int32 cells (index 49 stands for
"outside", a wall), rebuilt each step from the state (phase, key colour, chest colours, apple
timers) by writing the few cells that change into a constant room. A cell's int32 holds the
bytes (type, colour, state, 0) of minigrid's encoding, so the agent's view is one ``gather``
with a precomputed table of the 49 cells each (position, direction) sees, read back as bytes.

Layouts come from the twin's own torch generator, so a twin and minigrid envs given the same
seed draw different layouts; ``layout()`` reports them and ``reset(options=...)`` sets them,
which is how the equivalence test drives both from the same layouts.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from minigrid.core.constants import COLOR_TO_IDX, DIR_TO_VEC, OBJECT_TO_IDX

from mnemo.envs.batched.base import TensorVectorEnv
from mnemo.envs.keychest.common import (
    APPLE_CELLS,
    APPLE_COLOR,
    APPLE_GONE,
    CHEST,
    CUE,
    DISTRACTOR,
    DISTRACTOR_START,
    FORWARD,
    LEFT,
    RIGHT,
    ROOM,
    apple_allowance,
)
from mnemo.envs.keychest.kwargs import check_keychest_kwargs
from mnemo.envs.keychest.match import CHEST_SLOTS, CHEST_START, CUE_START, KEY_CELL

W = ROOM  # the world is W x W cells, flattened as x * W + y
OUTSIDE = W * W
VIEW = 7
# The tensors that hold a twin's whole state (with its generator): what get_state saves.
_STATE = ("t", "pos", "dir", "key_color", "chest_colors", "apple_timer", "apples_shown")


def _code(obj: str, color: int = 0) -> int:
    """A cell as int32 whose little-endian bytes are minigrid's (type, colour, state=0)."""
    return OBJECT_TO_IDX[obj] + (color << 8)


def _cell(xy: tuple[int, int]) -> int:
    return xy[0] * W + xy[1]


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """(view, front): the cells seen from, and the cell in front of, each (direction, cell)."""
    view = np.full((4, W * W, VIEW * VIEW), OUTSIDE, dtype=np.int64)
    front = np.full((4, W * W), OUTSIDE, dtype=np.int64)
    for d in range(4):
        dx, dy = DIR_TO_VEC[d]
        rx, ry = -dy, dx  # minigrid's right_vec
        for x in range(W):
            for y in range(W):
                if 0 <= x + dx < W and 0 <= y + dy < W:
                    front[d, x * W + y] = (x + dx) * W + y + dy
                # View cell (i, j): i left to right, j far to near; the agent is at (3, 6).
                for i in range(VIEW):
                    for j in range(VIEW):
                        ahead, right = VIEW - 1 - j, i - VIEW // 2
                        wx, wy = x + ahead * dx + right * rx, y + ahead * dy + right * ry
                        if 0 <= wx < W and 0 <= wy < W:
                            view[d, x * W + y, i * VIEW + j] = wx * W + wy
    return view.reshape(4 * W * W, VIEW * VIEW), front.reshape(-1)


class BatchedKeyChestMatch(TensorVectorEnv):
    """N KeyChest-Match envs as tensors. Arguments as ``KeyChestMatchEnv``'s."""

    def __init__(
        self,
        num_envs: int,
        delay: int = 16,
        num_colors: int = 4,
        cue_steps: int = 2,
        chest_steps: int = 4,
        apple_reward: float = 0.05,
        apple_regrow: int = 10,
        apple_budget: float | None = 0.2,
        apple_color: str = APPLE_COLOR,
        shuffle_chests: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(num_envs, device)
        check_keychest_kwargs(locals())
        self.delay, self.num_colors = delay, num_colors
        self.cue_steps, self.chest_steps = cue_steps, chest_steps
        self.apple_reward, self.apple_regrow = float(apple_reward), apple_regrow
        self.apple_budget = None if apple_budget is None else float(apple_budget)
        self.max_apples = apple_allowance(self.apple_reward, self.apple_budget)
        self.apple_color = apple_color
        # The same budget rule as KeyChestEnv._tick_apples; "no bound" as a count never reached.
        self._max_apples = 2**62 if self.max_apples is None else self.max_apples
        self.shuffle_chests = shuffle_chests
        self.metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
        image = spaces.Box(0, 255, (VIEW, VIEW, 3), np.uint8)
        self.single_observation_space = image
        self.single_action_space = spaces.Discrete(3)
        self.observation_space = spaces.Box(0, 255, (num_envs, VIEW, VIEW, 3), np.uint8)
        self.action_space = spaces.MultiDiscrete([3] * num_envs)

        dev, n = self.device, num_envs
        view, front = _tables()
        self._view = torch.as_tensor(view, device=dev)
        self._front = torch.as_tensor(front, device=dev)
        if sys.byteorder != "little":
            raise RuntimeError("the twin reads int32 cells as bytes: needs a little-endian host")
        room = np.full(W * W + 1, _code("wall", COLOR_TO_IDX["grey"]), dtype=np.int32)
        for x in range(1, W - 1):
            for y in range(1, W - 1):
                room[_cell((x, y))] = _code("empty")
        self._room = torch.as_tensor(room, device=dev)
        self._apple_cells = torch.tensor([_cell(c) for c in APPLE_CELLS], device=dev)
        self._apple_code = _code("ball", COLOR_TO_IDX[self.apple_color])
        first = min(len(APPLE_CELLS), self._max_apples)  # apples grown when the room opens
        self._first_apples = first
        self._apple_start = torch.tensor(
            [0 if j < first else APPLE_GONE for j in range(len(APPLE_CELLS))], device=dev
        )
        self._start_pos = torch.tensor(
            [_cell(CUE_START[0]), _cell(DISTRACTOR_START[0]), _cell(CHEST_START[0])], device=dev
        )
        self._start_dir = torch.tensor(
            [CUE_START[1], DISTRACTOR_START[1], CHEST_START[1]], device=dev
        )

        self.t = torch.zeros(n, dtype=torch.long, device=dev)
        self.pos = torch.zeros(n, dtype=torch.long, device=dev)
        self.dir = torch.zeros(n, dtype=torch.long, device=dev)
        self.key_color = torch.zeros(n, dtype=torch.long, device=dev)
        self.chest_colors = torch.zeros(n, num_colors, dtype=torch.long, device=dev)
        self.apple_timer = self._apple_start.expand(n, -1).clone()  # 0 grown, -1 gone
        self.apples_shown = torch.full((n,), first, dtype=torch.long, device=dev)
        self._grid = self._room.expand(n, -1).clone()  # (N, 50) cell codes of the current state

    # ------------------------------------------------------------------ state -> world -> obs
    def _phase(self, t: torch.Tensor) -> torch.Tensor:
        return (t >= self.cue_steps).long() + (t >= self.cue_steps + self.delay).long()

    def _build(self, t: torch.Tensor, key: torch.Tensor, chests: torch.Tensor, timer: torch.Tensor):
        phase = self._phase(t)
        g = self._room.expand(len(t), -1).clone()  # (n, 50)
        k = _cell(KEY_CELL)
        key_code = (OBJECT_TO_IDX["key"] + (key << 8)).to(g.dtype)
        g[:, k] = torch.where(phase == CUE, key_code, g[:, k])
        for j, c in enumerate(self._apple_cells.tolist()):
            grown = (phase == DISTRACTOR) & (timer[:, j] == 0)
            g[:, c] = torch.where(grown, self._apple_code, g[:, c])
        for s in range(self.num_colors):
            c = _cell(CHEST_SLOTS[s])
            box = (OBJECT_TO_IDX["box"] + (chests[:, s] << 8)).to(g.dtype)
            g[:, c] = torch.where(phase == CHEST, box, g[:, c])
        return g

    def _render(self, grid: torch.Tensor, pos: torch.Tensor, direction: torch.Tensor):
        seen = grid.gather(1, self._view.index_select(0, direction * W * W + pos))  # (n, 49)
        return seen.view(torch.uint8).view(-1, VIEW, VIEW, 4)[..., :3].contiguous()

    # ------------------------------------------------------------------ episodes
    def _new_episodes(self, idx: torch.Tensor, options: dict[str, Any] | None = None) -> None:
        """Start fresh episodes in envs ``idx`` (layouts from ``options`` or the generator)."""
        n, k = len(idx), self.num_colors
        options = options or {}
        if "key_color" in options:
            key = torch.as_tensor(options["key_color"], device=self.device).long()
        else:
            key = self.randint(k, n)
        if "chest_colors" in options:
            chests = torch.as_tensor(options["chest_colors"], device=self.device).long()
        elif self.shuffle_chests:
            u = torch.rand(n, k, generator=self.generator, device=self.device)
            chests = u.argsort(dim=1)  # a uniformly random permutation per env
        else:
            chests = torch.arange(k, device=self.device).expand(n, k)
        if key.shape != (n,) or chests.shape != (n, k):
            raise ValueError(f"layout needs key_color ({n},) and chest_colors ({n}, {k})")
        self.t[idx] = 0
        self.pos[idx] = self._start_pos[CUE]
        self.dir[idx] = self._start_dir[CUE]
        self.key_color[idx], self.chest_colors[idx] = key, chests
        self.apple_timer[idx] = self._apple_start
        self.apples_shown[idx] = self._first_apples
        self._grid[idx] = self._build(self.t[idx], key, chests, self.apple_timer[idx])

    def layout(self) -> dict[str, torch.Tensor]:
        """Each env's current layout, in ``KeyChestMatchEnv``'s ``options["layout"]`` terms."""
        return {"key_color": self.key_color.clone(), "chest_colors": self.chest_colors.clone()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Reset every env; ``options`` may fix layouts: ``key_color`` (N,), ``chest_colors``
        (N, K) (colour indices, as in the minigrid env)."""
        self.seed_generator(seed)
        self._new_episodes(torch.arange(self.num_envs, device=self.device), options)
        phase = torch.full((self.num_envs,), CUE, dtype=torch.long, device=self.device)
        return self._render(self._grid, self.pos, self.dir), {"phase": phase}

    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        a = torch.as_tensor(actions, device=self.device).long()
        phase = self._phase(self.t)
        front = self._front.index_select(0, self.dir * W * W + self.pos)
        code = self._grid.gather(1, front.unsqueeze(1)).squeeze(1).long()
        forward = a == FORWARD
        move = forward & (code == _code("empty"))
        eat = forward & (phase == DISTRACTOR) & (code == self._apple_code)
        opened = forward & (phase == CHEST) & (code & 255 == OBJECT_TO_IDX["box"])
        success = opened & (code >> 8 == self.key_color)
        reward = eat.float() * self.apple_reward + success.float()

        self.dir = torch.where(a == LEFT, (self.dir - 1) % 4, self.dir)
        self.dir = torch.where(a == RIGHT, (self.dir + 1) % 4, self.dir)
        self.pos = torch.where(move, front, self.pos)
        # Apples: eaten ones wait ``apple_regrow`` ticks and never grow under the agent; of
        # those due, the first ones in APPLE_CELLS order grow while the budget lasts, the rest
        # are gone for the episode (KeyChestEnv._tick_apples, one env at a time).
        eaten = eat.unsqueeze(1) & (front.unsqueeze(1) == self._apple_cells)
        timer = torch.where(eaten, self.apple_regrow, self.apple_timer)
        ticking = (timer > 0) & (phase == DISTRACTOR).unsqueeze(1)
        timer = timer - ticking.long()
        due = ticking & (timer == 0)
        blocked = due & (self.pos.unsqueeze(1) == self._apple_cells)
        due = due & ~blocked
        grow = due & (self.apples_shown.unsqueeze(1) + due.long().cumsum(1) <= self._max_apples)
        timer = torch.where(blocked, 1, timer)
        self.apple_timer = torch.where(due & ~grow, APPLE_GONE, timer)
        self.apples_shown = self.apples_shown + grow.long().sum(1)

        self.t = self.t + 1
        timeout = self.t >= self.cue_steps + self.delay + self.chest_steps
        terminated = opened | timeout
        new_phase = self._phase(self.t)
        entering = (new_phase != phase) & ~terminated
        self.pos = torch.where(entering, self._start_pos[new_phase], self.pos)
        self.dir = torch.where(entering, self._start_dir[new_phase], self.dir)
        reset_apples = entering & (new_phase == DISTRACTOR)
        self.apple_timer = torch.where(
            reset_apples.unsqueeze(1), self._apple_start, self.apple_timer
        )
        self.apples_shown = torch.where(reset_apples, self._first_apples, self.apples_shown)

        self._grid = self._build(self.t, self.key_color, self.chest_colors, self.apple_timer)
        final_obs = self._render(self._grid, self.pos, self.dir)
        obs = final_obs
        done = terminated.nonzero().squeeze(1)
        if len(done):  # same-step autoreset of finished envs
            self._new_episodes(done)
            obs = final_obs.clone()
            obs[done] = self._render(self._grid[done], self.pos[done], self.dir[done])
        info = {"success": success, "final_obs": final_obs, "phase": phase}
        return obs, reward, terminated, torch.zeros_like(terminated), info

    # ------------------------------------------------------------------ exact resume
    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).clone() for name in _STATE}
        state["generator"] = self.generator.get_state()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        if "apples_shown" not in state:
            raise ValueError(
                "this twin state predates the apple budget (no 'apples_shown'); its run used "
                "other rewards: start it again rather than resume it"
            )
        for name in _STATE:
            getattr(self, name).copy_(state[name])
        self.generator.set_state(state["generator"])
        self._grid = self._build(self.t, self.key_color, self.chest_colors, self.apple_timer)
