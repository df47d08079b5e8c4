"""Config keys as help text: each key's type, default and doc, read off the config dataclasses.

The docstring under a dataclass field (an attribute docstring, as in CleanRL's ``Args``) is that
key's help; Python keeps no such docstrings at run time, so they are read from the class source
with ``ast``, through the class's bases (a subclass that redeclares a field redeclares its doc).
``mnemo train --help`` and ``mnemo lm train --help`` list every key this way (``KeysHelpParser``),
and ``mnemo cores NAME`` a core's own options; tests/test_config_help.py checks that no key
lacks a doc, so a field added without one fails the tests rather than printing a blank line.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import itertools
import re
import textwrap
import typing
from typing import Any, NamedTuple, NoReturn

from mnemo.agents.config_loader import _type_name

__all__ = ["ConfigKey", "KeysHelpParser", "config_epilog", "config_keys", "field_docs", "keys_help"]

WIDTH = 100
"""Help lines are wrapped at this many columns."""


class ConfigKey(NamedTuple):
    key: str  # dotted, e.g. "ppo.lr"
    type: str
    default: Any
    doc: str  # the docstring's first sentence, on one line ("" if it has none)


@functools.cache
def _own_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of the fields ``cls`` itself declares."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen app, a class built at run time)
        return {}
    body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} of dataclass ``cls``, its bases' included (the nearest one wins)."""
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            docs.update(_own_docs(base))
    return docs


SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z])")
"""A full stop that ends a sentence: followed by a capital, not that of "e.g." or "i.e."."""


def first_sentence(doc: str) -> str:
    """The doc's first sentence on one line, reST's double backticks as single ones."""
    text = " ".join(doc.split()).replace("``", "`")
    end = SENTENCE_END.search(text)
    return text if end is None else text[: end.start() + 1]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_keys(cls: type, prefix: str = "") -> list[ConfigKey]:
    """Every key of config dataclass ``cls`` (nested sections flattened), in field order."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    keys: list[ConfigKey] = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += config_keys(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            doc = first_sentence(docs.get(f.name, ""))
            keys.append(ConfigKey(prefix + f.name, _type_name(tp), _default(f), doc))
    return keys


def keys_help(keys: list[ConfigKey], indent: int = 2) -> str:
    """``key: type = default`` lines, each with its doc wrapped beneath it."""
    pad = " " * (indent + 4)
    lines: list[str] = []
    for k in keys:
        lines.append(f"{' ' * indent}{k.key}: {k.type} = {k.default!r}")
        if k.doc:
            lines += textwrap.wrap(k.doc, WIDTH, initial_indent=pad, subsequent_indent=pad)
    return "\n".join(lines)


def config_epilog(cls: type, extra: tuple[ConfigKey, ...] = ()) -> str:
    """What ``--help`` ends with: every key of config ``cls`` (and ``extra``, keys a command
    reads beside the dataclass, such as ``curriculum``), core options pointed to."""
    keys = [k for k in config_keys(cls) if k.key != "core.options"] + list(extra)
    return "\n".join(
        [
            "config keys (in the YAML file, or key=value overrides; --check prints the values a "
            "config resolves to):",
            keys_help(keys),
            "  core.<option>: the core's own options, e.g. core.mem_len=256; `mnemo cores` lists",
            "      every core's options and defaults, `mnemo cores NAME` their types and docs.",
        ]
    )


class KeysHelpParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose help can end with a config's keys (``config_keys``), built
    only when help is asked for: other commands do not pay for reading the configs' docs."""

    def __init__(
        self,
        *args: object,
        config_keys: type | None = None,
        extra_keys: tuple[ConfigKey, ...] = (),
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.config_keys = config_keys
        self.extra_keys = extra_keys
        self._intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Options may come between or after the positionals: ``mnemo lm train CONFIG --resume
        RUN key=value`` or ``CONFIG --check key=value``. argparse's plain parse fills all the
        positionals from the first run of them, so a ``key=value`` after an option was refused
        as unrecognized. A parser with subcommands parses as argparse does (the intermixed
        parse cannot); its subcommand's parser, this class too, intermixes."""
        subcommands = any(isinstance(a, argparse._SubParsersAction) for a in self._actions)
        if self._intermixing or subcommands:  # the intermixed parse calls this method back
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message: str) -> NoReturn:
        """A bad command line in one line, exit 2 (argparse prints its usage block first)."""
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    def format_help(self) -> str:
        if self.config_keys is not None and self.epilog is None:
            self.epilog = config_epilog(self.config_keys, self.extra_keys)
        return super().format_help()
