"""One interface for the agent over any env: a tensor twin, or N gymnasium envs.

``make_vector_env`` returns a tensor twin when the env has one and the config allows it,
otherwise gymnasium's SyncVectorEnv (same-step autoreset) wrapped to speak torch like a twin.
Either way ``step`` returns torch tensors on the agent's device and ``info["success"]``,
``info["final_obs"]`` as described in envs/batched/base.py, except that ``success`` is a float:
NaN where a finished episode's env did not report one (never a false 0).

``env_id`` is any registered gymnasium id, or gymnasium's ``package:EnvId`` (import the package,
which registers the env, then make it). Tuple and Dict observations are packed into one flat
float vector per env (leaves in the space's order, each flattened); the encoder splits it back
(agents/rl/encoders.py), so rollout storage stays one tensor.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys
from collections.abc import Collection
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from minigrid.minigrid_env import MiniGridEnv

import mnemo.envs  # registers mnemo's envs
from mnemo.agents.checkpoint import safe_unpickle
from mnemo.agents.errors import CheckpointError
from mnemo.agents.rl.encoders import cell_grid_space, composite_leaves
from mnemo.envs.batched import has_twin, make_batched

_warned_no_twin: set[str] = set()


def resolve_env_id(env_id: str) -> str:
    """``package:EnvId`` -> ``EnvId`` once ``package`` is imported (gymnasium's convention: the
    package registers the env); any other id as it is."""
    package, _, name = env_id.rpartition(":")
    if package:
        importlib.import_module(package)
    return name


def check_checkpoint_import(env_id: str, allowed: Collection[str], where: str) -> tuple[str, ...]:
    """Refuse an ``env.id`` read from a checkpoint (not typed by the user) whose
    ``package:EnvId`` form would import a module not yet imported and not in ``allowed``
    (``--import PACKAGE``): importing runs the module's code, and a checkpoint must not choose
    code to run. Returns the module prefixes the user vouched for (``("pkg.",)`` when ``pkg``
    is in ``allowed``), the only ones whose classes its pickled envs may hold."""
    package = env_id.rpartition(":")[0]
    if package in allowed:
        return (package + ".",)
    if package and package not in sys.modules:
        raise CheckpointError(
            f"{where}: its env.id {env_id!r} would import the module {package!r}, and a "
            f"checkpoint alone never makes mnemo import code; if you trust it, add --import "
            f"{package}"
        )
    return ()


SUCCESS_KEYS = ("success", "is_success")
"""Where an env says in ``info`` whether an episode succeeded (gymnasium-robotics: "is_success")."""


def counted_success(ret: Any, said: Any, success_return: float | None) -> Any:
    """An episode's success as mnemo counts it in training, evaluation and videos alike: its
    return reaching ``env.success_return`` when that is set (whatever the env says), else what
    the env said (None or NaN where it said nothing: never guessed from the reward). Works on
    floats and on tensors of many envs at once."""
    return said if success_return is None else ret >= success_return


def reports_success(env_id: str) -> bool:
    """Whether the env puts ``success`` in ``info`` when an episode ends (mnemo's envs do)."""
    return gym.spec(env_id).id in mnemo.envs.mnemo_env_ids()


def accepted_kwargs(env_id: str) -> str:
    """The kwargs ``env_id``'s constructor names, as words for a refused kwarg's line ('' where
    its signature cannot be read)."""
    entry = gym.spec(resolve_env_id(env_id)).entry_point
    try:
        params = inspect.signature(load_env_creator(entry) if isinstance(entry, str) else entry)
    except (ImportError, AttributeError, TypeError, ValueError):
        return ""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for p in params.parameters.values() if p.kind in named]
    names = [n for n in names if n != "render_mode"]  # set by mnemo itself for videos
    passes_on = any(p.kind is p.VAR_KEYWORD for p in params.parameters.values())
    if not names:
        return ""
    more = " (and what it passes on to its base class)" if passes_on else ""
    return f"; it accepts {', '.join(names)}{more}"


def is_minigrid(env_id: str) -> bool:
    entry = gym.spec(env_id).entry_point
    cls = load_env_creator(entry) if isinstance(entry, str) else entry
    return isinstance(cls, type) and issubclass(cls, MiniGridEnv)


def _unwrap_image(env: gym.Env) -> gym.Env:
    if isinstance(env.unwrapped, MiniGridEnv) and isinstance(env.observation_space, spaces.Dict):
        from minigrid.wrappers import ImgObsWrapper

        env = ImgObsWrapper(env)  # the mission text and direction are not used
        env.observation_space = cell_grid_space(env.observation_space)
    return env


def _pack(space: spaces.Space, obs: Any) -> np.ndarray:
    """A batch of Tuple/Dict observations -> (B, total) float32, leaves in the space's order."""
    parts = []
    for path, _ in composite_leaves(space):
        x = obs
        for key in path:
            x = x[key]
        x = np.asarray(x)
        parts.append(x.reshape(x.shape[0], -1).astype(np.float32))
    return np.concatenate(parts, axis=1)


def batch_of_one(space: spaces.Space, obs: Any) -> np.ndarray:
    """One observation of ``space`` as the agent reads it: a batch of one, Tuple/Dict packed."""
    if isinstance(space, (spaces.Dict, spaces.Tuple)):
        return _pack(space, _stack(space, [obs]))
    return np.asarray(obs)[None]


def _stack(space: spaces.Space, items: list[Any]) -> Any:
    """Single observations -> one batched observation of the same structure."""
    if isinstance(space, spaces.Dict):
        return {k: _stack(s, [it[k] for it in items]) for k, s in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(_stack(s, [it[i] for it in items]) for i, s in enumerate(space.spaces))
    return np.stack([np.asarray(it) for it in items])


class GymVectorEnv:
    """SyncVectorEnv of ``num_envs`` copies of ``env_id``, returning torch tensors."""

    def __init__(
        self, env_id: str, num_envs: int, device: torch.device | str, **kwargs: Any
    ) -> None:
        def make() -> gym.Env:
            return _unwrap_image(gym.make(env_id, **kwargs))

        self.env = SyncVectorEnv([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.single_observation_space = self.env.envs[0].observation_space
        self.single_action_space = self.env.single_action_space
        self.composite = isinstance(self.single_observation_space, (spaces.Dict, spaces.Tuple))

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x), device=self.device)

    def _obs(self, obs: Any) -> np.ndarray:
        return _pack(self.single_observation_space, obs) if self.composite else np.asarray(obs)

    def reset(self, *, seed: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        # One independent stream per env and run seed (gymnasium's default, seed + i, makes run
        # seed 0's envs 1..N-1 replay run seed 1's envs 0..N-2).
        seeds = None
        if seed is not None:
            children = np.random.SeedSequence(seed).spawn(self.num_envs)
            seeds = [int(c.generate_state(1)[0]) for c in children]
        obs, info = self.env.reset(seed=seeds)
        return self._t(self._obs(obs)), info

    def step(self, actions: torch.Tensor) -> tuple:
        obs, reward, term, trunc, info = self.env.step(actions.cpu().numpy())
        done = term | trunc
        # NaN: the env did not say (success is then "not available", never a false 0).
        success = np.full(self.num_envs, np.nan, dtype=np.float32)
        # Same-step autoreset moves a finished episode's info under "final_info".
        final = info.get("final_info", {})
        for key in SUCCESS_KEYS:
            if key in final:
                said = np.asarray(final.get(f"_{key}", True), dtype=bool) & done
                success = np.where(said, np.asarray(final[key], dtype=np.float32), success)
        packed = self._obs(obs)
        final_obs = packed.copy()
        if "final_obs" in info:
            ended = np.nonzero(done)[0]
            if len(ended):
                single = [info["final_obs"][i] for i in ended]
                final_obs[ended] = self._obs(_stack(self.single_observation_space, single))
        out_info = {"success": self._t(success), "final_obs": self._t(final_obs)}
        return (
            self._t(packed),
            self._t(reward).float(),
            self._t(term).bool(),
            self._t(trunc).bool(),
            out_info,
        )

    def get_state(self) -> bytes:
        """The envs themselves, pickled (their RNGs included), for exact resume."""
        return pickle.dumps(self.env.envs)

    def set_state(self, state: bytes, trusted: tuple[str, ...] = ()) -> None:
        """Envs from ``get_state``, unpickled accepting only env, space and numpy classes
        (and those of the ``trusted`` module prefixes, an outside env's ``"pkg."``)."""
        self.env.envs = safe_unpickle(state, trusted)

    def render_env(self, index: int = 0) -> gym.Env:
        return self.env.envs[index]

    def close(self) -> None:
        self.env.close()


def make_vector_env(
    env_id: str,
    num_envs: int,
    device: torch.device | str,
    batched: bool = True,
    **kwargs: Any,
) -> Any:
    """A twin when ``batched`` and one exists, else a ``GymVectorEnv`` (``warn_if_no_twin``
    says so)."""
    env_id = resolve_env_id(env_id)
    if batched and has_twin(env_id):
        env = make_batched(env_id, num_envs, device=device, **kwargs)
        space = env.single_observation_space
        if is_minigrid(env_id) and isinstance(space, spaces.Box) and len(space.shape) == 3:
            env.single_observation_space = cell_grid_space(space)
        return env
    return GymVectorEnv(env_id, num_envs, device, **kwargs)


def warn_if_no_twin(env: Any, env_id: str, batched: bool) -> None:
    """Say once per env id, on stderr, that ``env.batched=true`` found no tensor twin."""
    if batched and isinstance(env, GymVectorEnv) and env_id not in _warned_no_twin:
        _warned_no_twin.add(env_id)
        print(
            f"warning: {env_id} has no tensor twin; stepping {env.num_envs} gymnasium envs on "
            "the host (env.batched=false says so and silences this)",
            file=sys.stderr,
        )
