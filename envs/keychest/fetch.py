"""KeyChest-Fetch: pick up a key, carry it through a distractor phase, open a chest with it.

## Description
The key-to-door task of Hung et al. (2019, "Optimizing agent behavior over long time scales
by transporting value"), in the rooms of KeyChest-Match:

1. **cue** (``cue_steps`` steps): a key one cell ahead of the agent; walking into it picks it
   up (``pickup_reward``, default 0). The phase ends at its step count, key or no key.
2. **distractor** (``delay`` steps): the apple room of KeyChest-Match.
3. **chest** (at most ``chest_steps`` steps): one chest ahead of the agent. Walking into it
   opens it only if the agent carries the key; without the key nothing happens.

The carried key is visible in the agent's own cell of the image (as in minigrid), so the
challenge is credit assignment across the delay: the pickup decides a reward paid ``delay``
steps later. A small ``pickup_reward`` makes the pickup easy to learn and isolates the memory
part of the problem (Ni et al. 2023, "When do transformers shine in RL?").

## Mission
"pick up the key and open the chest"

## Observation
minigrid's ``Dict``: ``image`` (7x7x3 uint8), ``direction``, ``mission``; see-through walls.

## Actions
``Discrete(3)``: 0 turn left, 1 turn right, 2 forward (walking into an object uses it).

## Rewards
+1 for opening the chest; ``pickup_reward`` for the pickup; ``apple_reward`` (default 0.05)
per apple, at most ``apple_budget`` (default 0.2) from apples per episode: once that many
apples have appeared, eaten ones stay gone (``envs.keychest.common``).

## Termination
When the chest is opened, or when ``chest_steps`` chest-phase steps are spent (a failure).
No truncation. ``info["phase"]`` is the phase of the step's action; ``info["success"]`` is set
at the last step.

## Registered configurations
``mnemo/KeyChest-Fetch-D{16,64,256,1024}-v0``: ``delay`` 16, 64, 256, 1024, no pickup reward.
Measured with the scripted oracle (``oracle_action``: the key, apples greedily, the chest),
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
from mnemo.envs.keychest.match import CHEST_SLOTS, CHEST_START, CUE_START, KEY_CELL


def fetch_mission() -> str:
    return "pick up the key and open the chest"


class KeyChestFetchEnv(KeyChestEnv):
    """See the module docstring. Layout option: ``{"key_color": k}`` (colour index)."""

    def __init__(
        self,
        delay: int = 16,
        pickup_reward: float = 0.0,
        cue_steps: int = 2,
        chest_steps: int = 4,
        apple_reward: float = 0.05,
        apple_regrow: int = 10,
        apple_budget: float | None = 0.2,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_keychest_kwargs({"pickup_reward": pickup_reward})
        self.pickup_reward = float(pickup_reward)
        self.key_color = 0
        super().__init__(
            delay,
            fetch_mission,
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
        # The colour carries no information here; it only varies what the agent sees.
        self.key_color = int(options.get("key_color", self.np_random.integers(len(COLORS))))

    def _build_phase(self, phase: int) -> None:
        self.grid = room_grid(self.width, self.height)
        if phase == CUE:
            self.grid.set(*KEY_CELL, Key(COLORS[self.key_color]))
            self.agent_pos, self.agent_dir = CUE_START
        else:
            self.grid.set(*CHEST_SLOTS[0], Box(COLORS[self.key_color]))
            self.agent_pos, self.agent_dir = CHEST_START

    def _use(self, obj: WorldObj, pos: tuple[int, int]) -> tuple[float, bool, bool]:
        if self.phase == CUE and isinstance(obj, Key) and self.carrying is None:
            self.carrying = obj
            self.grid.set(*pos, None)
            return self.pickup_reward, False, False
        if self.phase == CHEST and isinstance(obj, Box) and self.carrying is not None:
            return 1.0, True, True
        return 0.0, False, False

    def oracle_action(self) -> int:
        if self.phase == CUE:
            return FORWARD  # picks up the key, then walks into its cell
        if self.phase == DISTRACTOR:
            return self.apple_action()
        return plan(self.grid, self.agent_pos, self.agent_dir, [CHEST_SLOTS[0]])
