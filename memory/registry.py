"""Registry of memory cores: ``make_core(name, d_model, **options)``.

A core registers itself with ``@register_core("name")``; registering is all it takes for the
shared contract suite (tests/test_core_contract.py) to test it. Its options are the fields of
its class's ``options_type`` dataclass (memory/options.py), checked here, once, by
``validate_core`` before any core is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mnemo.memory.base import MemoryCore
from mnemo.memory.options import CoreConfigError, CoreOptions, check_options, defaults

_CORES: dict[str, type[MemoryCore]] = {}
_PRESETS: dict[str, dict[str, Any]] = {}

__all__ = [
    "CoreConfigError",
    "core_names",
    "core_options",
    "core_options_type",
    "make_core",
    "register_core",
    "validate_core",
]


def register_core(name: str, **presets: Any) -> Callable[[type[MemoryCore]], type[MemoryCore]]:
    """Class decorator: register ``cls`` under ``name``; ``presets`` override option defaults.

    One class may be registered under several names with different presets
    (e.g. ``trxl`` and ``gtrxl``, the latter with ``gated=True, pre_ln=True``).
    """

    def decorate(cls: type[MemoryCore]) -> type[MemoryCore]:
        if name in _CORES:
            raise ValueError(f"core {name!r} is registered twice")
        unknown = set(presets) - set(defaults(cls.options_type))
        if unknown:
            raise ValueError(f"core {name!r}: presets {sorted(unknown)} are not options")
        _CORES[name] = cls
        _PRESETS[name] = dict(presets)
        return cls

    return decorate


def core_names() -> list[str]:
    """Names of every registered core, sorted."""
    return sorted(_CORES)


def core_options(name: str) -> dict[str, Any]:
    """The options a core accepts (besides ``d_model``) with their defaults for ``name``;
    options that do nothing in this preset (``inert``) are not listed."""
    options_type = _core_class(name).options_type
    inert = options_type(**_PRESETS[name]).inert()
    opts = {**defaults(options_type), **_PRESETS[name]}
    return {k: v for k, v in opts.items() if k not in inert}


def core_options_type(name: str) -> type[CoreOptions]:
    """The options dataclass of core ``name`` (its fields' docstrings are the options' help)."""
    return _core_class(name).options_type


def validate_core(name: str, options: Mapping[str, Any], d_model: int | None = None) -> None:
    """Check a core name and its options (and width, if given) without building anything.

    Raises:
        CoreConfigError: one line naming the bad name, key or value and the valid ones.
    """
    _resolve(name, options, d_model)


def make_core(name: str, d_model: int, **options: Any) -> MemoryCore:
    """Build the core registered as ``name`` with width ``d_model``.

    Raises:
        CoreConfigError: unknown name or option, or a value it cannot take, naming the
            valid choices.
    """
    return _core_class(name)(d_model, _resolve(name, options, d_model))


def _resolve(name: str, options: Mapping[str, Any], d_model: int | None) -> CoreOptions:
    cls = _core_class(name)
    # None is "unset": the core's default, so that ``core.KEY=null`` on the command line
    # removes a value a config file sets (no option takes None other than as its default).
    options = {k: v for k, v in options.items() if v is not None}
    opts = check_options(name, cls.options_type, {**_PRESETS[name], **options}, d_model)
    # An option that would do nothing here is refused rather than silently ignored; all
    # of them in the one line, so that one fix is enough.
    idle = {key: why for key, why in opts.inert().items() if key in options}
    if idle:
        said = "; ".join(f"core.{key} has no effect: {why}" for key, why in idle.items())
        them = "it" if len(idle) == 1 else "them"
        raise CoreConfigError(
            f"{said} (core {name!r}); leave {them} unset (core.KEY=null unsets a config "
            "file's value)"
        )
    return opts


def _core_class(name: str) -> type[MemoryCore]:
    if name not in _CORES:
        raise CoreConfigError(f"unknown core {name!r}; valid cores: {', '.join(core_names())}")
    return _CORES[name]
