"""mnemo's gymnasium environments; importing this package registers them (namespace ``mnemo``)."""

from __future__ import annotations

import gymnasium as gym

RECALL_DELAYS = (8, 16, 32, 64, 128, 256)


def _register() -> None:
    for d in RECALL_DELAYS:
        env_id = f"mnemo/Recall-D{d}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="envs.recall:RecallEnv", kwargs={"delay": d})


_register()


def mnemo_env_ids() -> list[str]:
    """Every env id registered by mnemo."""
    return sorted(i for i in gym.registry if i.startswith("mnemo/"))
