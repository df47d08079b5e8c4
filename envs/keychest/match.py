"""KeyChest-Match: remember a key's colour across a distractor phase, open the chest that matches.

## Description
A recall task in three rooms of the same 7x7 grid (5x5 inside the walls); the agent is moved
from one to the next at fixed step counts, so no exploration skill is needed.

1. **cue** (``cue_steps`` steps): the agent faces a key of one of ``num_colors`` (K) colours,
   one cell ahead. Walking into it does nothing.
2. **distractor** (``delay`` steps): a room with an apple (a ball, green unless ``apple_color``
   says otherwise: green is also a key colour) in each corner.
   Walking into an apple eats it for ``apple_reward``; it grows back ``apple_regrow`` steps
   later, so the agent has to keep moving to collect reward rather than wait, until the
   episode's ``apple_budget`` (default 0.2, i.e. 4 apples) is used up: from then on eaten
   apples stay gone, so the distractor pays at most ``apple_budget`` at any delay.
3. **chest** (at most ``chest_steps`` steps): the agent stands in the middle with K chests
   (minigrid boxes) of different colours around it, in front, left, right and (K = 4) behind.
   Walking into a chest opens it. By default the order is fixed (colour i in slot i), so the
   memory maps straight to a direction, as in the recall task; with ``shuffle_chests=True``
   the order is random and the agent must also compare the remembered colour with the chests
   it sees (much harder to learn: a PPO+LSTM was still at chance after 1M steps).

Only a memory of the key's colour tells which chest to open: a policy without memory that
plays everything else perfectly succeeds with probability 1/K.

## Mission
"remember the key and open the chest of its colour"

## Observation
minigrid's ``Dict``: ``image`` (7x7x3 uint8 egocentric view: object, colour, state),
``direction`` (0-3) and ``mission``. Nothing is hidden by walls (``see_through_walls=True``),
which keeps the image computable by the tensor twin ``envs.batched.keychest``.

## Actions
``Discrete(3)``: 0 turn left, 1 turn right, 2 forward (walking into an object uses it).

## Rewards
+1 for opening the chest of the key's colour; ``apple_reward`` (default 0.05) per apple, at
most ``apple_budget`` (default 0.2) from apples per episode (``envs.keychest.common``).

## Termination
When a chest is opened (right or wrong), or when the chest phase's ``chest_steps`` are spent
(a failure). Episodes last at most ``cue_steps + delay + chest_steps`` steps; there is no
truncation. ``info["phase"]`` names the phase the step's action was taken in ("cue",
"distractor", "chest"), so rewards can be split by phase; ``info["success"]`` is set at the
last step of an episode.

## Registered configurations
``mnemo/KeyChest-Match-D{16,64,256,1024}-v0``: K = 4, chests in fixed order, ``delay`` 16,
64, 256, 1024. Other settings through kwargs, e.g. ``gym.make(id, shuffle_chests=True)``.
Measured with the scripted oracle (``oracle_action``: apples greedily, then the right chest),
return from apples / from the chest per registered delay: D16 0.15 / 1.0, D64 0.20 / 1.0,
D256 0.20 / 1.0, D1024 0.20 / 1.0, so the chest is >= 83% of the return at every delay
(without the budget the apples gave 0.15, 0.55, 2.15 and 8.55).
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
    Key,
    KeyChestEnv,
    WorldObj,
    plan,
    room_grid,
)
from mnemo.envs.keychest.kwargs import check_keychest_kwargs

CUE_START = ((3, 5), 3)  # position, direction (3 = up)
KEY_CELL = (3, 4)
CHEST_START = ((3, 3), 3)
CHEST_SLOTS = ((3, 2), (2, 3), (4, 3), (3, 4))  # front, left, right, behind


def match_mission() -> str:
    return "remember the key and open the chest of its colour"


class KeyChestMatchEnv(KeyChestEnv):
    """See the module docstring. Layout options: ``reset(options={"layout": {"key_color": k,
    "chest_colors": [c_front, c_left, ...]}})`` with colour indices into ``COLORS``."""

    def __init__(
        self,
        delay: int = 16,
        num_colors: int = 4,
        cue_steps: int = 2,
        chest_steps: int = 4,
        apple_reward: float = 0.05,
        apple_regrow: int = 10,
        apple_budget: float | None = 0.2,
        shuffle_chests: bool = False,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_keychest_kwargs(locals())  # the base checks the shared ones again: harmless
        self.num_colors = num_colors
        self.shuffle_chests = shuffle_chests
        self.key_color = 0
        self.chest_colors: list[int] = list(range(num_colors))
        super().__init__(
            delay,
            match_mission,
            width=7,
            height=7,
            cue_steps=cue_steps,
            chest_steps=chest_steps,
            apple_reward=apple_reward,
            apple_regrow=apple_regrow,
            apple_budget=apple_budget,
            render_mode=render_mode,
            **kwargs,
        )

    def _sample_layout(self, options: dict[str, Any]) -> None:
        k = self.num_colors
        key = options.get("key_color", self.np_random.integers(k))
        order = self.np_random.permutation(k) if self.shuffle_chests else range(k)
        chests = options.get("chest_colors", order)
        self.key_color, self.chest_colors = int(key), [int(c) for c in chests]
        if not 0 <= self.key_color < k or sorted(self.chest_colors) != list(range(k)):
            raise ValueError(
                f"layout needs key_color in [0, {k}) and chest_colors a permutation of "
                f"range({k}), got {self.key_color} and {self.chest_colors}"
            )

    def _build_phase(self, phase: int) -> None:
        self.grid = room_grid(self.width, self.height)
        if phase == CUE:
            self.grid.set(*KEY_CELL, Key(COLORS[self.key_color]))
            self.agent_pos, self.agent_dir = CUE_START
        else:
            for (x, y), c in zip(CHEST_SLOTS, self.chest_colors):
                self.grid.set(x, y, Box(COLORS[c]))
            self.agent_pos, self.agent_dir = CHEST_START

    def _use(self, obj: WorldObj, pos: tuple[int, int]) -> tuple[float, bool, bool]:
        if self.phase == CHEST and isinstance(obj, Box):
            success = obj.color == COLORS[self.key_color]
            return float(success), True, success
        return 0.0, False, False

    def oracle_action(self) -> int:
        if self.phase == CUE:
            return FORWARD  # blocked by the key: the agent just looks at it
        if self.phase == DISTRACTOR:
            return self.apple_action()
        target = CHEST_SLOTS[self.chest_colors.index(self.key_color)]
        return plan(self.grid, self.agent_pos, self.agent_dir, [target])
