"""Config sections both heads share, written once: the core, the run folder, and the machine.

``mnemo train`` (agents/rl/config.py) and ``mnemo lm train`` (agents/lm/config.py) subclass these
to change a default (the LM's wider core, its run folder name) or add a field (RL's ``run.name``
and ``run.video_every``); every key keeps one name and meaning in both. Field docstrings are the
help text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mnemo.agents.config_loader import ConfigError

if TYPE_CHECKING:
    import torch


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
    updates, LM optimizer steps) and at the end; 0 = never (quiet)."""
    overwrite: bool = False
    """Start a fresh run in a folder that holds one (its checkpoint is replaced); else refused."""

    def validate(self) -> None:
        if self.dir:
            self.dir = os.path.expanduser(self.dir)  # `run.dir=~/x` reaches us unexpanded
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
    """Seed of every random stream (torch, numpy, Python, the envs' or data's), 0 to 2**32 - 1;
    a data-parallel rank r uses seed + r."""
    threads: int = 0
    """torch CPU threads (0 = leave torch's default)."""
    memory_check: bool = True
    """Refuse, before anything is allocated, sizes whose estimated memory (weights with their
    gradients and Adam's moments, rollout or batch storage, core states, activations) is over
    half of this machine's RAM (the GPU's on cuda); false: try anyway."""

    def validate(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"seed must be 0 to {MAX_SEED} (numpy's range), got {self.seed}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise ConfigError(
                f"threads must be 0 (torch's default) to {MAX_THREADS}, got {self.threads}"
            )


MAX_THREADS = 1024


def use_threads(threads: int) -> None:
    """A run's ``threads`` for torch (0: torch's default, left alone). Training, ``mnemo eval``
    and ``mnemo lm eval``/``sample`` all apply it: torch's default thrashes a shared machine (a
    2000-byte LM prompt took 19 s on a busy 2-core CPU)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


MAX_SEED = 2**32 - 1
"""``np.random.seed`` takes 0 to 2**32 - 1."""


def check_device(name: str) -> torch.device:
    """``name`` as a torch device, refused in one line where this machine lacks it. Checked
    where a run starts, not when a config loads: a checkpoint trained on a GPU still loads on
    a CPU machine, where eval gives its own ``--device``."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: CUDA is not available here; use device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type != "cpu":
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    return device
