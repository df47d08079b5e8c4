"""KeyChest-Return: remember where a key was, walk back for it once the chest turns up.

## Description
The scene of the Compressive Transformer article's figure: an agent passes a key, much later
finds a chest, and must return to the remembered place to fetch the key. Spatial memory.

The map is a corridor (row 3) with ``num_alcoves`` (K) alcoves, above and below it in
columns 2, 5, 8, ...; each alcove is a door (in the corridor's wall) and one cell behind it.

1. **cue** (``cue_steps`` steps, default enough to walk the corridor): the agent starts at the
   corridor's west end facing east. Every door is open; the key lies in one random alcove and
   comes into view as the agent walks by. It cannot be picked up yet.
2. **distractor** (``delay`` steps): the apple room of KeyChest-Match.
3. **chest**: the agent is back in the corridor, at its east end facing a chest. Every door is
   closed again, so the key is out of sight. Walking into a door opens it, into the key picks it
   up, into the chest (carrying the key) opens it. The phase's budget is the length of the
   scripted oracle's route (door, key, back to the chest) plus ``slack`` steps (default 2),
   which is less than the cost of looking behind one wrong door (3 steps or more): a policy
   without memory of the alcove succeeds with probability about 1/K.

## Mission
"remember where the key was and bring it to the chest"

## Observation
minigrid's ``Dict``: ``image`` (7x7x3 uint8), ``direction``, ``mission``. Walls and closed
doors hide what lies behind them (minigrid's default ``see_through_walls=False``).

## Actions
``Discrete(3)``: 0 turn left, 1 turn right, 2 forward (walking into an object uses it).

## Rewards
+1 for opening the chest with the key; ``apple_reward`` (default 0.05) per apple, at most
``apple_budget`` (default 0.2) from apples per episode: once that many apples have appeared,
eaten ones stay gone (``envs.keychest.common``).

## Termination
When the chest is opened, or when the chest phase's budget is spent (a failure). No
truncation. ``info["phase"]`` is the phase of the step's action; ``info["success"]`` is set at
the last step.

## Registered configurations
``mnemo/KeyChest-Return-D{16,64,256,1024}-v0``: K = 6 alcoves (a 14x7 map), ``delay`` 16, 64,
256, 1024.
Measured with the scripted oracle (``oracle_action``: the corridor, apples greedily, then
door, key, chest), return from apples / from the chest per registered delay: D16 0.15 / 1.0,
D64 0.20 / 1.0, D256 0.20 / 1.0, D1024 0.20 / 1.0, so the chest is >= 83% of the return at
every delay (without the budget the apples gave 0.15, 0.55, 2.15 and 8.55).
"""

from __future__ import annotations

from typing import Any

from mnemo.envs.keychest.common import (
    CHEST,
    COLORS,
    CUE,
    DISTRACTOR,
    FORWARD,
    Box,
    Door,
    Grid,
    Key,
    KeyChestEnv,
    Wall,
    WorldObj,
    plan,
    plan_length,
)
from mnemo.envs.keychest.kwargs import check_keychest_kwargs

CORRIDOR_Y = 3


def alcove_cells(i: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(door cell, key cell) of alcove ``i``: even alcoves above the corridor, odd below."""
    x = 2 + 3 * (i // 2)
    side = -1 if i % 2 == 0 else 1
    return (x, CORRIDOR_Y + side), (x, CORRIDOR_Y + 2 * side)


def return_mission() -> str:
    return "remember where the key was and bring it to the chest"


class KeyChestReturnEnv(KeyChestEnv):
    """See the module docstring. Layout options: ``{"alcove": i, "key_color": k}``."""

    def __init__(
        self,
        delay: int = 16,
        num_alcoves: int = 6,
        cue_steps: int | None = None,
        slack: int = 2,
        apple_reward: float = 0.05,
        apple_regrow: int = 10,
        apple_budget: float | None = 0.2,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_keychest_kwargs({"num_alcoves": num_alcoves, "slack": slack})  # cue_steps may be None
        self.num_alcoves, self.slack = num_alcoves, slack
        columns = (num_alcoves + 1) // 2
        width = 3 * columns + 5
        self.chest_cell = (width - 2, CORRIDOR_Y)
        self.alcove, self.key_color = 0, 0
        # Longest oracle route (farthest alcove) + slack bounds the chest phase.
        longest = 2 * (width - 3 - 2) + 12 + slack
        super().__init__(
            delay,
            return_mission,
            width=width,
            height=7,
            cue_steps=width - 4 if cue_steps is None else cue_steps,
            chest_steps=longest,
            apple_reward=apple_reward,
            apple_regrow=apple_regrow,
            apple_budget=apple_budget,
            see_through_walls=False,
            render_mode=render_mode,
            **kwargs,
        )

    def _sample_layout(self, options: dict[str, Any]) -> None:
        self.alcove = int(options.get("alcove", self.np_random.integers(self.num_alcoves)))
        self.key_color = int(options.get("key_color", self.np_random.integers(len(COLORS))))
        if not 0 <= self.alcove < self.num_alcoves:
            raise ValueError(f"alcove must be in [0, {self.num_alcoves}), got {self.alcove}")

    def _corridor(self, doors_open: bool) -> Grid:
        grid = Grid(self.width, self.height)
        for x in range(self.width):
            for y in range(self.height):
                if not (y == CORRIDOR_Y and 0 < x < self.width - 1):
                    grid.set(x, y, Wall())
        for i in range(self.num_alcoves):
            door, inner = alcove_cells(i)
            grid.set(*door, Door("grey", is_open=doors_open))
            grid.set(*inner, None)
        key_cell = alcove_cells(self.alcove)[1]
        grid.set(*key_cell, Key(COLORS[self.key_color]))
        return grid

    def _build_phase(self, phase: int) -> None:
        if phase == CUE:
            self.grid = self._corridor(doors_open=True)
            self.agent_pos, self.agent_dir = (1, CORRIDOR_Y), 0
            return
        self.grid = self._corridor(doors_open=False)
        self.grid.set(*self.chest_cell, Box(COLORS[self.key_color]))
        self.agent_pos, self.agent_dir = (self.chest_cell[0] - 1, CORRIDOR_Y), 0
        self.chest_budget = self._oracle_cost() + self.slack

    def _oracle_cost(self) -> int:
        """Steps of the oracle's route from the chest-phase start: door, key, chest."""
        door_cell, key_cell = alcove_cells(self.alcove)
        door, key = self.grid.get(*door_cell), self.grid.get(*key_cell)
        cost, (x, y, d) = plan_length(self.grid, self.agent_pos, self.agent_dir, [door_cell])
        door.is_open = True
        c, (x, y, d) = plan_length(self.grid, (x, y), d, [key_cell])
        cost += c
        self.grid.set(*key_cell, None)
        c, _ = plan_length(self.grid, (x, y), d, [self.chest_cell])
        cost += c + 3  # + the three uses: open, pick up, open the chest
        door.is_open = False
        self.grid.set(*key_cell, key)
        return cost

    def _use(self, obj: WorldObj, pos: tuple[int, int]) -> tuple[float, bool, bool]:
        if isinstance(obj, Door) and not obj.is_open:
            obj.is_open = True
        elif self.phase == CHEST and isinstance(obj, Key) and self.carrying is None:
            self.carrying = obj
            self.grid.set(*pos, None)
        elif self.phase == CHEST and isinstance(obj, Box) and self.carrying is not None:
            return 1.0, True, True
        return 0.0, False, False

    def route_action(self, alcove: int) -> int:
        """Chest-phase action of a policy that believes the key is in ``alcove``."""
        door_cell, key_cell = alcove_cells(alcove)
        door = self.grid.get(*door_cell)
        if self.carrying is not None:
            return plan(self.grid, self.agent_pos, self.agent_dir, [self.chest_cell])
        if not door.is_open:
            return plan(self.grid, self.agent_pos, self.agent_dir, [door_cell])
        if isinstance(self.grid.get(*key_cell), Key):
            return plan(self.grid, self.agent_pos, self.agent_dir, [key_cell])
        return FORWARD  # wrong alcove: nothing left to do

    def oracle_action(self) -> int:
        if self.phase == CUE:
            return FORWARD  # walk east along the corridor, past the alcoves
        if self.phase == DISTRACTOR:
            return self.apple_action()
        return self.route_action(self.alcove)
