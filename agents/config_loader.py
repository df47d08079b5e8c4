"""Typed configs: nested dataclasses loaded from YAML plus ``key.sub=value`` overrides.

Every error is a ``ConfigError`` whose message is one line naming the key and what would be
valid; the CLI prints it and exits with code 2 before any work starts.

A dataclass may declare one ``dict`` field named ``options``: keys of its YAML section that are
not fields go there (used for core-specific options, which the core registry validates).

A YAML file may extend another with a top-level ``base: other.yaml`` (resolved relative to the
file; chains allowed): sections are deep-merged and the file's own values win, so each config
holds only what differs from its base (nanoGPT's config/ is the model). A base cannot delete a
key, only change it; a missing base or a cycle is a one-line ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mnemo.agents.errors import ConfigError, UserError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{key}: {value!r} is not one of {', '.join(repr(c) for c in choices)}"
            )
        return value
    if origin in (dict,) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)[:1] or (Any,)
        items = [value_ if inner is Any else _coerce(value_, inner, key) for value_ in value]
        return items if origin is list or tp is list else tuple(items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 1e6 in YAML is a float
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        # NaN and inf are refused here, once for every key: an lr or clip of inf would only
        # surface later as torch's text about a distribution's logits, with no step or key.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 2**1023 else math.inf
            if math.isfinite(number):
                return number
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {_type_name(tp)} fields")
        return from_dict(tp, value, prefix=f"{key}.")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, checking every key and type."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    has_options = "options" in fields
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for k, v in data.items():
        if has_options and k == "options":
            options.update(_coerce(v, dict, f"{prefix}options"))
            continue
        if k not in fields:
            if has_options:
                options[k] = v
                continue
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key '{prefix}{k}'; valid keys here: {valid}")
        kwargs[k] = _coerce(v, hints[k], f"{prefix}{k}")
    if has_options:
        kwargs["options"] = options
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain nested dict (``options`` folded back into its section)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif f.name == "options":
            out.update(v)
        else:
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'ppo.lr=3e-4'`` -> (['ppo', 'lr'], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), read_number(value)


def parse_flag_pair(pair: str, flag: str, what: str, example: str) -> tuple[str, Any]:
    """A command-line flag's ``KEY=VALUE`` (``--env delay=512``) -> (KEY, value), the value read
    as ``parse_override`` reads it; a pair without ``=`` or a dotted KEY is one line naming
    ``flag``. ``what``: what KEY names ("env kwarg"); ``example``: a good pair."""
    try:
        key, value = parse_override(pair)
    except ConfigError as e:
        raise UserError(f"{flag} {pair!r} must look like KEY=VALUE (e.g. {example})") from e
    if len(key) != 1:
        raise UserError(f"{flag} {pair!r}: KEY is one {what}, without dots")
    return key[0], value


def read_number(value: Any) -> Any:
    """``'1e6'`` -> 1000000, ``'5e-3'`` -> 0.005; anything else as it is.

    YAML 1.1 reads 5e-3 and 1e6 as strings; a user means numbers, and by 1e5 (no point) a
    whole one: core options (mem_len) are checked as ints, not widened.
    """
    if isinstance(value, str) and any(c in value.lower() for c in ".e"):
        with contextlib.suppress(ValueError):
            number = float(value)
            return int(number) if number.is_integer() and "." not in value else number
    return value


def set_key(data: dict[str, Any], path: list[str], value: Any, what: str) -> None:
    """``data[path[0]][path[1]]... = value``, sections created as needed; ``what`` names the
    setting in the one-line error when a part of the path is a value, not a section."""
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{what}: '{part}' is not a section")
        node = child
    node[path[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        set_key(data, path, value, f"override {text!r}")
    return data


BASE_KEY = "base"
"""Top-level key naming the file a config extends."""

CURRICULUM_KEY = "curriculum"
"""Top-level key listing a ``mnemo train`` config's earlier stages (agents/rl/curriculum.py);
every other loader refuses it in one line."""


def _is_file(p: Path) -> bool:
    try:
        return p.is_file()
    except (OSError, ValueError):  # e.g. a name too long, or a NUL byte in it
        return False


def _read_one(p: Path) -> dict[str, Any]:
    if not _is_file(p):
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "invalid YAML"
        raise ConfigError(f"{p}: not valid YAML ({first})") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a UTF-8 text file") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


def merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` deep-merged over ``base``: mappings merge key by key, anything else is replaced.

    Keys keep their base's order (new keys follow), so core options list as they are written.
    """
    out = dict(base)
    for k, v in child.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a dict, with its ``base:`` chain resolved and the key removed."""
    return _resolve(Path(path), ())


def _resolve(p: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """``p`` merged over its bases; ``chain`` holds the files that extend ``p`` (for cycles)."""
    data = _read_one(p)
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{p}: base must name a YAML file, got {base!r}")
    parent = p.parent / base
    if not _is_file(parent):
        raise ConfigError(f"{p}: base file not found: {parent}")
    chain = (*chain, p.resolve())
    if parent.resolve() in chain:
        loop = " -> ".join(c.name for c in (*chain, parent.resolve()))
        raise ConfigError(f"{p}: base files form a cycle: {loop}")
    return merge(_resolve(parent, chain), data)


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from a YAML file (or defaults when ``path`` is None) plus overrides."""
    data = read_yaml(path) if path is not None else {}
    apply_overrides(data, overrides or [])
    if CURRICULUM_KEY in data:
        raise ConfigError(
            f"{CURRICULUM_KEY}: only `mnemo train CONFIG` runs a curriculum (rerun that command, "
            "without --resume, to resume one); this command takes a single run's config"
        )
    return from_dict(cls, data)
