"""Every KeyChest kwarg is checked, in one line naming it, by the gym variants and the tensor
twin alike (envs/keychest/kwargs.py): YAML's ``maybe``, ``.nan``, ``.inf`` and ``true`` never
turn into a setting."""

from __future__ import annotations

import math

import pytest

from mnemo.envs.batched.keychest import BatchedKeyChestMatch
from mnemo.envs.keychest import KeyChestFetchEnv, KeyChestMatchEnv, KeyChestReturnEnv

BAD = [
    ("shuffle_chests", "maybe", "shuffle_chests must be true or false, got 'maybe'"),
    ("shuffle_chests", 1, "shuffle_chests must be true or false"),
    ("apple_reward", math.nan, "apple_reward must be a finite number, got nan"),
    ("apple_reward", math.inf, "apple_reward must be a finite number, got inf"),
    ("apple_reward", True, "apple_reward must be a finite number, got True"),
    ("apple_reward", "x", "apple_reward must be a finite number"),
    ("apple_budget", math.inf, "apple_budget must be a finite number >= 0, or null"),
    ("apple_budget", math.nan, "apple_budget must be a finite number >= 0, or null"),
    ("apple_budget", -1, "apple_budget must be a finite number >= 0, or null"),
    ("delay", True, "delay must be an integer >= 0, got True"),
    ("cue_steps", 1.5, "cue_steps must be an integer >= 1"),
    ("apple_regrow", 0, "apple_regrow must be an integer >= 1"),
    ("num_colors", 2.0, "num_colors must be an integer in [2, 4], got 2.0"),
    ("apple_color", 3, "apple_color must be one of red"),
]
MAKERS = {
    "gym": lambda **kw: KeyChestMatchEnv(**kw),
    "twin": lambda **kw: BatchedKeyChestMatch(2, **kw),
}


@pytest.mark.parametrize("maker", MAKERS)
@pytest.mark.parametrize(("key", "value", "said"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_match_refuses_naming_the_key(maker: str, key: str, value: object, said: str) -> None:
    with pytest.raises(ValueError) as e:
        MAKERS[maker](**{key: value})
    assert said in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("make", "key", "value", "said"),
    [
        (KeyChestFetchEnv, "pickup_reward", math.nan, "pickup_reward must be a finite number"),
        (KeyChestFetchEnv, "apple_reward", math.nan, "apple_reward must be a finite number"),
        (KeyChestReturnEnv, "slack", True, "slack must be an integer >= 0, got True"),
        (KeyChestReturnEnv, "num_alcoves", 1, "num_alcoves must be an integer >= 2"),
        (KeyChestReturnEnv, "apple_budget", math.inf, "apple_budget must be a finite number"),
    ],
)
def test_fetch_and_return_refuse_naming_the_key(
    make: type, key: str, value: object, said: str
) -> None:
    with pytest.raises(ValueError, match=said):
        make(**{key: value})


@pytest.mark.parametrize("maker", MAKERS)
def test_good_values_pass(maker: str) -> None:
    env = MAKERS[maker](shuffle_chests=True, apple_budget=None, apple_reward=1, delay=0)
    assert env.shuffle_chests is True and env.max_apples is None
