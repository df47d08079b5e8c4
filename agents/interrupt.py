"""Ctrl-C for training loops: the first finishes the step in flight and checkpoints, the next
stops at once. Shared by ``mnemo train`` and ``mnemo lm train``."""

from __future__ import annotations

import signal
import threading
import time

from mnemo.agents.errors import Interrupted

__all__ = ["REPEAT_GRACE_S", "GracefulStop", "Interrupted"]

REPEAT_GRACE_S = 1.0
"""A second SIGINT this soon after the first counts as the same Ctrl-C: under torchrun a
terminal's Ctrl-C reaches every worker twice (from the terminal, then forwarded by torchrun)."""


class GracefulStop:
    """First Ctrl-C: finish the update in flight, checkpoint, stop. Second: stop at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None
        self._first_at = 0.0

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if not self.requested:
            self.requested = True
            self._first_at = time.monotonic()
        elif time.monotonic() - self._first_at > REPEAT_GRACE_S:
            raise KeyboardInterrupt(
                "stopped at once by a second Ctrl-C; the last checkpoint is kept"
            )

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
