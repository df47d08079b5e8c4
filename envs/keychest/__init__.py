"""KeyChest: see a key, live through a long distraction, then use the memory at a chest.

Three variants, one per file: ``match`` (recall the key's colour), ``fetch`` (key-to-door:
carry the key across the delay) and ``return_key`` (spatial: walk back to where the key was).
Shared phases, distractor room and planner live in ``common``.
"""

from __future__ import annotations

from mnemo.envs.keychest.fetch import KeyChestFetchEnv
from mnemo.envs.keychest.match import KeyChestMatchEnv
from mnemo.envs.keychest.return_key import KeyChestReturnEnv

__all__ = ["KeyChestFetchEnv", "KeyChestMatchEnv", "KeyChestReturnEnv"]
