"""The checks of every KeyChest kwarg, shared by the gym variants and the tensor twin.

A kwarg arrives from YAML or ``--env KEY=VALUE`` as whatever YAML made of it: ``maybe`` is a
string, ``.nan`` a float, ``true`` a bool (and Python's bool is an int). Each is refused here,
in one line naming the key and what is valid, before it can turn into something else
(``bool("maybe")`` is True, ``int(nan)`` raises without the key's name, ``int(inf)`` raises
``OverflowError``). The messages are ``ValueError``s: the env maker reports them as the
user's (agents/rl/vector_env.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Real

import numpy as np
from minigrid.core.constants import COLOR_TO_IDX

__all__ = ["check_apple_color", "check_keychest_kwargs"]

COLORS = tuple(sorted(COLOR_TO_IDX, key=COLOR_TO_IDX.__getitem__))  # red, green, blue, ...
MAX_COLORS = 4
"""Chests in the Match room (one per colour)."""

_INT_AT_LEAST = {
    "delay": 0,
    "cue_steps": 1,
    "chest_steps": 1,
    "apple_regrow": 1,
    "num_alcoves": 2,
    "slack": 0,
}
_FINITE = ("apple_reward", "pickup_reward")
_BOOLS = ("shuffle_chests",)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_apple_color(apple_color: object) -> str:
    """``apple_color`` if minigrid knows it, else one clear line naming the valid colours.

    The default green is also a key colour (keys use the first ``num_colors`` of ``COLORS``):
    apples of a colour no key has (``"yellow"``, ``"grey"``) keep the distractor from showing
    the colour the agent must remember.
    """
    if not isinstance(apple_color, str) or apple_color not in COLOR_TO_IDX:
        raise ValueError(f"apple_color must be one of {', '.join(COLORS)}, got {apple_color!r}")
    return apple_color


def check_keychest_kwargs(values: Mapping[str, object]) -> None:
    """Refuse, naming the key, a KeyChest kwarg of the wrong kind or range: an integer where
    one is due (not a bool, not 2.0), a finite number (not NaN or inf), true or false for a
    switch, ``apple_budget`` a finite number >= 0 or null, ``apple_color`` a minigrid colour.

    ``values`` may hold other names too (an ``__init__``'s ``locals()``: ``self``,
    ``num_envs``...); only the KeyChest kwargs among them are checked."""
    for name, value in values.items():
        if name in _INT_AT_LEAST:
            low = _INT_AT_LEAST[name]
            if not _is_int(value) or value < low:  # type: ignore[operator]
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        elif name == "num_colors":
            if not _is_int(value) or not 2 <= value <= MAX_COLORS:  # type: ignore[operator]
                raise ValueError(
                    f"num_colors must be an integer in [2, {MAX_COLORS}], got {value!r}"
                )
        elif name in _FINITE:
            if not _is_number(value) or not math.isfinite(value):  # type: ignore[arg-type]
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        elif name == "apple_budget":
            if value is not None and not (
                _is_number(value) and math.isfinite(value) and value >= 0  # type: ignore[arg-type,operator]
            ):
                raise ValueError(
                    f"apple_budget must be a finite number >= 0, or null for no bound, "
                    f"got {value!r}"
                )
        elif name in _BOOLS:
            if not isinstance(value, bool):  # a string such as "no" would switch it on
                raise ValueError(f"{name} must be true or false, got {value!r}")
        elif name == "apple_color":
            check_apple_color(value)
