"""The CLI: bad input fails in one line with exit code 2; a tiny run writes logs and checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnemo.agents.cli import main

TINY = [
    "env.id=mnemo/Recall-D8-v0",
    "env.num_envs=8",
    "ppo.total_steps=256",
    "ppo.rollout_len=16",
    "ppo.bptt_len=8",
    "run.progress=false",
    "run.checkpoint_every=1",
]


@pytest.mark.parametrize(
    ("override", "expect"),
    [
        ("ppo.totl_steps=5", "unknown config key 'ppo.totl_steps'; valid keys here:"),
        ("bogus=1", "unknown config key 'bogus'"),
        ("ppo.total_steps=many", "ppo.total_steps: expected an integer"),
        ("ppo.total_steps=0", "ppo.total_steps must be >= 1"),
        ("ppo.bptt_len=7", "must divide"),
        ("env.id=mnemo/Nope-v0", "unknown env 'mnemo/Nope-v0'; mnemo envs:"),
        ("core.name=lstmm", "unknown core 'lstmm'; valid cores: "),
        ("core.mem_len=3", "unknown config key 'core.mem_len' for core 'lstm'"),
        ("env.kwargs={delay: -2}", "delay must be"),
        ("device=tpu", "device must be"),
        ("env.id=envs_for_tests:Tiny-Text-v0", "observation space Text"),
        ("env.id=Pendulum-v1", "takes Discrete(n) and 1-D MultiDiscrete(nvec) actions"),
    ],
)
def test_bad_config_one_line_exit_2(
    override: str, expect: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "configs/recall_lstm.yaml", override])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert expect in err


def test_missing_config_and_checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "configs/nope.yaml"]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["eval", "runs/does-not-exist"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_console_script_lists_cores_and_envs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mnemo.agents.cli", "cores"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "lstm" in out and "none" in out
    out = subprocess.run(
        [sys.executable, "-m", "mnemo.agents.cli", "envs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "mnemo/Recall-D16-v0" in out and "tensor twin" in out


@pytest.mark.parametrize("batched", ["true", "false"])
def test_tiny_train_writes_scalars_and_checkpoint(tmp_path: Path, batched: str) -> None:
    run = tmp_path / "run"
    code = main(
        ["train", "configs/recall_lstm.yaml", *TINY, f"env.batched={batched}", f"run.dir={run}"]
    )
    assert code == 0
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert {"model", "optimizer", "config", "step"} <= set(ckpt)
    assert ckpt["step"] == 256 and ckpt["config"]["core"]["name"] == "lstm"
    assert not list((run / "checkpoints").glob("*.tmp"))
    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "charts/episodic_return",
        "charts/success_rate",
        "charts/SPS",
        "losses/policy",
        "losses/value",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clipfrac",
        "losses/explained_variance",
        "memory/aux_loss",
    ):
        assert tag in tags, tag
    assert "config" in "".join(acc.Tags()["tensors"])
    assert main(["eval", str(run), "--episodes", "20"]) == 0


def test_gym_path_reports_success(tmp_path: Path) -> None:
    """Non-twin envs: success is read from same-step autoreset's final_info."""
    from mnemo.agents.rl.vector_env import GymVectorEnv

    env = GymVectorEnv("mnemo/Recall-D8-v0", 2, "cpu")
    env.reset(seed=0)
    seen = []
    for _ in range(3 * 10):
        oracle = torch.tensor([e.unwrapped.oracle_action() for e in env.env.envs])
        _, _, term, _, info = env.step(oracle)
        seen += info["success"][term].tolist()
    assert seen and all(seen)


@pytest.mark.parametrize("argv", [["cores"], ["train", "--help"]])
def test_a_reader_that_leaves_early_gets_no_traceback(argv: list[str]) -> None:
    """``mnemo cores | head -1``: the pipe closes before mnemo writes; it stops quietly."""
    code = "import sys; from mnemo.agents.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the child has imported anything, let alone written
    err = proc.stderr.read().decode()
    # 141: killed by SIGPIPE, as a shell reports it; 0: --help, whose write argparse guards
    assert proc.wait(timeout=120) in (0, 141) and "Traceback" not in err, err


@pytest.mark.parametrize("head", [["train"], ["lm", "train"]])
def test_overrides_may_follow_an_option(head: list[str]) -> None:
    """``CONFIG --resume RUN key=value`` and ``CONFIG --check key=value``: the override after
    the option is an override (argparse's plain parse refused it as unrecognized)."""
    from mnemo.agents.cli import build_parser

    parser = build_parser()
    args = parser.parse_args([*head, "c.yaml", "--resume", "run", "a.b=1", "c=2"])
    assert (args.config, args.resume, args.overrides) == ("c.yaml", "run", ["a.b=1", "c=2"])
    args = parser.parse_args([*head, "--check", "c.yaml", "a.b=1", "--check", "c=2"])
    assert (args.config, args.check, args.overrides) == ("c.yaml", True, ["a.b=1", "c=2"])
