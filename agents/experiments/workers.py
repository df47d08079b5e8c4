"""Runs in child processes, ``jobs`` at a time, that die with their parent.

``mnemo compare --jobs J`` (and ``mnemo ladder``) train each run in a fresh spawned process
(forking a process that already runs torch threads can deadlock). A process pool would keep
idle workers that, once the parent is killed, go on taking the runs already queued to them and
then wait forever for more; here a child runs one run and exits, and nothing is queued in it.

- A child whose parent is gone (kill -9, a crash, the OOM killer) notices within
  ``PARENT_POLL_S`` and stops as on SIGTERM: the run loop finishes the update in flight,
  checkpoints and the child exits; it is killed if it has not after ``STOP_GRACE_S``.
- Ctrl-C, SIGTERM or SIGHUP in the parent (a ``KeyboardInterrupt`` there, see
  agents/errors.py) starts no more runs, sends SIGTERM to every child, waits for their
  checkpoints (up to ``STOP_GRACE_S``, a second Ctrl-C cuts it short), then re-raises.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from multiprocessing.connection import wait
from typing import Any, TypeVar

__all__ = ["PARENT_POLL_S", "STOP_GRACE_S", "run_in_children"]

T = TypeVar("T")

PARENT_POLL_S = 0.5
"""How often a child checks that its parent is alive."""
STOP_GRACE_S = 60.0
"""How long a stopped child may take to finish its update and checkpoint before it is killed."""


def _watch_parent(parent: int) -> None:
    """In a child: once the parent is gone (the child is re-parented), stop like on SIGTERM."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_S)
    os._exit(128 + signal.SIGKILL)


def _child(fn: Callable[[Any], Any], item: Any, conn: Any, parent: int) -> None:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        fn(item)
        conn.send(None)
    except KeyboardInterrupt as e:  # a signal stopped the run (checkpoint written): just exit
        os._exit(128 + getattr(e, "signum", signal.SIGINT))
    except Exception as e:  # one line for the parent's list; the run stays resumable
        text = str(e).strip().splitlines()[0][:500] if str(e).strip() else ""
        conn.send(f"{type(e).__name__}: {text}")


def run_in_children(
    fn: Callable[[T], Any],
    items: Sequence[T],
    jobs: int,
    on_done: Callable[[T, str | None], None],
) -> None:
    """Call ``fn(item)`` for every item, each in a fresh child process, ``jobs`` at a time.

    ``on_done(item, error)`` is called in the parent as each child ends: ``error`` is None
    when ``fn`` returned, else one line (the exception, or how the child died). ``fn`` must be
    importable by name (spawn pickles it).
    """
    ctx = get_context("spawn")
    pending = list(items)
    running: dict[Any, tuple[Any, Any, T]] = {}  # sentinel -> (process, pipe, item)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                item = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(fn, item, send, os.getpid()))
                proc.start()
                send.close()
                running[proc.sentinel] = (proc, recv, item)
            for sentinel in wait(list(running)):
                proc, recv, item = running.pop(sentinel)
                proc.join()
                error = recv.recv() if recv.poll() else f"worker exited with code {proc.exitcode}"
                recv.close()
                on_done(item, error)
    except BaseException:
        _stop([proc for proc, _, _ in running.values()])
        raise


def _stop(procs: list[Any]) -> None:
    """SIGTERM every child, wait for their checkpoints, kill what is left."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    try:
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
        pass
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
