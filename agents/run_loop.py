"""The training loop both heads share: run folder, TensorBoard, console, Ctrl-C,
checkpoints. ``mnemo train`` (PPO) and ``mnemo lm train`` plug in a ``Trainer``.

As in SB3, where ``learn()`` is apart from the algorithm, a trainer knows how to take one
step and what its checkpoint holds; this module owns everything around it:

- rank 0 alone creates the run folder and writes TensorBoard events (other ranks get a
  ``NullWriter``); a resumed run purges the events the stopped run logged after its checkpoint;
- the scalars a step returns are logged at the trainer's ``step`` (the x-axis);
- the console (agents/console.py): every ``run.print_every`` iterations and at the end, the
  trainer's ``report`` with steps, steps per second and elapsed time, as a table above a progress
  bar on a terminal, as one plain line otherwise (``run.progress=false``, or output to a file);
- a checkpoint (atomic, every rank's state, ``save_with_ranks``) every
  ``run.checkpoint_every`` iterations, on Ctrl-C and at the end;
- the first Ctrl-C, SIGTERM or SIGHUP finishes the step in flight, checkpoints on every rank
  at the same step, and raises ``Interrupted`` naming the checkpoint and the signal (the exit
  code is 128 + its number); a second one stops at once;
- a ``NonFiniteError`` says whether a good checkpoint is kept;
- the run folder is the run's own: a fresh run into a folder that holds a checkpoint is
  refused (``--resume`` continues it, ``run.overwrite=true`` replaces it), and a lock
  (``fcntl.flock`` on ``<run_dir>/.lock``, held while the loop runs) refuses a second process.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from mnemo.agents import distributed
from mnemo.agents.checkpoint import check_folder, make_folder, save_with_ranks, this_rank_state
from mnemo.agents.config_sections import use_threads
from mnemo.agents.console import Console, wants_bar
from mnemo.agents.errors import Interrupted, NonFiniteError, UserError, signal_name
from mnemo.agents.interrupt import GracefulStop

__all__ = [
    "Trainer",
    "check_fresh_run_dir",
    "lock_run_dir",
    "new_run_dir",
    "prepare",
    "run",
    "seed_everything",
]

LOCK_FILE = ".lock"


class Trainer(Protocol):
    """One head's training, one iteration at a time (a PPO update, an LM optimizer step)."""

    @property
    def iteration(self) -> int:
        """Iterations done; the checkpoint cadence counts these."""
        ...

    @property
    def progress(self) -> tuple[int, int]:
        """(step, total): the x-axis of logs and the progress bar (env steps, optimizer steps)."""
        ...

    @property
    def done(self) -> bool:
        """True once training should end (all iterations done, or an early stop)."""
        ...

    def texts(self) -> dict[str, str]:
        """TensorBoard texts to write when a run starts (not on resume): tag -> markdown."""
        ...

    def step(self) -> dict[str, float]:
        """Train one iteration; returns the scalars to log now (empty between log steps)."""
        ...

    def after_step(self, writer: Any) -> None:
        """Per-step extras on top of the scalars (validation, samples, videos)."""
        ...

    def postfix(self) -> dict[str, str]:
        """What the progress bar shows beside the count."""
        ...

    def report(self) -> dict[str, float | int | str]:
        """What the console prints now: ``{"section/name": value}`` (SB3's ``rollout/``,
        ``train/``...; NaN prints as n/a). The loop adds ``time/`` steps, SPS and elapsed."""
        ...

    def checkpoint(self) -> tuple[Callable[[], dict[str, Any]], Any]:
        """(what every rank shares, built on rank 0 only; this rank's own state)."""
        ...

    def finish(self, writer: Any) -> None:
        """Called once after the last iteration's checkpoint, before the writer closes."""
        ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(cfg: Any, resume: dict[str, Any] | None) -> tuple[Any, Any]:
    """Join torchrun's process group, set threads and seeds; returns this rank's config and,
    when resuming, this rank's entry of the checkpoint (another world size fails here, before
    anything is built)."""
    cfg = distributed.setup(cfg)  # under torchrun: this rank's device and seed + rank
    use_threads(cfg.threads)
    mine = this_rank_state(resume) if resume else None
    seed_everything(cfg.seed)
    return cfg, mine


def new_run_dir(configured: str | None, name: str) -> Path:
    """``run.dir`` if the config sets it, else ``runs/<name>-<date>-<time>``."""
    if configured:
        return Path(configured)
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def lock_run_dir(run_dir: Path) -> int:
    """Lock ``run_dir`` for this process (created if missing); returns the lock's file
    descriptor: the lock holds until it is closed (or the process ends, however it ends).

    Raises:
        UserError: another process holds the lock (it is training in that folder).
    """
    run_dir = make_folder(run_dir, "run.dir")
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the checkpoint check below still holds
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(
            f"{run_dir} is in use: another process is training in it ({run_dir / LOCK_FILE} is "
            "locked); wait for it to end, or give another run.dir"
        ) from None
    return fd


def check_fresh_run_dir(run_dir: str | Path | None, run_cfg: Any) -> None:
    """Refuse, as a fresh run would, a ``run.dir`` that is a file or holds a run's checkpoint
    (unless ``run.overwrite``); creates nothing, so ``--check`` can say it too."""
    if not run_dir:
        return
    folder = check_folder(run_dir, "run.dir")
    last = folder / "checkpoints" / "last.pt"
    if last.exists() and not getattr(run_cfg, "overwrite", False):
        raise UserError(
            f"{folder} already holds a run ({last}): continue it with --resume {folder}, "
            "or start over in it with run.overwrite=true"
        )


def _claim(run_dir: Path, run_cfg: Any, resumed: bool) -> int | None:
    """Lock the run folder (rank 0) and refuse a fresh run over a checkpoint."""
    if not distributed.is_main():
        return None
    fd = lock_run_dir(run_dir)
    if not resumed:
        try:
            check_fresh_run_dir(run_dir, run_cfg)
        except UserError:
            os.close(fd)
            raise
    return fd


def run(trainer: Trainer, run_dir: Path, run_cfg: Any, resumed: bool) -> float:
    """Train until ``trainer.done``; returns the wall-clock seconds the loop took.

    ``run_cfg`` supplies ``checkpoint_every`` and ``progress``. Raises ``Interrupted`` after
    the first Ctrl-C, SIGTERM or SIGHUP (once the checkpoint is written) and
    ``NonFiniteError`` on divergence.
    """
    lock = _claim(run_dir, run_cfg, resumed)  # creates the folder on rank 0
    try:
        return _run(trainer, run_dir, run_cfg, resumed)
    finally:
        if lock is not None:
            os.close(lock)


def _run(trainer: Trainer, run_dir: Path, run_cfg: Any, resumed: bool) -> float:
    last = run_dir / "checkpoints" / "last.pt"
    step, total = trainer.progress
    # purge_step drops events logged after the checkpoint by the run that died (TensorBoard
    # hides steps >= purge_step, so + 1 keeps the checkpoint's own step); a fresh run hides
    # every event an earlier run left in the folder (run.overwrite=true), from step 0.
    writer = distributed.tb_writer(str(run_dir), purge_step=step + 1 if resumed else 0)
    if not resumed:
        for tag, text in trainer.texts().items():
            writer.add_text(tag, text)
    # The bar goes to stderr, the reports to stdout: each is drawn for a terminal only if its
    # own stream is one (`mnemo train ... > log` keeps the bar on screen, plain lines in the log).
    bar = tqdm(
        total=total,
        initial=step,
        unit="step",
        disable=not wants_bar(run_cfg.progress, sys.stderr),
        dynamic_ncols=True,
    )
    console = _console(run_cfg) if distributed.is_main() else None
    clock = _Clock(step)
    saved_at = -1  # the iteration of the last checkpoint this process wrote
    t0 = time.perf_counter()
    with GracefulStop() as stop:
        try:
            while not trainer.done:
                stopping = _iterate(trainer, writer, stop)
                if trainer.iteration % run_cfg.checkpoint_every == 0 or stopping is not None:
                    saved_at = _save(trainer, last)
                before, (step, _) = step, trainer.progress
                bar.update(step - before)
                bar.set_postfix(trainer.postfix())
                if console is not None and console.due(trainer.iteration):
                    console.show(clock.stamp(trainer, total))
                if stopping is not None:  # the same signal on every rank, got or not
                    raise Interrupted(
                        f"stopped at step {step}; checkpoint: {last} ({signal_name(stopping)})",
                        stopping,
                    )
            if saved_at != trainer.iteration:  # a run always ends with its checkpoint
                _save(trainer, last)
            trainer.finish(writer)
        except NonFiniteError as e:
            raise _kept(e, last) from None
        finally:
            bar.close()
            writer.close()
        if console is not None and console.every and clock.iteration != trainer.iteration:
            console.show(clock.stamp(trainer, total))
    return time.perf_counter() - t0


def _console(run_cfg: Any) -> Console:
    """Tables above the bar on a terminal, else plain lines flushed at once (a log file shows
    them while the run goes on)."""
    if wants_bar(run_cfg.progress, sys.stdout):
        return Console(run_cfg.print_every, table=True, write=tqdm.write)
    return Console(run_cfg.print_every, table=False, write=lambda s: print(s, flush=True))


class _Clock:
    """The ``time/`` part of a report: steps, steps per second since the last report, time."""

    def __init__(self, step: int) -> None:
        self.t0 = self.t_last = time.perf_counter()
        self.step_last = step
        self.iteration = -1  # the iteration last reported

    def stamp(self, trainer: Trainer, total: int) -> dict[str, float | int | str]:
        now, (step, _) = time.perf_counter(), trainer.progress
        sps = (step - self.step_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.step_last, self.iteration = now, step, trainer.iteration
        elapsed = int(now - self.t0)
        clock = f"{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
        return {
            "time/steps": f"{step}/{total}",
            "time/SPS": sps,
            "time/elapsed": clock,
            **trainer.report(),
        }


def _iterate(trainer: Trainer, writer: Any, stop: GracefulStop) -> int | None:
    """One iteration with its logging; returns the signal to stop for when any rank got one."""
    scalars = trainer.step()
    step = trainer.progress[0]
    for k, v in scalars.items():
        writer.add_scalar(k, v, step)
    trainer.after_step(writer)
    return stop.agreed_signal()


def _save(trainer: Trainer, last: Path) -> int:
    """Checkpoint to ``last`` (a collective: every rank calls it at the same iterations);
    returns the iteration saved."""
    shared, mine = trainer.checkpoint()
    save_with_ranks(shared, mine, last)
    return trainer.iteration


def _kept(e: NonFiniteError, last: Path) -> NonFiniteError:
    """``e`` saying whether a checkpoint survives (checkpoints are only written before it)."""
    kept = "the last good checkpoint is kept" if last.exists() else "no checkpoint kept"
    msg = str(e).removesuffix("; the last good checkpoint is kept")  # PPO's own wording
    return NonFiniteError(f"{msg}; {kept}")
