"""SIGTERM and SIGHUP under torchrun (gloo, 2 CPU ranks), as ``timeout``, ``docker stop``, SLURM
and a closed terminal send them: torchrun forwards the signal to each worker; every rank stops
at the same update (or one would wait forever in the next collective), rank 0 writes one
checkpoint that ``--resume`` continues, each worker exits with 128 + the signal's number and
one line is printed (rank 0's), no worker traceback, no hang. A signal that reaches one worker
alone stops both, naming it.

torchrun itself is torch's: on a signal it logs, prints its own ``SignalException`` traceback
and exits 1; these tests hold mnemo's workers to the rules above, not torchrun.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from test_distributed import ROOT, TINY, torchrun
from test_lm_resume import lm_train_args
from test_reliability import wait_for_checkpoint

from mnemo.agents.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # 7 torchrun launches: about a minute on 2 busy cores

# What the ``mnemo`` script does (``sys.exit(main())``), plus a note of each rank's exit code,
# which torchrun does not report after a signal.
WORKER = """
import os, sys
from pathlib import Path
from mnemo.agents.cli import main

code = main(sys.argv[2:])
Path(sys.argv[1], f"rank{os.environ['RANK']}.code").write_text(str(code))
sys.exit(code)
"""
TRAIN = ["train", "configs/recall_lstm.yaml", *TINY, "ppo.total_steps=100000000"]
STEPS_PER_UPDATE = 2 * 4 * 8  # 2 ranks x 4 envs x 8 steps


def long_run(head: str, run: Path) -> list[str]:
    """The argv of a run that would go on for hours, checkpointing every iteration."""
    if head == "train":
        return [*TRAIN, f"run.dir={run}", "run.checkpoint_every=1"]
    return lm_train_args("lstm", run, "train.steps=1000000", "run.checkpoint_every=1")


def resume_budget(head: str, step: int) -> tuple[str, int]:
    """The override that lets a resumed run take two more iterations, and the step it ends at."""
    if head == "train":
        return f"ppo.total_steps={step + 2 * STEPS_PER_UPDATE}", step + 2 * STEPS_PER_UPDATE
    return f"train.steps={step + 2}", step + 2


def worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of torchrun's workers (children of ``parent``), from /proc."""
    ranks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        rank = [e[len(b"RANK=") :] for e in env if e.startswith(b"RANK=")]
        if rank:
            ranks[int(rank[0])] = int(stat.parent.name)
    return ranks


@contextmanager
def torchrun_until_checkpoint(
    argv: list[str], tmp_path: Path, run: Path
) -> Iterator[tuple[subprocess.Popen, dict[int, int]]]:
    """torchrun on ``argv`` (2 ranks), given back once the run's first checkpoint exists and both
    workers are seen; everything it started is killed on the way out."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # Output to files, not pipes: a pipe nobody reads while we wait would fill and block the run.
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        proc = subprocess.Popen(
            [*cmd, str(script), str(tmp_path), *argv, "run.progress=false"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    workers: dict[int, int] = {}
    try:
        wait_for_checkpoint(run, proc)
        deadline = time.time() + 60
        while len(workers) < 2:
            assert time.time() < deadline, "torchrun's workers not found"
            workers = worker_pids(proc.pid)
        yield proc, workers
    finally:
        # torchrun starts each worker in a session of its own: its group is not theirs.
        for pid in [proc.pid, *workers.values()]:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        proc.wait(timeout=60)


def assert_each_rank_stopped(tmp_path: Path, run: Path, signum: int, name: str) -> int:
    """Both workers exited 128 + signum; one line, rank 0's, names the checkpoint's step and the
    signal; no worker traceback. Returns the step."""
    codes = [(tmp_path / f"rank{r}.code").read_text() for r in (0, 1)]
    err = (tmp_path / "err.txt").read_text()
    assert codes == [str(128 + signum)] * 2, err[-3000:]
    ckpt = load_checkpoint(run)
    assert len(ckpt["ranks"]) == 2  # both ranks' states, gathered at the same update
    lines = [line for line in err.splitlines() if "interrupted" in line]
    last = run / "checkpoints" / "last.pt"
    assert lines == [f"interrupted: stopped at step {ckpt['step']}; checkpoint: {last} ({name})"]
    # Any traceback is torchrun's own (it ends in torch's SignalException or ChildFailedError).
    tracebacks = err.count("Traceback (most recent call last)")
    assert tracebacks == err.count("SignalException: ") + err.count("ChildFailedError: "), err
    return ckpt["step"]


@pytest.mark.parametrize(
    ("head", "signum", "name"),
    [
        ("train", signal.SIGTERM, "SIGTERM"),
        ("train", signal.SIGHUP, "SIGHUP"),
        ("lm", signal.SIGTERM, "SIGTERM"),
    ],
)
def test_signal_to_torchrun_checkpoints_once_and_resumes(
    tmp_path: Path, head: str, signum: int, name: str
) -> None:
    run = tmp_path / "run"
    with torchrun_until_checkpoint(long_run(head, run), tmp_path, run) as (proc, _):
        proc.send_signal(signum)
        proc.wait(timeout=120)  # torchrun SIGKILLs workers 30 s after the signal, at the latest
    step = assert_each_rank_stopped(tmp_path, run, signum, name)
    assert step >= 1
    override, end = resume_budget(head, step)
    cli = [*(["lm"] if head == "lm" else []), "train", "--resume", str(run), override]
    resumed = torchrun(["-m", "mnemo.agents.cli", *cli], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert load_checkpoint(run)["step"] == end


def test_sigterm_to_one_worker_stops_both_at_one_step(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with torchrun_until_checkpoint(long_run("train", run), tmp_path, run) as (proc, workers):
        os.kill(workers[1], signal.SIGTERM)  # rank 0 hears of it only through the loop
        proc.wait(timeout=120)
    step = assert_each_rank_stopped(tmp_path, run, signal.SIGTERM, "SIGTERM")
    assert step % STEPS_PER_UPDATE == 0
