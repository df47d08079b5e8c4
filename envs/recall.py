"""Recall: the diagnostic memory task.

## Description
A symbol, one of ``num_symbols`` (K), is shown at the first step. Then come ``delay`` (D) steps
of blank observations (or uniform noise, with ``noise=True``) during which actions do nothing.
Then a query step: the action taken there must name the symbol. The only way to succeed more
often than 1/K is to carry the symbol across the delay.

## Observation
``Box(0, 1, (K + 1,), float32)``: at t = 0 the one-hot symbol in the first K entries; at the
query step (t = D + 1) a 1 in the last entry; zeros in between (or noise in the first K entries).

## Actions
``Discrete(K)``: only the action at the query step matters.

## Rewards
+1 if the query action equals the symbol, else 0. Nothing at other steps.

## Termination
After the query step: every episode lasts exactly D + 2 steps. ``info["success"]`` is given at
the last step, ``info["phase"]`` at every step: the phase the step's action was taken in ("cue",
"delay", "query"; reset's info names the first action's), as KeyChest's envs say it.

## Rendering
``render_mode="rgb_array"`` draws a small picture (64 x 96 RGB): on the left what the agent sees
(the symbol's colour at the cue, grey noise or black in the delay, a white "?" block at the
query); on the right the answer key (the symbol's colour, always shown to the viewer) and, after
the query, the colour the agent answered, framed green if right and red if wrong; along the
bottom a time bar coloured by phase.

## Registered configurations
``mnemo/Recall-D{8,16,32,64,128,256,512,1024}-v0`` with K = 4 (``envs.RECALL_DELAYS``); each
also runs as the tensor twin ``envs.batched.recall.BatchedRecall`` (``make_batched``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# Distinct colours for the first symbols; more symbols fall back to a hue wheel.
_PALETTE = np.array(
    [[230, 60, 60], [60, 120, 230], [250, 200, 40], [60, 190, 90], [190, 80, 220], [40, 200, 210]],
    dtype=np.uint8,
)
_PHASE_COLOURS = {"cue": (230, 230, 230), "delay": (90, 90, 110), "query": (255, 255, 255)}


MAX_SYMBOLS = 4096
"""Largest ``num_symbols``: the observation is a one-hot of K + 1 floats per env, and a config
typo such as 3e9 would otherwise allocate gigabytes (per env) before anything says so."""


def check_recall_kwargs(delay: object, num_symbols: object, noise: object) -> None:
    """One line for a kwarg out of range: ``delay`` an integer >= 0, ``num_symbols`` an integer
    in [2, MAX_SYMBOLS], ``noise`` true or false (the env and its tensor twin share it)."""
    # bool is an int to Python: delay=true would be a delay of 1, as KeyChest's checks refuse.
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ValueError(f"delay must be an integer >= 0, got {delay!r}")
    if (
        isinstance(num_symbols, bool)
        or not isinstance(num_symbols, int)
        or not 2 <= num_symbols <= MAX_SYMBOLS
    ):
        raise ValueError(
            f"num_symbols must be an integer in [2, {MAX_SYMBOLS}], got {num_symbols!r}"
        )
    if not isinstance(noise, bool):  # a string such as "no" would switch noise on
        raise ValueError(f"noise must be true or false, got {noise!r}")


def symbol_colour(symbol: int, num_symbols: int) -> np.ndarray:
    """An RGB colour (uint8) for ``symbol``, distinct across ``num_symbols``."""
    if num_symbols <= len(_PALETTE):
        return _PALETTE[symbol]
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(symbol / num_symbols, 0.75, 0.95)
    return np.array([r * 255, g * 255, b * 255], dtype=np.uint8)


class RecallEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}  # noqa: RUF012

    def __init__(
        self,
        delay: int = 16,
        num_symbols: int = 4,
        noise: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self._answer: int | None = None
        check_recall_kwargs(delay, num_symbols, noise)
        self.delay = delay
        self.num_symbols = num_symbols
        self.noise = noise
        self.observation_space = spaces.Box(0.0, 1.0, (num_symbols + 1,), np.float32)
        self.action_space = spaces.Discrete(num_symbols)
        self._t = 0
        self._symbol = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(self.num_symbols + 1, dtype=np.float32)
        if self._t == 0:
            obs[self._symbol] = 1.0
        elif self._t == self.delay + 1:
            obs[-1] = 1.0
        elif self.noise:
            obs[: self.num_symbols] = self.np_random.random(self.num_symbols, dtype=np.float32)
        return obs

    def _phase(self) -> str:
        if self._t == 0:
            return "cue"
        return "query" if self._t == self.delay + 1 else "delay"

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._symbol = int(self.np_random.integers(self.num_symbols))
        self._answer = None
        return self._obs(), {"phase": self._phase()}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        phase = self._phase()  # of this action: what a memory plot marks this step with
        if self._t == self.delay + 1:
            success = int(action) == self._symbol
            self._answer = int(action)
            self._t += 1
            obs = np.zeros(self.num_symbols + 1, dtype=np.float32)
            return obs, float(success), True, False, {"success": success, "phase": phase}
        self._t += 1
        return self._obs(), 0.0, False, False, {"phase": phase}

    def render(self) -> np.ndarray | None:
        """The current step as a (64, 96, 3) uint8 picture (see Rendering above)."""
        if self.render_mode != "rgb_array":
            return None
        img = np.full((64, 96, 3), 24, dtype=np.uint8)
        seen = img[6:46, 6:46]
        if self._t == 0:
            seen[:] = symbol_colour(self._symbol, self.num_symbols)
        elif self._t == self.delay + 1:
            seen[:] = 255
            # A "?" drawn as blocks, so that no font is needed.
            for y0, y1, x0, x1 in (
                (10, 14, 14, 26),
                (14, 20, 24, 28),
                (20, 24, 18, 24),
                (30, 34, 18, 24),
            ):
                seen[y0:y1, x0:x1] = 0
        elif self.noise:
            seen[:] = self.np_random.integers(0, 160, (40, 40, 1), dtype=np.uint8)
        img[6:20, 54:90] = symbol_colour(self._symbol, self.num_symbols)  # answer key
        if self._answer is not None:
            frame = (60, 200, 80) if self._answer == self._symbol else (220, 50, 50)
            img[24:46, 54:90] = frame
            img[27:43, 57:87] = symbol_colour(self._answer, self.num_symbols)
        # Time bar: elapsed part coloured by phase, the rest dark.
        total = self.delay + 2
        done = min(self._t + 1, total)
        width = max(1, round(84 * done / total))
        phase = "query" if self._t > self.delay else self._phase()
        img[52:58, 6:90] = 50
        img[52:58, 6 : 6 + width] = _PHASE_COLOURS[phase]
        return img

    def oracle_action(self) -> int:
        """The right answer (for scripted-oracle tests)."""
        return self._symbol
