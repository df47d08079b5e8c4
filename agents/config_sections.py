"""Config sections both heads share, written once: the core, the run folder, and the machine.

``mnemo train`` (agents/rl/config.py) and ``mnemo lm train`` (agents/lm/config.py) subclass these
to change a default (the LM's wider core, its run folder name) or add a field (RL's ``run.name``
and ``run.video_every``); every key keeps one name and meaning in both. Field docstrings are the
help text.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mnemo.agents.config_loader import ConfigError


@dataclass
class CoreSection:
    """The ``core:`` section: which registered memory core, how wide, and its own options."""

    name: str = "lstm"
    """Registered memory core (``mnemo cores`` lists them)."""
    d_model: int = 64
    """Width of the core."""
    options: dict = field(default_factory=dict)
    """Core-specific options; write them directly in the section, e.g. ``core.mem_len=256``."""

    def validate(self) -> None:
        if self.d_model < 1:
            raise ConfigError(f"core.d_model must be >= 1, got {self.d_model}")


@dataclass
class RunSection:
    """The ``run:`` section: where outputs go and how often they are written."""

    dir: str | None = None
    """Output folder; default ``runs/<name>-<time>``."""
    log_every: int = 1
    """Write scalars every N updates."""
    checkpoint_every: int = 20
    """Write checkpoints/last.pt every N updates (and at the end)."""
    progress: bool = True
    """On a terminal, a progress bar and the reports as tables; false (or output to a file):
    the reports as plain lines."""
    print_every: int = 10
    """Print a report (steps, SPS, returns or bits per byte, losses) every N iterations (PPO
    updates, LM optimizer steps) and at the end; 0 = only at the end."""
    overwrite: bool = False
    """Start a fresh run in a folder that holds one (its checkpoint is replaced); else refused."""

    def validate(self) -> None:
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise ConfigError("run.log_every and run.checkpoint_every must be >= 1")
        if self.print_every < 0:
            raise ConfigError(f"run.print_every must be >= 0, got {self.print_every}")


@dataclass
class MachineSection:
    """The top-level keys every head's config has: where it runs, its seed, its CPU threads.

    A head's config subclasses this, so these keys come first in its resolved YAML.
    """

    device: str = "cpu"
    """``cpu``, ``cuda`` or ``cuda:N``."""
    seed: int = 0
    """Seed of every random stream (torch, numpy, Python, the envs' or data's); a data-parallel
    rank r uses seed + r."""
    threads: int = 0
    """torch CPU threads (0 = leave torch's default)."""

    def validate(self) -> None:
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


def check_model_size(build: Callable[[], Any], what: str) -> None:
    """Refuse, in one line, a model whose training would not fit in this machine's memory.

    ``build`` runs on torch's ``meta`` device, so nothing is allocated: the constructor checks
    its arguments and the parameter count is read off. Training holds the weights, their
    gradients and Adam's two moments, 4x the weights; more than half the machine's memory for
    that alone is refused (it would be killed by the OOM killer, or thrash, before step 1).
    """
    import torch

    try:
        with torch.device("meta"):
            model = build()
    except (RuntimeError, MemoryError, OverflowError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ConfigError(f"{what} cannot be built with these sizes: {first}") from e
    n = sum(p.numel() for p in model.parameters())
    need = 4 * sum(p.numel() * p.element_size() for p in model.parameters())
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > total / 2:
        raise ConfigError(
            f"{what} has {n:,} parameters: weights, gradients and Adam's moments need "
            f"~{need / 2**30:.1f} GiB, more than half of this machine's {total / 2**30:.0f} GiB; "
            "lower core.d_model or the core's sizes"
        )
