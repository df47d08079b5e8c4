"""``mnemo train --resume`` under torchrun (gloo, 2 ranks): every rank gets its own envs, core
state and RNG back, so a run stopped halfway and resumed ends bit-identical to one that never
stopped; a checkpoint of another world size fails in one line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from test_distributed import TINY, torchrun
from test_lm_resume import assert_same_tensors

from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.cli import main

WORKER = """
import json, sys
from mnemo.agents.cli import main

codes = [main(argv) for argv in json.loads(sys.argv[1])]
sys.exit(max(codes))
"""
STEPS = 256  # 4 updates of 2 ranks x 4 envs x 8 steps


def test_ddp_run_stopped_halfway_resumes_bit_identically(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    full, half = tmp_path / "full", tmp_path / "half"
    base = ["train", "configs/recall_lstm.yaml", *TINY, "run.progress=false"]
    base.append("run.checkpoint_every=1")
    runs = [
        [*base, f"ppo.total_steps={STEPS}", f"run.dir={full}"],
        [*base, f"ppo.total_steps={STEPS // 2}", f"run.dir={half}"],
        ["train", "--resume", str(half), f"ppo.total_steps={STEPS}"],
    ]
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    proc = torchrun([str(script), json.dumps(runs)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = load_checkpoint(full), load_checkpoint(half)
    assert a["step"] == b["step"] == STEPS
    assert len(a["ranks"]) == len(b["ranks"]) == 2
    assert_same_tensors(a["model"], b["model"], "model")
    assert_same_tensors(a["optimizer"]["state"], b["optimizer"]["state"], "optimizer")
    # Each rank's envs, carried core state, generator and RNG, as if it had never stopped.
    assert_same_tensors(a["ranks"], b["ranks"], "ranks")
    with pytest.raises(AssertionError):  # ...and the two ranks' states differ
        assert_same_tensors(a["ranks"][0], a["ranks"][1])
    # One process cannot continue a 2-rank run.
    capsys.readouterr()
    assert main(["train", "--resume", str(full), f"ppo.total_steps={2 * STEPS}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: the checkpoint was written by 2 data-parallel rank(s) and this run has 1; "
        "resume it with torchrun --nproc_per_node 2"
    ]
