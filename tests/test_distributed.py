"""Data-parallel PPO with torchrun on CPU (gloo): ranks stay identical, only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

import mnemo.agents.distributed as distributed

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "env.num_envs=4",
    "ppo.rollout_len=8",
    "ppo.bptt_len=8",
    "ppo.epochs=2",
    "ppo.minibatches=2",
    "core.d_model=16",
    "agent.encoder_hidden=16",
    "threads=1",
]

WORKER = """
import sys, torch
from mnemo.agents import distributed
from mnemo.agents.rl.config import load_rl_config
from mnemo.agents.rl.ppo import PPO

out = sys.argv[1]
cfg = distributed.setup(load_rl_config(None, sys.argv[2:]))
torch.manual_seed(cfg.seed)
ppo = PPO(cfg)
init = [p.detach().clone() for p in ppo.model.parameters()]
rollouts = []
for _ in range(2):
    ro, last = ppo.collect()
    ppo.update(ro, last)
    rollouts.append(ro.obs)
torch.save(
    {
        "seed": cfg.seed,
        "init": init,
        "params": [p.detach() for p in ppo.model.parameters()],
        "obs": torch.stack(rollouts),
        "world": distributed.world_size(),
        "steps": ppo.global_step,
    },
    f"{out}/rank{distributed.rank()}.pt",
)
"""


def torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        cmd + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_ranks_keep_identical_parameters_with_their_own_envs(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    proc = torchrun([str(script), str(tmp_path), *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert (r0["seed"], r1["seed"]) == (0, 1)
    # Each rank stepped its own envs...
    assert not torch.equal(r0["obs"], r1["obs"])
    # ...yet all started from rank 0's weights and took the same averaged steps.
    for a, b in zip(r0["init"], r1["init"]):
        assert torch.equal(a, b)
    for a, b in zip(r0["params"], r1["params"]):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(r0["init"], r0["params"]))
    # Steps count both ranks: 2 updates x 2 ranks x 4 envs x 8 steps.
    assert r0["steps"] == 2 * 2 * 4 * 8


def test_torchrun_cli_train_writes_one_run_folder_from_rank_0(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["-m", "mnemo.agents.cli", "train", "configs/recall_lstm.yaml", *TINY]
    args += ["ppo.total_steps=128", f"run.dir={run}", "run.progress=false"]
    proc = torchrun(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["step"] == 128  # 2 updates of 2 ranks x 4 envs x 8 steps
    assert proc.stdout.count("SPS") >= 1


def test_single_process_helpers_are_no_ops() -> None:
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    grad = model.weight.grad.clone()
    distributed.all_reduce_grads(model)
    distributed.broadcast_params(model)
    assert torch.equal(model.weight.grad, grad)
    assert distributed.rank_mean(0.5) == 0.5
