"""GracefulStop: the first Ctrl-C asks to stop; a repeat within a second (torchrun forwarding
the terminal's Ctrl-C) is the same one; a later one stops at once."""

from __future__ import annotations

import signal

import pytest

import mnemo.agents.interrupt as interrupt
from mnemo.agents.interrupt import GracefulStop


def test_repeat_within_grace_is_ignored_a_later_one_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(interrupt.time, "monotonic", lambda: now[0])
    with GracefulStop() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        now[0] += 0.5
        signal.raise_signal(signal.SIGINT)  # forwarded duplicate: no exception
        now[0] += 1.0
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) != stop._handle  # the previous handler is back
