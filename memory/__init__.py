"""Memory cores behind one contract (see memory/base.py); build one with ``make_core``."""

from __future__ import annotations

# Importing a core module registers it.
from mnemo.memory import compressive, memoryless, recurrent, titans, trxl  # noqa: F401
from mnemo.memory.base import CoreOutput, MemoryCore, State
from mnemo.memory.registry import (
    CoreConfigError,
    core_names,
    core_options,
    make_core,
    register_core,
    validate_core,
)

__all__ = [
    "CoreConfigError",
    "CoreOutput",
    "MemoryCore",
    "State",
    "core_names",
    "core_options",
    "make_core",
    "register_core",
    "validate_core",
]
