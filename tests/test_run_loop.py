"""The shared run loop (agents/run_loop.py) with a stand-in trainer: checkpoint cadence, the
checkpoint on Ctrl-C and at the end, logged scalars, the non-finite stop, the console."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnemo.agents import run_loop
from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.errors import Interrupted, NonFiniteError


@dataclass
class RunCfg:
    checkpoint_every: int = 3
    progress: bool = False
    print_every: int = 0


class Counter:
    """A trainer whose iteration is 10 'steps'; it can ask for Ctrl-C or diverge on cue."""

    def __init__(self, n: int, sigint_at: int = 0, nan_at: int = 0) -> None:
        self.iteration, self.n = 0, n
        self.sigint_at, self.nan_at = sigint_at, nan_at
        self.saved: list[int] = []
        self.finished = False

    @property
    def progress(self) -> tuple[int, int]:
        return 10 * self.iteration, 10 * self.n

    @property
    def done(self) -> bool:
        return self.iteration >= self.n

    def texts(self) -> dict[str, str]:
        return {"config": "counter"}

    def step(self) -> dict[str, float]:
        self.iteration += 1
        if self.iteration == self.nan_at:
            raise NonFiniteError(f"non-finite loss at step {10 * self.iteration}")
        if self.iteration == self.sigint_at:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C would, mid-step
        return {"x/iteration": float(self.iteration)} if self.iteration % 2 else {}  # odd ones log

    def after_step(self, writer: Any) -> None:
        pass

    def postfix(self) -> dict[str, str]:
        return {}

    def report(self) -> dict[str, float | int | str]:
        return {"train/loss": 1.0 / self.iteration if self.iteration else float("nan")}

    def checkpoint(self) -> tuple[Callable[[], dict[str, Any]], Any]:
        self.saved.append(self.iteration)
        here = self.iteration
        return lambda: {"iteration": here}, {"rank": 0}

    def finish(self, writer: Any) -> None:
        self.finished = True


def test_checkpoints_at_the_cadence_and_at_the_end(tmp_path: Path) -> None:
    trainer = Counter(7)
    run_loop.run(trainer, tmp_path, RunCfg(), resumed=False)
    assert trainer.saved == [3, 6, 7] and trainer.finished
    ckpt = load_checkpoint(tmp_path)
    assert ckpt["iteration"] == 7 and ckpt["ranks"] == [{"rank": 0}]
    acc = EventAccumulator(str(tmp_path)).Reload()
    assert [(e.step, e.value) for e in acc.Scalars("x/iteration")] == [
        (10 * i, float(i)) for i in (1, 3, 5, 7)
    ]


def test_the_last_iteration_is_not_saved_twice(tmp_path: Path) -> None:
    trainer = Counter(6)
    run_loop.run(trainer, tmp_path, RunCfg(), resumed=False)
    assert trainer.saved == [3, 6]


def test_a_finished_run_still_ends_with_a_checkpoint(tmp_path: Path) -> None:
    trainer = Counter(0)
    run_loop.run(trainer, tmp_path, RunCfg(), resumed=True)
    assert trainer.saved == [0]


def test_ctrl_c_checkpoints_the_step_in_flight_then_stops(tmp_path: Path) -> None:
    trainer = Counter(9, sigint_at=4)
    with pytest.raises(Interrupted, match=r"stopped at step 40; checkpoint: .*last\.pt"):
        run_loop.run(trainer, tmp_path, RunCfg(), resumed=False)
    assert trainer.saved == [3, 4] and not trainer.finished
    assert load_checkpoint(tmp_path)["iteration"] == 4


@pytest.mark.parametrize(("nan_at", "kept"), [(5, "the last good"), (2, "no checkpoint kept")])
def test_non_finite_says_whether_a_checkpoint_is_kept(
    tmp_path: Path, nan_at: int, kept: str
) -> None:
    trainer = Counter(9, nan_at=nan_at)
    with pytest.raises(NonFiniteError, match=f"at step {10 * nan_at}; {kept}"):
        run_loop.run(trainer, tmp_path, RunCfg(), resumed=False)
    if nan_at == 5:
        assert load_checkpoint(tmp_path)["iteration"] == 3


def test_progress_false_prints_one_plain_line_every_n_and_at_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_loop.run(Counter(7), tmp_path, RunCfg(print_every=3), resumed=False)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["steps=30/70", "steps=60/70", "steps=70/70"]
    assert lines[0].endswith("loss=0.3333") and "\r" not in "".join(lines)
    assert all(" SPS=" in line and " elapsed=0:00:0" in line for line in lines)


def test_no_final_line_twice_and_none_on_other_ranks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_loop.run(Counter(6), tmp_path / "a", RunCfg(print_every=3), resumed=False)
    assert len(capsys.readouterr().out.splitlines()) == 2  # at 3 and 6: the end was reported
    run_loop.run(Counter(6), tmp_path / "q", RunCfg(print_every=0), resumed=False)
    assert capsys.readouterr().out == ""  # quiet
    monkeypatch.setattr(run_loop.distributed, "is_main", lambda: False)
    run_loop._run(Counter(6), tmp_path / "b", RunCfg(print_every=3), resumed=False)
    assert capsys.readouterr().out == ""


def test_on_a_terminal_the_reports_are_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_loop, "wants_bar", lambda progress, stream: progress)
    run_loop.run(Counter(4), tmp_path, RunCfg(progress=True, print_every=2), resumed=False)
    out = capsys.readouterr().out
    assert out.count("| time/") == 2 and "| 40/40 " in out and "\r" not in out
