"""A run's memory, estimated before anything is allocated, and sizes that would not fit refused.

``env.num_envs=1e6``, ``ppo.rollout_len=1e7``, ``agent.encoder_hidden=1e8`` or
``core.mem_len=1e5`` would otherwise be found out by the OOM killer (or hours of swapping)
after the run folder exists. Each head adds up what its sizes imply (agents/rl/config.py,
agents/lm/config.py): the weights with their gradients and Adam's two moments, the rollout or
batch storage, the core states kept, and a floor for the activations; ``check_memory``
refuses a total over half of the machine's memory (the GPU's on ``cuda``) in one line that
gives the estimate and its parts, unless the config says ``memory_check: false``.

Models are built on torch's ``meta`` device: the constructors check their arguments and the
parameter and state sizes are read off, with no memory behind them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from mnemo.agents.errors import ConfigError
from mnemo.memory.base import tree_leaves

__all__ = ["build_on_meta", "check_memory", "state_bytes", "training_bytes"]

GiB = 2**30


def build_on_meta(build: Callable[[], Any], what: str) -> Any:
    """``build()`` on the meta device; a size its constructor rejects fails in one line."""
    from mnemo.memory import CoreConfigError

    try:
        with torch.device("meta"):
            return build()
    except ConfigError:
        raise
    except CoreConfigError as e:  # already one line naming the core and option
        raise ConfigError(str(e)) from e
    except (RuntimeError, MemoryError, OverflowError, ValueError, TypeError) as e:
        # torch reports a size past 2**63 as a TypeError ("Overflow when unpacking long");
        # any other TypeError is a bug of ours, not a size, and keeps its traceback.
        if isinstance(e, TypeError) and "overflow" not in str(e).lower():
            raise
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ConfigError(f"{what} cannot be built with these sizes: {first}") from e


def training_bytes(model: torch.nn.Module) -> int:
    """Weights, their gradients and Adam's two moments: 4x the weights."""
    return 4 * sum(p.numel() * p.element_size() for p in model.parameters())


def state_bytes(core: Any) -> int:
    """Bytes of one row (one env, one stream) of ``core``'s state."""
    with torch.device("meta"):
        state = core.initial_state(1, "meta")
    return sum(x.numel() * x.element_size() for x in tree_leaves(state))


def _budget(device: str) -> tuple[float, str]:
    """(bytes, what they are) the run may use: the GPU's memory on cuda, else the RAM."""
    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        if index < torch.cuda.device_count():
            return torch.cuda.get_device_properties(index).total_memory, "GPU memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "memory"


def check_memory(
    parts: dict[str, float],
    lower: str,
    device: str,
    enabled: bool,
    insist: str | None = "set memory_check=false",
) -> float:
    """Refuse, in one line, a total of ``parts`` (name -> bytes) over half of the budget;
    ``lower`` names the keys to lower, ``insist`` how to go on anyway (None: no way). Returns
    the total."""
    total = float(sum(parts.values()))
    budget, kind = _budget(device)
    if enabled and total > budget / 2:
        big = sorted(parts.items(), key=lambda kv: -kv[1])
        said = ", ".join(f"{k} {v / GiB:.3g}" for k, v in big if v >= total / 100)
        raise ConfigError(
            f"this run would need ~{total / GiB:.3g} GiB ({said}), more than half of this "
            f"machine's {budget / GiB:.0f} GiB of {kind}; lower {lower}"
            + (f", or {insist} to try anyway" if insist else "")
        )
    return total
