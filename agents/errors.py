"""What can go wrong in mnemo, and what the command line says about each kind.

- ``UserError`` (``ConfigError``, ``CheckpointError``, lm's ``DataError``): the user must
  change something. ``error: <one line>``, exit 2.
- ``NonFiniteError``: training diverged (NaN or inf). ``error: <one line>``, exit 1.
- ``KeyboardInterrupt`` (``Interrupted`` once a checkpoint is written): ``interrupted: <line>``,
  exit 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP), as a shell
  reports a process that a signal ended. While a command runs, SIGTERM and SIGHUP (what
  ``timeout``, ``docker stop``, SLURM and a closed terminal send) raise ``Interrupted`` as
  Ctrl-C raises ``KeyboardInterrupt``; a training loop turns the first into a checkpoint.
  Under torchrun (``RANK`` set) rank 0 alone prints the line.
- an ``OSError`` the user must fix (a full disk, a read-only or forbidden folder, a file where
  a folder should be: ``USER_OS_ERRNOS``): ``error: <what>: <path>``, exit 2.
- anything else is a bug in mnemo: its traceback, exit 1.

Code that validates user input raises a ``UserError`` subclass; a plain ``ValueError`` or
``RuntimeError`` is a bug and keeps its traceback, so it can be reported and fixed.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "STOP_SIGNALS",
    "USER_OS_ERRNOS",
    "CheckpointError",
    "ConfigError",
    "Interrupted",
    "NonFiniteError",
    "UserError",
    "exit_codes",
    "signal_name",
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


USER_OS_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)
"""The ``OSError``s of a path the user gave or a disk they fill: not mnemo's bugs."""


def os_error_line(e: OSError) -> str:
    """``'no space left on device: /runs/x/events'``: what went wrong, and where."""
    what = (e.strerror or type(e).__name__).lower()
    return f"{what}: {e.filename}" if e.filename else what


STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""The signals that ask a command to stop (SIGHUP does not exist on Windows)."""


def signal_name(signum: int) -> str:
    """``'Ctrl-C'`` for SIGINT, else the signal's name (``'SIGTERM'``)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """A stop asked by a signal: after writing a checkpoint (the message names it) or, for
    a second one, at once. ``signum`` gives the exit code, 128 + signum."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(f"stopped by {signal_name(signum)}", signum)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


def exit_codes(command: Callable[[A], int]) -> Callable[[A], int]:
    """Wrap a CLI command so the errors above print as one line with their exit code; any
    other exception propagates with its traceback."""

    @functools.wraps(command)
    def run(args: A) -> int:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            # SIGTERM and SIGHUP would kill the process without a word: raise like Ctrl-C.
            for signum in STOP_SIGNALS:
                if signum != signal.SIGINT and signal.getsignal(signum) == signal.SIG_DFL:
                    previous[signum] = signal.signal(signum, _raise_interrupted)
        try:
            return command(args)
        except UserError as e:
            print(f"error: {_first_line(e) or type(e).__name__}", file=sys.stderr)
            return 2
        except OSError as e:
            if e.errno not in USER_OS_ERRNOS:
                raise
            print(f"error: {os_error_line(e)}", file=sys.stderr)
            return 2
        except NonFiniteError as e:
            print(f"error: {_first_line(e) or type(e).__name__}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as e:
            # Under torchrun every rank stops at the same step for the same signal (run_loop):
            # rank 0's line speaks for all, as its checkpoint does.
            if os.environ.get("RANK", "0") == "0":
                print(f"interrupted: {_first_line(e) or 'stopped by Ctrl-C'}", file=sys.stderr)
            return 128 + getattr(e, "signum", signal.SIGINT)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    return run
