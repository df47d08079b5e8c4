"""Core options: one frozen dataclass per core family, checked once by ``check_options``.

A core family declares its options as a frozen dataclass (nanoGPT's ``GPTConfig`` is the
model): typed fields with defaults, a docstring per field, and the range or choices of a field
in ``option(...)``. The registry checks what a user passes against it before a core is built,
so core constructors receive options that are known to be valid and check nothing themselves.

    @dataclass(frozen=True)
    class RecurrentOptions(CoreOptions):
        num_layers: int = option(1, at_least=1)
        # (then the field's docstring)
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_LAYERS = 256
"""Most layers a core may stack: building 10**12 layers would loop for hours (even on the meta
device, where memory is not the limit), and no memory core here wants more than a few."""


class CoreConfigError(ValueError):
    """A core name or core option that does not exist, or a value it cannot take."""


def option(
    default: Any,
    *,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with the range or choices ``check_options`` enforces.

    Args:
        default: the value when the user gives none.
        at_least: smallest valid value (inclusive).
        above: values must be greater than this (exclusive).
        at_most: largest valid value (inclusive): a bound on sizes whose cost is a loop over
            them (layers), which no memory estimate can catch before the loop runs.
        choices: the valid values of a string option.
    """
    meta = {"at_least": at_least, "above": above, "at_most": at_most, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class CoreOptions:
    """Base of every core family's options (no fields of its own)."""

    def check_width(self, d_model: int) -> str | None:
        """Why these options cannot serve a core of width ``d_model``, or None if they can."""
        return None

    def inert(self) -> dict[str, str]:
        """{option: why} for options that do nothing under these settings (a variant without
        attention has no window): they are refused when set, and not listed as accepted."""
        return {}


def defaults(options_type: type[CoreOptions]) -> dict[str, Any]:
    """{option: default} of an options dataclass, in field order."""
    return {f.name: f.default for f in dataclasses.fields(options_type)}


def check_options(
    core: str,
    options_type: type[CoreOptions],
    values: Mapping[str, Any],
    d_model: int | None = None,
) -> CoreOptions:
    """Check ``values`` against ``options_type`` and build the options.

    Args:
        core: the core's registered name (for messages).
        options_type: the family's options dataclass.
        values: options given by the user (and the registry's presets).
        d_model: if given, also check the width and the options that depend on it.

    Raises:
        CoreConfigError: one line naming the option and its valid keys or values.
    """
    fields = {f.name: f for f in dataclasses.fields(options_type)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise CoreConfigError(
            f"unknown config key 'core.{unknown[0]}' for core {core!r}; valid options: "
            f"{', '.join(sorted(fields)) or '(none)'}"
        )
    hints = typing.get_type_hints(options_type)
    given = {}
    for key, value in values.items():
        given[key] = _check_value(core, key, value, hints[key], fields[key].metadata)
    if d_model is not None and (
        not isinstance(d_model, int) or isinstance(d_model, bool) or d_model <= 0
    ):
        raise CoreConfigError(f"core.d_model must be a positive integer, got {d_model!r}")
    opts = options_type(**given)
    problem = opts.check_width(d_model) if d_model is not None else None
    if problem:
        raise CoreConfigError(f"core {core!r}: {problem}")
    return opts


def _check_value(core: str, key: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    """The value to store for option ``key`` (ints widened to float), or CoreConfigError."""
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    kind = next(a for a in (*args, hint) if a is not type(None) and isinstance(a, type))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise CoreConfigError(f"core {core!r}: option {key} expects {kind.__name__}, got {value!r}")
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise CoreConfigError(
            f"core {core!r}: {key} must be one of {', '.join(meta['choices'])}; got {value!r}"
        )
    low, above = meta.get("at_least"), meta.get("above")
    # Written as "not >=" so that NaN fails too.
    if low is not None and not value >= low:
        raise CoreConfigError(f"core {core!r}: {key} must be >= {low}, got {value!r}")
    if above is not None and not value > above:
        raise CoreConfigError(f"core {core!r}: {key} must be > {above}, got {value!r}")
    high = meta.get("at_most")
    if high is not None and not value <= high:
        raise CoreConfigError(f"core {core!r}: {key} must be <= {high}, got {value!r}")
    return value
