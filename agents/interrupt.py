"""Stopping a training loop cleanly on Ctrl-C, SIGTERM or SIGHUP (what ``timeout``, ``docker
stop``, SLURM pre-emption and a closed terminal send): the first finishes the step in flight
and checkpoints, the next stops at once. Shared by ``mnemo train`` and ``mnemo lm train``."""

from __future__ import annotations

import signal
import threading
import time

from mnemo.agents import distributed
from mnemo.agents.errors import STOP_SIGNALS, Interrupted, signal_name

__all__ = ["REPEAT_GRACE_S", "GracefulStop", "Interrupted"]

REPEAT_GRACE_S = 1.0
"""A second signal this soon after the first counts as the same one: under torchrun a signal
sent to every process of a job (SLURM's ``scancel``, or a terminal's Ctrl-C where the workers
share torchrun's process group) reaches each worker twice, directly and forwarded by torchrun."""


class GracefulStop:
    """First stop signal: finish the update in flight, checkpoint, stop. Second: stop at once.

    ``signum`` is the first signal received (None until one is)."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._first_at = 0.0

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if not self.requested:
            self.requested = True
            self.signum = signum
            self._first_at = time.monotonic()
        elif time.monotonic() - self._first_at > REPEAT_GRACE_S:
            raise Interrupted(
                f"stopped at once by a second {signal_name(signum)}; the last checkpoint is kept",
                signum,
            )

    def agreed_signal(self) -> int | None:
        """The signal every rank stops for, or None to go on (one process: its own signal).

        A collective under torchrun: every rank calls it at the same point. torchrun forwards a
        signal to each worker, but they see it at different steps, and a signal sent to one
        worker reaches that one alone; all ranks stop at the first call after any rank got one,
        naming the same signal, so none is left waiting in the next collective.
        """
        return distributed.rank_max(self.signum or 0) or None

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            # None: a handler set outside Python; the default is the closest we can restore.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)  # type: ignore[arg-type]
        self._previous.clear()
