"""``curriculum:`` in a ``mnemo train`` config: one command trains every stage, each from the
last one's weights; a rerun skips finished stages and continues an unfinished one; an earlier
stage that misses its target stops the rest; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.cli import main
from mnemo.agents.rl import train as train_module
from mnemo.agents.rl.curriculum import load_curriculum

ROOT = Path(__file__).resolve().parents[1]

# Recall at delay 4 after delay 2 (the D8 env with another delay), 8 envs, 1024 steps a stage.
CONFIG = f"""\
base: {ROOT / "configs/recall_lstm.yaml"}
env: {{id: mnemo/Recall-D8-v0, kwargs: {{delay: 4}}, num_envs: 8}}
ppo: {{total_steps: 1024, rollout_len: 16, bptt_len: 16, minibatches: 2}}
run: {{progress: false, print_every: 0}}
threads: 1
"""
STAGE = "  - {env.kwargs: {delay: 2}, ppo.total_steps: 1024}\n"


def write(tmp_path: Path, curriculum: str = "curriculum:\n" + STAGE) -> str:
    path = tmp_path / "curriculum.yaml"
    path.write_text(CONFIG + curriculum)
    return str(path)


@pytest.fixture
def warm_starts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(run.init_from, whether the model held that checkpoint's weights after) per warm start."""
    seen: list[tuple[str, bool]] = []
    original = train_module.warm_start

    def spy(ppo, path: str) -> None:
        original(ppo, path)
        saved = load_checkpoint(path)["model"]
        same = all(torch.equal(v, saved[k]) for k, v in ppo.model.state_dict().items())
        seen.append((path, same))

    monkeypatch.setattr(train_module, "warm_start", spy)
    return seen


def test_two_stages_then_a_rerun_skips_them(
    tmp_path: Path, warm_starts: list, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", write(tmp_path), f"run.dir={run}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"stage 1/2: env.kwargs={{'delay': 2}} ppo.total_steps=1024 -> {run}")
    assert out[2].startswith("stage 2/2: env.id=mnemo/Recall-D8-v0 (the config)")
    assert out[2].endswith(f"warm start from {run / 'stages/1'}")
    assert out[-1].startswith(f"curriculum {run}: stage 1 mnemo/Recall-D8-v0 delay=2: 1024 steps")
    assert "total 2048 steps" in out[-1]
    # The final stage started from stage 1's final weights: the checkpoint it ended with.
    assert warm_starts == [(str(run / "stages/1"), True)]
    assert load_checkpoint(run / "stages/1")["config"]["env"]["kwargs"] == {"delay": 2}
    assert load_checkpoint(run)["config"]["run"]["init_from"] == str(run / "stages/1")
    record = json.loads((run / "curriculum.json").read_text())
    assert [r["env_kwargs"] for r in record["stages"]] == [{"delay": 2}, {"delay": 4}]
    assert [r["steps"] for r in record["stages"]] == [1024, 1024]
    assert all(r["finished"] and r["wall_s"] > 0 for r in record["stages"])
    assert record["total_steps"] == 2048

    assert main(["train", write(tmp_path), f"run.dir={run}"]) == 0  # nothing left to train
    out = capsys.readouterr().out.splitlines()
    assert [line.endswith("skipped") for line in out] == [True, True, False]
    assert len(warm_starts) == 1

    # Another stage 1 would mix with a stage 2 that started from the old one: refused.
    changed = "curriculum:\n  - {env.kwargs: {delay: 3}, ppo.total_steps: 1024}\n"
    assert main(["train", write(tmp_path, changed), f"run.dir={run}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "stage 1 finished with another config (env.kwargs.delay: 2 -> 3)" in err
    # --resume continues one run (the final stage), not a curriculum.
    assert main(["train", write(tmp_path), "--resume", str(run)]) == 2
    assert capsys.readouterr().err.startswith("error: curriculum: only `mnemo train CONFIG` runs")


def test_a_missed_target_stops_and_a_rerun_continues_the_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    stage = "  - {env.kwargs: {delay: 2}, ppo.total_steps: 512, ppo.target_success: 1.0}\n"
    assert main(["train", write(tmp_path, "curriculum:\n" + stage), f"run.dir={run}"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        f"error: curriculum stage 1/2 ({run / 'stages/1'}) did not reach "
        "ppo.target_success=1.0 in 512 env steps (success "
    )
    assert "stage 2 not started" in err
    assert not (run / "checkpoints").exists()
    assert not json.loads((run / "curriculum.json").read_text())["stages"][0]["finished"]
    overwrite = [f"run.dir={run}", "run.overwrite=true"]  # starts stage 1 over: the same stop
    assert main(["train", write(tmp_path, "curriculum:\n" + stage), *overwrite]) == 1
    assert "resuming" not in capsys.readouterr().out

    # More steps and a target it reaches: stage 1 goes on from its checkpoint, then stage 2.
    stage = "  - {env.kwargs: {delay: 2}, ppo.total_steps: 1024, ppo.target_success: 0.01}\n"
    assert main(["train", write(tmp_path, "curriculum:\n" + stage), f"run.dir={run}"]) == 0
    out = capsys.readouterr().out
    assert "-> " + str(run / "stages/1") + ", resuming at step 512" in out
    record = json.loads((run / "curriculum.json").read_text())["stages"]
    assert record[0]["target_reached"] and record[0]["steps"] == record[0]["steps_to_target"]
    assert record[1]["finished"]


def test_an_interrupted_stage_records_its_checkpoint_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stage stopped by a signal (after its checkpoint) says in curriculum.json how far it
    got, and its rerun resumes there."""
    from mnemo.agents.errors import Interrupted

    run, original = tmp_path / "run", train_module.train

    def stopped(*args, **kwargs):
        original(*args, **kwargs)
        raise Interrupted("stopped by SIGTERM")

    monkeypatch.setattr(train_module, "train", stopped)
    assert main(["train", write(tmp_path), f"run.dir={run}"]) != 0
    record = json.loads((run / "curriculum.json").read_text())["stages"][0]
    assert record["steps"] == 1024 and not record["finished"] and record["wall_s"] > 0
    monkeypatch.setattr(train_module, "train", original)
    capsys.readouterr()
    assert main(["train", write(tmp_path), f"run.dir={run}"]) == 0
    assert "resuming at step 1024" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("curriculum", "expect"),
    [
        ("curriculum: 5\n", "error: curriculum: expected a list of stages"),
        ("curriculum: [3]\n", "error: curriculum stage 1: expected a mapping of override keys"),
        (
            "curriculum: [{ppo.totl_steps: 5}]\n",
            "error: curriculum stage 1: unknown config key 'ppo.totl_steps'; valid keys here:",
        ),
        (
            "curriculum: [{}, {ppo.bptt_len: 7}]\n",
            "error: curriculum stage 2: ppo.bptt_len (7) must divide ppo.rollout_len (16)",
        ),
        ("curriculum: [{run.init_from: x}]\n", "error: curriculum stage 1: run.init_from is the"),
        ("curriculum: [{env.id: mnemo/Nope-v0}]\n", "error: curriculum stage 1: env.id: unknown"),
    ],
)
def test_bad_curricula_are_one_line_exit_2(
    tmp_path: Path, curriculum: str, expect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", write(tmp_path, curriculum), f"run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(expect), err
    assert not (tmp_path / "run").exists()


def test_commands_that_take_one_run_refuse_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path)
    out = str(tmp_path / "out")
    stage = "curriculum=[{seed: 1}]"
    for argv in (
        ["compare", "--cores", "lstm", "--envs", "mnemo/Recall-D8-v0", "--config", config],
        ["compare", "--cores", "lstm", "--envs", "mnemo/Recall-D8-v0", stage],
        ["ladder", "--steps", "100", "--config", config],
        ["lm", "train", str(ROOT / "configs/lm_lstm.yaml"), stage],
    ):
        assert main([*argv, "--out", out] if argv[0] in ("compare", "ladder") else argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, argv
        assert err.startswith("error: curriculum: only `mnemo train CONFIG` runs a curriculum")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", config, f"run.dir={tmp_path / 'run'}"]) == 2
    assert capsys.readouterr().err.startswith("error: curriculum: not supported under torchrun")


def test_check_help_and_an_empty_curriculum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", write(tmp_path), f"run.dir={run}", "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"stage 1/2: env.kwargs={{'delay': 2}} ppo.total_steps=1024 -> {run / 'stages/1'}\n"
    )
    assert not run.exists()
    assert main(["train", write(tmp_path), "curriculum=[]", "--check"]) == 0  # the config alone
    assert not capsys.readouterr().out.startswith("stage")
    # A section in a stage merges over the config's, as a config over its base.
    _, stages = load_curriculum(write(tmp_path, "curriculum: [{env: {kwargs: {delay: 2}}}]"), [])
    assert stages[0].cfg.env.num_envs == 8 and stages[0].cfg.env.kwargs == {"delay": 2}
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "  curriculum: list = []" in capsys.readouterr().out
