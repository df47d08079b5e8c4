"""Registry of memory cores: ``make_core(name, d_model, **overrides)``.

A core registers itself with ``@register_core("name")``; registering is all it takes for the
shared contract suite (tests/test_core_contract.py) to test it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mnemo.memory.base import MemoryCore

_CORES: dict[str, type[MemoryCore]] = {}
_DEFAULTS: dict[str, dict[str, Any]] = {}


class CoreConfigError(ValueError):
    """A core name or core option that does not exist, or a value it cannot take."""


def register_core(name: str, **defaults: Any) -> Callable[[type[MemoryCore]], type[MemoryCore]]:
    """Class decorator: register ``cls`` under ``name``; ``defaults`` preset constructor kwargs.

    One class may be registered under several names with different presets
    (e.g. ``trxl`` and ``gtrxl``, the latter with ``gated=True``).
    """

    def decorate(cls: type[MemoryCore]) -> type[MemoryCore]:
        if name in _CORES:
            raise ValueError(f"core {name!r} is registered twice")
        _CORES[name] = cls
        _DEFAULTS[name] = dict(defaults)
        return cls

    return decorate


def core_names() -> list[str]:
    """Names of every registered core, sorted."""
    return sorted(_CORES)


def core_options(name: str) -> dict[str, Any]:
    """The options a core accepts (besides ``d_model``) with their defaults for ``name``."""
    cls = _core_class(name)
    params = inspect.signature(cls.__init__).parameters
    opts = {
        k: p.default
        for k, p in params.items()
        if k not in ("self", "d_model") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    opts.update(_DEFAULTS[name])
    return opts


def _core_class(name: str) -> type[MemoryCore]:
    if name not in _CORES:
        raise CoreConfigError(f"unknown core {name!r}; valid cores: {', '.join(core_names())}")
    return _CORES[name]


def _check_type(core: str, key: str, value: Any, default: Any) -> None:
    """Options whose default is a bool/int/float/str must get a value of that type."""
    if default is None or not isinstance(default, (bool, int, float, str)):
        return
    ok = isinstance(value, type(default))
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, bool):
        ok = False
    if not ok:
        raise CoreConfigError(
            f"core {core!r}: option {key} expects {type(default).__name__}, got {value!r}"
        )


def make_core(name: str, d_model: int, **overrides: Any) -> MemoryCore:
    """Build the core registered as ``name`` with width ``d_model``.

    Raises:
        CoreConfigError: unknown name or option, naming the valid choices.
    """
    cls = _core_class(name)
    valid = core_options(name)
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise CoreConfigError(
            f"core {name!r} has no option {unknown[0]!r}; valid options: "
            f"{', '.join(sorted(valid)) or '(none)'}"
        )
    for key, value in overrides.items():
        _check_type(name, key, value, valid[key])
    if not isinstance(d_model, int) or d_model <= 0:
        raise CoreConfigError(f"core.d_model must be a positive integer, got {d_model!r}")
    kwargs = {**_DEFAULTS[name], **overrides}
    try:
        return cls(d_model, **kwargs)
    except (ValueError, TypeError) as e:
        raise CoreConfigError(f"core {name!r}: {e}") from e
