"""Pieces shared by the KeyChest variants: phases, the distractor room, actions, a planner.

Every variant runs in three phases that follow each other at fixed step counts:

- ``cue`` (``cue_steps`` steps): the key is shown (Match, Fetch) or passed (Return);
- ``distractor`` (``delay`` steps): the agent is moved to a small room where apples (balls)
  give a small reward when walked into and grow back ``apple_regrow`` steps later, as long
  as the episode's apple budget lasts (see below);
- ``chest`` (a budget of steps): the agent is moved to the chest(s) and must open the right one.

Actions are minigrid's first three: 0 turn left, 1 turn right, 2 forward. Walking *into* an
object uses it (eats an apple, picks up a key, opens a door or a chest), so no extra actions
are needed and the agent never shares a cell with an object.

The distractor reward is bounded in total, whatever the delay and the policy: an episode shows
at most ``max_apples = floor(apple_budget / apple_reward)`` apples (4 at the defaults 0.2 and
0.05), counting the first ones and every regrowth; once that many have appeared, eaten apples
stay gone. So the distractor pays at most ``apple_budget`` and the chest's +1 stays the larger
part of the return at every delay (TVT, Hung et al. 2019, also gives its distractor phase a
fixed number of apples). Stopping regrowth, rather than letting apples grow back worthless,
keeps the reward a function of what the agent sees: every visible apple pays.
``apple_budget=None`` lifts the bound (the greedy oracle then earns ~0.0083 per distractor
step: 8.55 from apples against 1.0 from the chest at delay 1024).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces
from minigrid.core.constants import DIR_TO_VEC
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import Ball, Box, Door, Key, Wall, WorldObj
from minigrid.minigrid_env import MiniGridEnv

# COLORS: keys' and chests' colours in minigrid's order (index = minigrid's colour index).
from mnemo.envs.keychest.kwargs import COLORS, check_apple_color, check_keychest_kwargs

LEFT, RIGHT, FORWARD = 0, 1, 2
PHASES = ("cue", "distractor", "chest")
CUE, DISTRACTOR, CHEST = 0, 1, 2

APPLE_COLOR = "green"  # the default; ``apple_color`` picks another (see check_apple_color)

# The distractor room: a 5x5 interior in the grid's top-left corner, an apple in each corner.
ROOM = 7
DISTRACTOR_START = ((3, 3), 3)  # (position, direction): centre, facing up
APPLE_CELLS = ((1, 1), (5, 1), (1, 5), (5, 5))
APPLE_GONE = -1  # an apple timer's value once the budget forbids regrowth


def apple_allowance(apple_reward: float, apple_budget: float | None) -> int | None:
    """Apples an episode may show: ``floor(apple_budget / apple_reward)``; None: no bound.

    Whole apples only, so that every apple pays the same ``apple_reward`` (the 1e-9 absorbs
    float error, e.g. 0.2 / 0.05 = 3.9999999999999996).
    """
    if apple_budget is not None and apple_budget < 0:
        raise ValueError(f"apple_budget must be >= 0 or None, got {apple_budget!r}")
    if apple_budget is None or apple_reward <= 0:
        return None
    return int(apple_budget / apple_reward + 1e-9)


def room_grid(width: int, height: int, size: int = ROOM) -> Grid:
    """All walls but an empty ``size - 2`` square interior at the top-left corner."""
    grid = Grid(width, height)
    for x in range(width):
        for y in range(height):
            if not (0 < x < size - 1 and 0 < y < size - 1):
                grid.set(x, y, Wall())
    return grid


class KeyChestEnv(MiniGridEnv):
    """Base of the variants: phase clock, distractor room, apples and the action rules.

    Subclasses set the layout in ``_sample_layout``, build the cue and chest phases in
    ``_build_phase`` and decide what walking into an object does in ``_use``.
    """

    def __init__(
        self,
        delay: int,
        mission_func: Callable[[], str],
        width: int,
        height: int,
        cue_steps: int,
        chest_steps: int,
        apple_reward: float = 0.05,
        apple_regrow: int = 10,
        apple_budget: float | None = 0.2,
        apple_color: str = APPLE_COLOR,
        see_through_walls: bool = True,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_keychest_kwargs(locals())
        self.delay = int(delay)
        self.cue_steps = int(cue_steps)
        self.chest_steps = int(chest_steps)
        self.apple_reward = float(apple_reward)
        self.apple_regrow = int(apple_regrow)
        self.apple_budget = None if apple_budget is None else float(apple_budget)
        self.max_apples = apple_allowance(self.apple_reward, self.apple_budget)
        self.apple_color = apple_color
        self.apples_shown = 0  # apples that have appeared in this episode's distractor room
        self.phase = CUE
        self.chest_budget = self.chest_steps
        self.apple_timer = np.zeros(len(APPLE_CELLS), dtype=np.int64)
        self._options: dict[str, Any] = {}
        super().__init__(
            # A module-level function, not a lambda, so that envs pickle (checkpoints).
            mission_space=MissionSpace(mission_func=mission_func),
            width=width,
            height=height,
            max_steps=self.cue_steps + self.delay + self.chest_steps,
            see_through_walls=see_through_walls,
            render_mode=render_mode,
            **kwargs,
        )
        self.action_space = spaces.Discrete(3)

    # ----------------------------------------------------------------- to override
    def _sample_layout(self, options: dict[str, Any]) -> None:
        """Draw the episode's random choices (from ``self.np_random`` or ``options``)."""
        raise NotImplementedError

    def _build_phase(self, phase: int) -> None:
        """Set ``self.grid``, ``self.agent_pos`` and ``self.agent_dir`` for cue or chest."""
        raise NotImplementedError

    def _use(self, obj: WorldObj, pos: tuple[int, int]) -> tuple[float, bool, bool]:
        """Walk into ``obj`` at ``pos`` (not an apple): returns (reward, terminated, success)."""
        return 0.0, False, False

    def oracle_action(self) -> int:
        """An action of a scripted policy that always succeeds (and eats apples greedily)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- phases
    def phase_at(self, t: int) -> int | None:
        """Phase of the action taken after ``t`` steps (None: the chest budget is spent)."""
        if t < self.cue_steps:
            return CUE
        if t < self.cue_steps + self.delay:
            return DISTRACTOR
        if t < self.cue_steps + self.delay + self.chest_budget:
            return CHEST
        return None

    def _enter(self, phase: int) -> None:
        self.phase = phase
        if phase == DISTRACTOR:
            self.grid = room_grid(self.width, self.height)
            first = len(APPLE_CELLS) if self.max_apples is None else self.max_apples
            self.apples_shown = min(first, len(APPLE_CELLS))
            self.apple_timer[:] = APPLE_GONE
            self.apple_timer[: self.apples_shown] = 0
            for x, y in APPLE_CELLS[: self.apples_shown]:
                self.grid.set(x, y, Ball(self.apple_color))
            self.agent_pos, self.agent_dir = DISTRACTOR_START
        else:
            self._build_phase(phase)

    def _gen_grid(self, width: int, height: int) -> None:
        self._sample_layout(self._options)
        self.chest_budget = self.chest_steps
        self._enter(CUE)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Reset; ``options={"layout": {...}}`` fixes the random choices (see the variant)."""
        self._options = dict((options or {}).get("layout") or {})
        obs, _ = super().reset(seed=seed)
        return obs, {"phase": PHASES[CUE]}

    # ----------------------------------------------------------------- stepping
    def _tick_apples(self) -> None:
        # Apples grow back only where the agent is not standing, in APPLE_CELLS order (which
        # decides who gets the budget's last apple), and only while the budget lasts.
        for i, (x, y) in enumerate(APPLE_CELLS):
            if self.apple_timer[i] <= 0:  # grown, or gone for good
                continue
            self.apple_timer[i] -= 1
            if self.apple_timer[i] == 0:
                if tuple(self.agent_pos) == (x, y):
                    self.apple_timer[i] = 1
                elif self.max_apples is not None and self.apples_shown >= self.max_apples:
                    self.apple_timer[i] = APPLE_GONE
                else:
                    self.grid.set(x, y, Ball(self.apple_color))
                    self.apples_shown += 1

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(
                f"action {action!r} is not in {self.action_space} (0 left, 1 right, 2 forward)"
            )
        action = int(action)
        phase = self.phase
        self.step_count += 1
        reward, terminated, success = 0.0, False, False
        if action == LEFT:
            self.agent_dir = (self.agent_dir - 1) % 4
        elif action == RIGHT:
            self.agent_dir = (self.agent_dir + 1) % 4
        else:
            fwd = tuple(int(v) for v in self.front_pos)
            cell = self.grid.get(*fwd)
            if cell is None or cell.can_overlap():
                self.agent_pos = fwd
            elif phase == DISTRACTOR and isinstance(cell, Ball):
                self.grid.set(*fwd, None)
                self.apple_timer[APPLE_CELLS.index(fwd)] = self.apple_regrow
                reward = self.apple_reward
            else:
                reward, terminated, success = self._use(cell, fwd)
        if phase == DISTRACTOR:
            self._tick_apples()
        if not terminated:
            nxt = self.phase_at(self.step_count)
            if nxt is None:
                terminated = True  # the chest budget is spent: the episode fails
            elif nxt != phase:
                self._enter(nxt)
        info: dict[str, Any] = {"phase": PHASES[phase]}
        if terminated:
            info["success"] = bool(success)
        return self.gen_obs(), float(reward), terminated, False, info

    # ----------------------------------------------------------------- oracle helpers
    def apple_action(self) -> int:
        """Distractor-phase oracle: head for the nearest apple and eat it."""
        return plan(
            self.grid,
            self.agent_pos,
            self.agent_dir,
            [(x, y) for x, y in APPLE_CELLS if isinstance(self.grid.get(x, y), Ball)],
        )


def plan(grid: Grid, pos: Any, direction: int, targets: list[tuple[int, int]]) -> int:
    """First action of a shortest path to face one of ``targets``, then FORWARD into it.

    Breadth-first search over (x, y, direction); cells are passable when empty or open.
    Returns FORWARD when already facing a target and LEFT when no target is reachable.
    """
    goal = set(targets)
    start = (int(pos[0]), int(pos[1]), int(direction))
    first: dict[tuple[int, int, int], int | None] = {start: None}
    queue = deque([start])
    while queue:
        x, y, d = queue.popleft()
        dx, dy = DIR_TO_VEC[d]
        if (x + dx, y + dy) in goal:
            return FORWARD if first[(x, y, d)] is None else first[(x, y, d)]  # type: ignore[return-value]
        moves = [(LEFT, (x, y, (d - 1) % 4)), (RIGHT, (x, y, (d + 1) % 4))]
        cell = grid.get(x + dx, y + dy)  # grids are walled, so never out of bounds
        if cell is None or cell.can_overlap():
            moves.append((FORWARD, (x + dx, y + dy, d)))
        for action, s in moves:
            if s not in first:
                first[s] = action if first[(x, y, d)] is None else first[(x, y, d)]
                queue.append(s)
    return LEFT


def plan_length(
    grid: Grid, pos: Any, direction: int, targets: list[tuple[int, int]]
) -> tuple[int, tuple[int, int, int]]:
    """Steps of the shortest path to face a target, and the (x, y, direction) it ends in."""
    goal = set(targets)
    start = (int(pos[0]), int(pos[1]), int(direction))
    dist = {start: 0}
    queue = deque([start])
    while queue:
        x, y, d = queue.popleft()
        dx, dy = DIR_TO_VEC[d]
        if (x + dx, y + dy) in goal:
            return dist[(x, y, d)], (x, y, d)
        nxt = [(x, y, (d - 1) % 4), (x, y, (d + 1) % 4)]
        cell = grid.get(x + dx, y + dy)
        if cell is None or cell.can_overlap():
            nxt.append((x + dx, y + dy, d))
        for s in nxt:
            if s not in dist:
                dist[s] = dist[(x, y, d)] + 1
                queue.append(s)
    raise ValueError(f"no path from {start} to face any of {targets}")


__all__ = [
    "APPLE_CELLS",
    "APPLE_GONE",
    "CHEST",
    "COLORS",
    "CUE",
    "DISTRACTOR",
    "FORWARD",
    "LEFT",
    "PHASES",
    "RIGHT",
    "Ball",
    "Box",
    "Door",
    "Grid",
    "Key",
    "KeyChestEnv",
    "apple_allowance",
    "check_apple_color",
    "plan",
    "plan_length",
    "room_grid",
]
