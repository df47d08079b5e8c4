"""mnemo's gymnasium environments; importing this package registers them (namespace ``mnemo``)."""

from __future__ import annotations

import re

import gymnasium as gym

RECALL_DELAYS = (8, 16, 32, 64, 128, 256, 512, 1024)
KEYCHEST_DELAYS = (16, 64, 256, 1024)
# Entry points as strings, so that importing envs does not import minigrid.
KEYCHEST_VARIANTS = {
    "Match": "mnemo.envs.keychest.match:KeyChestMatchEnv",
    "Fetch": "mnemo.envs.keychest.fetch:KeyChestFetchEnv",
    "Return": "mnemo.envs.keychest.return_key:KeyChestReturnEnv",
}


def _register() -> None:
    for d in RECALL_DELAYS:
        env_id = f"mnemo/Recall-D{d}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="mnemo.envs.recall:RecallEnv", kwargs={"delay": d})
    for variant, entry_point in KEYCHEST_VARIANTS.items():
        for d in KEYCHEST_DELAYS:
            env_id = f"mnemo/KeyChest-{variant}-D{d}-v0"
            if env_id not in gym.registry:
                gym.register(env_id, entry_point=entry_point, kwargs={"delay": d})


_register()


def mnemo_env_ids() -> list[str]:
    """Every env id registered by mnemo."""

    def natural(env_id: str) -> list[object]:  # D8 before D16 before D1024
        return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", env_id)]

    return sorted((i for i in gym.registry if i.startswith("mnemo/")), key=natural)
