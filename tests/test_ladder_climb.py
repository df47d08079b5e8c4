"""``mnemo ladder --climb``: each rung starts from the previous rung's final weights, the table
says so, a rerun resumes, and a toggled --climb, a missing previous rung and --cost-only with
--climb are refused in one line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.cli import main
from mnemo.agents.config_loader import ConfigError
from mnemo.agents.experiments import compare
from mnemo.agents.experiments.climb import check_climb_mode, execute_climb
from mnemo.agents.experiments.ladder import plan_ladder
from mnemo.agents.experiments.run_files import RESULT_KEYS, write_json_atomic
from mnemo.agents.rl import train

ARGS = ["ladder", "--cores", "lstm", "--delays", "8,16", "--steps", "1440", "--seeds", "1"]
ARGS += ["--eval-episodes", "4", "env.num_envs=8"]


def test_climb_warm_starts_each_rung_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "climb"
    first = out / "runs" / "lstm__mnemo_Recall-D8-v0__s0"
    started: list[tuple[str, dict[str, torch.Tensor]]] = []
    warm_start = train.warm_start

    def spy(ppo, path: str) -> None:  # the weights the second rung starts from
        warm_start(ppo, path)
        started.append((path, {k: v.clone() for k, v in ppo.model.state_dict().items()}))
        final = load_checkpoint(first)["model"]  # the first rung's, as it finished
        assert all(torch.equal(final[k], v) for k, v in started[-1][1].items())

    monkeypatch.setattr(train, "warm_start", spy)
    assert main([*ARGS, "--climb", "--out", str(out)]) == 0
    assert [path for path, _ in started] == [str(first)]
    second = compare.load_result(out / "runs" / "lstm__mnemo_Recall-D16-v0__s0" / "result.json")
    assert second["config"]["run"]["init_from"] == str(first)
    assert compare.load_result(first / "result.json")["config"]["run"]["init_from"] is None
    rows = {r["run_dir"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert rows[str(first)]["init_from"] == ""
    assert rows[str(second["run_dir"])]["init_from"] == str(first)
    table = (out / "ladder.md").read_text()
    assert (
        "each delay warm-started from the same core's run at the previous delay, the same budget "
        "per rung" in table
    )

    done = sorted(p.stat().st_mtime_ns for p in out.glob("runs/*/result.json"))
    assert main([*ARGS, "--climb", "--out", str(out)]) == 0  # a rerun trains nothing again
    assert sorted(p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")) == done
    assert len(started) == 1

    capsys.readouterr()
    assert main([*ARGS, "--out", str(out)]) == 2  # --climb toggled off: refused
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a ladder run with --climb" in err


def test_a_ladder_without_climb_is_not_climbed_on(tmp_path: Path) -> None:
    specs = plan_ladder(["lstm"], [8, 16], 1, tmp_path, 1000)
    climbed = plan_ladder(["lstm"], [8, 16], 1, tmp_path, 1000, climb=True)
    result = {**dict.fromkeys(RESULT_KEYS, 0), "history": [], "config": specs[1].config}
    write_json_atomic(result, specs[1].result_path)  # a finished run without --climb
    check_climb_mode(specs, climb=False)
    with pytest.raises(ConfigError, match="holds a ladder run without --climb"):
        check_climb_mode(climbed, climb=True)


def test_a_failed_rung_stops_its_climb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def run_one(spec: compare.RunSpec) -> None:
        ran.append(spec.env)
        raise RuntimeError("crashed")

    monkeypatch.setattr(compare, "run_one", run_one)
    specs = plan_ladder(["lstm", "gru"], [8, 16, 32], 1, tmp_path, 1000, climb=True)
    errors = execute_climb(specs, progress=False)
    assert ran == ["mnemo/Recall-D8-v0"] * 2  # nothing after a rung that did not finish
    assert len(errors) == 6
    assert (
        "lstm__mnemo_Recall-D16-v0__s0: not climbed: lstm__mnemo_Recall-D8-v0__s0 has not"
        in (errors[2])
    )


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--cost-only"], "--cost-only trains nothing"),
        (["--delays", "8,8"], "--delays names a delay twice"),
    ],
)
def test_climb_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expect: str
) -> None:
    assert main([*ARGS, "--climb", *extra, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expect in err
    assert not (tmp_path / "x" / "runs").exists()
