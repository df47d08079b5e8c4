"""``mnemo ladder``: the per-family rules give memory that spans the delay, every core's ladder
config is valid, and a tiny ladder writes its table and plot and resumes without retraining."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnemo import memory
from mnemo.agents.cli import main
from mnemo.agents.config_loader import ConfigError
from mnemo.agents.experiments.ladder import ladder_overrides, plan_ladder


def _options(overrides: list[str]) -> dict[str, int]:
    return {k.split(".")[1]: int(v) for k, v in (o.split("=") for o in overrides)}


@pytest.mark.parametrize("delay", [16, 256, 1024])
def test_rules_span_the_delay(delay: int) -> None:
    episode = delay + 2
    rec = _options(ladder_overrides("lstm", delay))
    assert rec["rollout_len"] == rec["bptt_len"] == episode and rec["chrono"] == delay
    assert _options(ladder_overrides("gtrxl", delay))["mem_len"] == episode
    comp = _options(ladder_overrides("compressive", delay))
    assert comp["n_mem"] < episode <= comp["n_mem"] + comp["compression_rate"] * comp["n_cmem"]


def test_every_core_gets_a_valid_ladder_config(tmp_path: Path) -> None:
    specs = plan_ladder(memory.core_names(), [64], 1, tmp_path, 1000)
    assert {s.core for s in specs} == set(memory.core_names())
    with pytest.raises(ConfigError, match="no recall task at delay 100"):
        plan_ladder(["lstm"], [100], 1, tmp_path, 1000)


def test_tiny_ladder_writes_table_and_plot_and_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ladder"
    args = ["ladder", "--cores", "none", "--delays", "8,16", "--steps", "2e3", "--seeds", "1"]
    args += ["--out", str(out), "--eval-episodes", "8", "env.num_envs=8"]
    assert main(args) == 0
    table = (out / "ladder.md").read_text()
    assert "| none | 0." in table and "D=8" in table and "D=16" in table
    assert " us, " in table and (out / "ladder.png").stat().st_size > 0
    first = sorted(p.stat().st_mtime_ns for p in out.glob("runs/*/result.json"))
    assert len(first) == 2
    assert main(args) == 0  # a rerun trains nothing again
    assert sorted(p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")) == first


def test_cost_only_trains_nothing(tmp_path: Path) -> None:
    out = tmp_path / "cost"
    args = ["ladder", "--cores", "lstm", "--delays", "8,16", "--steps", "1e3", "--cost-only"]
    assert main([*args, "--out", str(out), "env.num_envs=8"]) == 0
    table = (out / "ladder.md").read_text()
    assert " us, " in table and " MB |" in table and "eval success" not in table.lower()
    assert not list(out.glob("runs/*"))


def test_budget_words_name_the_rule_runs_stop_by() -> None:
    from mnemo.agents.experiments.ladder import budget_words

    ppo = {"total_steps": 5000, "target_success": 0.0, "target_episodes": 640}
    assert budget_words([{"steps": 1024, "config": {"ppo": ppo}}]) == "1,024 env steps per run"
    ppo = {**ppo, "target_success": 0.9, "target_check_episodes": 400}
    assert budget_words([{"steps": 1024, "config": {"ppo": ppo}}]) == (
        "up to 5,000 env steps per run, each run stopping once its training success reached 0.9 "
        "over its last 640 episodes and its greedy policy's on 400 validation episodes"
    )
