"""What can go wrong in mnemo, and what the command line says about each kind.

- ``UserError`` (``ConfigError``, ``CheckpointError``, lm's ``DataError``): the user must
  change something. ``error: <one line>``, exit 2.
- ``NonFiniteError``: training diverged (NaN or inf). ``error: <one line>``, exit 1.
- ``KeyboardInterrupt`` (``Interrupted`` once a checkpoint is written): ``interrupted: <line>``,
  exit 130.
- anything else is a bug in mnemo: its traceback, exit 1.

Code that validates user input raises a ``UserError`` subclass; a plain ``ValueError`` or
``RuntimeError`` is a bug and keeps its traceback, so it can be reported and fixed.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "CheckpointError",
    "ConfigError",
    "Interrupted",
    "NonFiniteError",
    "UserError",
    "exit_codes",
]

A = TypeVar("A")


class UserError(Exception):
    """The user must change something (a config, a path, a flag, the number of processes);
    the message is one line that says what."""


class ConfigError(UserError, ValueError):
    """A config the user must fix (file, key, value or override); its message is one line.

    Also a ``ValueError``: validation code written as ``except ValueError`` (and memory's own
    ``CoreConfigError``, a ``ValueError``) keeps working.
    """


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable, of the other head, of another world size, or
    whose weights do not fit the model. A ``ValueError`` too, as ``load_checkpoint`` documented."""


class NonFiniteError(FloatingPointError):
    """A loss, the core's state or a gradient became NaN or inf; the message names the step and
    the quantity. Not the user's input, so exit code 1, but still one line."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C after writing a checkpoint; the message names it."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def exit_codes(command: Callable[[A], int]) -> Callable[[A], int]:
    """Wrap a CLI command so the errors above print as one line with their exit code; any
    other exception propagates with its traceback."""

    @functools.wraps(command)
    def run(args: A) -> int:
        try:
            return command(args)
        except UserError as e:
            print(f"error: {_first_line(e) or type(e).__name__}", file=sys.stderr)
            return 2
        except NonFiniteError as e:
            print(f"error: {_first_line(e) or type(e).__name__}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as e:
            line = _first_line(e)
            print(f"interrupted: {line}" if line else "interrupted", file=sys.stderr)
            return 130

    return run
