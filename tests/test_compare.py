"""mnemo compare: a tiny 2 cores x 1 env x 2 seeds comparison, resumed without rerunning; bad
input fails before any run; IQM and bootstrap CI."""

from __future__ import annotations

import csv
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.cli import main
from mnemo.agents.experiments.stats import bootstrap_ci, first_step_reaching, iqm
from mnemo.agents.rl.ppo import PPO

TINY = [
    "env.num_envs=8",
    "ppo.rollout_len=16",
    "ppo.bptt_len=8",
]


def compare_args(out: Path) -> list[str]:
    return [
        "compare",
        "--cores", "lstm,none",
        "--envs", "mnemo/Recall-D8-v0",
        "--seeds", "2",
        "--steps", "256",
        "--eval-episodes", "8",
        "--out", str(out),
        *TINY,
    ]  # fmt: skip


def test_compare_writes_table_and_plots_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert main(compare_args(out)) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted((r["core"], r["seed"]) for r in rows) == [
        ("lstm", "0"), ("lstm", "1"), ("none", "0"), ("none", "1")
    ]  # fmt: skip
    assert {r["env"] for r in rows} == {"mnemo/Recall-D8-v0"}
    for r in rows:
        assert int(r["steps"]) == 256
        assert 0 <= float(r["eval_success"]) <= 1 and float(r["sps"]) > 0
    table = (out / "results.md").read_text()
    assert "| lstm | mnemo/Recall-D8-v0 | 2 |" in table and "| none |" in table
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert not (out / "delay.png").exists()  # one delay only
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 4 and all(any((out / "runs" / r).glob("events.out.*")) for r in runs)

    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    assert main(compare_args(out)) == 0  # everything is done: nothing runs again
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")} == stamps
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 4

    # A run with neither result nor checkpoint runs again, from scratch; the others do not.
    redo = out / "runs" / "none__mnemo_Recall-D8-v0__s1"
    (redo / "result.json").unlink()
    shutil.rmtree(redo / "checkpoints")
    (redo / "stale.txt").write_text("from the interrupted attempt")
    assert main(compare_args(out)) == 0
    assert (redo / "result.json").is_file() and not (redo / "stale.txt").exists()
    del stamps[redo / "result.json"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_interrupted_run_continues_from_its_checkpoint(tmp_path: Path, monkeypatch) -> None:
    def args(out: Path) -> list[str]:
        return [
            "compare", "--cores", "lstm", "--envs", "mnemo/Recall-D8-v0", "--seeds", "1",
            "--steps", "256", "--eval-episodes", "8", "--out", str(out), *TINY,
        ]  # fmt: skip

    assert main(args(tmp_path / "whole")) == 0
    iterate = PPO.iterate

    def iterate_then_ctrl_c(self: PPO) -> dict:
        scalars = iterate(self)
        if self.update_idx == 1:
            signal.raise_signal(signal.SIGINT)
        return scalars

    monkeypatch.setattr(PPO, "iterate", iterate_then_ctrl_c)
    assert main(args(tmp_path / "cut")) == 130
    (run,) = (tmp_path / "cut" / "runs").iterdir()
    assert not (run / "result.json").exists() and load_checkpoint(run)["step"] == 128
    monkeypatch.setattr(PPO, "iterate", iterate)
    assert main(args(tmp_path / "cut")) == 0
    (whole,) = (tmp_path / "whole" / "runs").iterdir()
    a, b = load_checkpoint(whole)["model"], load_checkpoint(run)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compare_delay_plot(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    args = compare_args(out)
    args[args.index("lstm,none")] = "none"
    args[args.index("mnemo/Recall-D8-v0")] = "mnemo/Recall-D8-v0,mnemo/Recall-D16-v0"
    args[args.index("--seeds") + 1] = "1"
    assert main(args) == 0
    assert (out / "delay.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (("--cores", "lstm,nope"), "unknown core 'nope'"),
        (("--envs", "mnemo/Nope-v0"), "unknown env 'mnemo/Nope-v0'"),
        (("--seeds", "0"), "--seeds must be >= 1"),
        (("--steps", "-5"), "--steps must be >= 1"),
        (("--cores", "lstm,lstm"), "names something twice"),
    ],
)
def test_bad_input_fails_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], expect: str
) -> None:
    out = tmp_path / "cmp"
    args = compare_args(out)
    args[args.index(change[0]) + 1] = change[1]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expect in err
    assert not (out / "runs").exists()


def test_bad_core_option_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*compare_args(tmp_path / "c"), "core.mem_len=4"]) == 2
    assert "accepted by none of: lstm, none" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "flag"),
    [
        ("env.id=CartPole-v1", "--envs"),
        ("core.name=gru", "--cores"),
        ("run.dir=elsewhere", "--out"),
        ("ppo.total_steps=9", "--steps"),
    ],
)
def test_an_override_of_what_a_flag_sets_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, flag: str
) -> None:
    """Every run takes these from the flags: an override would be silently replaced."""
    assert main([*compare_args(tmp_path / "c"), override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"mnemo compare sets it from {flag}; drop" in err
    assert not (tmp_path / "c").exists()


def test_iqm_and_bootstrap() -> None:
    assert iqm([0.0, 1.0, 1.0, 1.0, 100.0]) == 1.0  # outliers trimmed
    assert iqm([0.2, 0.4]) == pytest.approx(0.3)
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
    lo, hi = bootstrap_ci([0.1, 0.2, 0.3, 0.4, 0.9])
    assert 0.1 <= lo <= iqm([0.1, 0.2, 0.3, 0.4, 0.9]) <= hi <= 0.9
    hist = [(10, float("nan")), (20, 0.5), (30, 0.95), (40, 0.8)]
    assert first_step_reaching(hist, 0.9) == 30
    assert first_step_reaching(hist, 0.99) is None


def test_rerun_with_another_budget_is_refused_and_bad_results_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    args = compare_args(out)
    args[args.index("lstm,none")] = "none"
    args[args.index("--steps") + 1] = "2e2"  # accepted like overrides; 200 -> 2 updates of 128
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "is not a whole number of updates of 128" in err and "runs train 256" in err
    table = (out / "results.md").read_text()
    assert "runs train 256" in table and "fewer than 5 seeds are rough" in table
    runs = sorted((out / "runs").iterdir())
    # A half-finished run (checkpoint, no result) and a finished one: another budget touches
    # neither, and says why in one line.
    (runs[0] / "result.json").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    args[args.index("--steps") + 1] = "512"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another config" in err and "total_steps: 200 -> 512" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    args[args.index("--steps") + 1] = "200"
    assert main(args) == 0  # the same budget finishes the half-finished run
    capsys.readouterr()
    # An empty or truncated result file is named, and that run alone runs again.
    (runs[0] / "result.json").write_text("{}")
    text = (runs[1] / "result.json").read_text()
    (runs[1] / "result.json").write_text(text[: len(text) // 2])
    assert main(args) == 0
    err = capsys.readouterr().err
    for run in runs:
        assert f"{run / 'result.json'}: " in err
        assert "core" in (run / "result.json").read_text()
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 2


def test_delays_sort_numerically_with_chance(tmp_path: Path) -> None:
    from mnemo.agents.experiments.plots import chance_level
    from mnemo.agents.experiments.report import table_order

    envs = ["mnemo/Recall-D16-v0", "mnemo/Recall-D8-v0", "mnemo/Recall-D128-v0"]
    rows = sorted(({"env": e, "core": "lstm"} for e in envs), key=table_order)
    assert [r["env"] for r in rows] == [envs[1], envs[0], envs[2]]
    assert chance_level("mnemo/Recall-D8-v0") == 0.25
    assert chance_level("mnemo/Recall-D8-v0", {"num_symbols": 8}) == 0.125
    assert chance_level("mnemo/KeyChest-Match-D16-v0", {"num_colors": 2}) == 0.5
    assert chance_level("mnemo/KeyChest-Fetch-D16-v0") is None


def test_iqm_matches_rliable() -> None:
    metrics = pytest.importorskip("rliable.metrics")
    import numpy as np

    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 4, 5, 7, 10, 16):
        x = rng.random(n)
        assert iqm(x) == pytest.approx(float(metrics.aggregate_iqm(x[:, None])), abs=1e-12)


KILL_SCRIPT = """
import sys
from mnemo.agents.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_compare_takes_its_workers_with_it(tmp_path: Path, sig: int) -> None:
    import subprocess
    import sys
    import time

    out = tmp_path / "cmp"
    args = ["compare", "--jobs", "2", *compare_args(out)[1:], "run.checkpoint_every=1"]
    args[args.index("--steps") + 1] = "1e7"  # far longer than the test: killed mid-training
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *args])
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("runs/*/checkpoints/last.pt"))) < 2:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
        workers = [k for k in _children(proc.pid) if _alive(k)]
        assert len(workers) >= 2
        os.kill(proc.pid, sig)
        proc.wait(timeout=90)
        deadline = time.monotonic() + 90
        while any(_alive(w) for w in workers):
            assert time.monotonic() < deadline, "workers outlived their parent"
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
    assert len(list((out / "runs").iterdir())) == 2  # no queued run was started
    assert not list(out.glob("runs/*/result.json"))
