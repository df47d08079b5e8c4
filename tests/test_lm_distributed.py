"""``torchrun -m agents.cli lm train`` on CPU (gloo), 2 ranks: each reads its own streams, the
weights stay identical, Ctrl-C on one rank stops both at the same step, and a resumed run
ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import torch
from test_distributed import torchrun
from test_lm_resume import assert_same_tensors, lm_train_args

from mnemo.agents.checkpoint import load_checkpoint
from mnemo.agents.cli import main

# Each run: (name, argv, segment_loss call at which rank 0 alone gets SIGINT, or null).
WORKER = """
import json, os, signal, sys
import torch
import mnemo.agents.lm.train as lt
from mnemo.agents.cli import main

out, runs = sys.argv[1], json.loads(sys.argv[2])
rank = int(os.environ["RANK"])
models, seen, calls, stop_at = [], [], [0], [None]
build, segment_loss = lt.build_model, lt.segment_loss

def capture(*args, **kwargs):
    models.append(build(*args, **kwargs))
    return models[-1]

def record(model, seg, *args, **kwargs):
    if not torch.is_grad_enabled():  # the check before a checkpoint, not training
        return segment_loss(model, seg, *args, **kwargs)
    seen.append(seg.x.clone())
    calls[0] += 1
    if calls[0] == stop_at[0]:
        signal.raise_signal(signal.SIGINT)
    return segment_loss(model, seg, *args, **kwargs)

lt.build_model, lt.segment_loss = capture, record
result = {}
for name, argv, sigint_call in runs:
    models.clear(); seen.clear(); calls[0] = 0
    stop_at[0] = sigint_call if rank == 0 else None
    code = main(argv)
    params = {k: v.detach().clone() for k, v in models[-1].state_dict().items()}
    result[name] = {"code": code, "params": params, "x": list(seen)}
torch.save(result, f"{out}/rank{rank}.pt")
"""


def test_two_ranks_read_their_own_streams_and_resume_exactly(tmp_path: Path) -> None:
    full, half = tmp_path / "full", tmp_path / "half"
    runs = [
        ("full", lm_train_args("lstm", full), None),
        ("half", lm_train_args("lstm", half), 7),  # rank 0's Ctrl-C during step 4
        ("resumed", ["lm", "train", "--resume", str(half)], None),
    ]
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    proc = torchrun([str(script), str(tmp_path), json.dumps(runs)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert [r0[n]["code"] for n in ("full", "half", "resumed")] == [0, 130, 0]
    assert [r1[n]["code"] for n in ("full", "half", "resumed")] == [0, 130, 0]
    # Different data, the same weights.
    assert not torch.equal(r0["full"]["x"][0], r1["full"]["x"][0])
    assert_same_tensors(r0["full"]["params"], r1["full"]["params"], "rank 1")
    # Both ranks stopped after step 4 (2 segments a step), though only rank 0 saw Ctrl-C.
    assert len(r0["half"]["x"]) == len(r1["half"]["x"]) == 8
    assert_same_tensors(r0["full"]["params"], r0["resumed"]["params"], "resumed rank 0")
    assert_same_tensors(r0["full"]["params"], r1["resumed"]["params"], "resumed rank 1")
    a, b = load_checkpoint(full), load_checkpoint(half)
    assert len(a["ranks"]) == 2 and b["step"] == 8
    assert_same_tensors(a["model"], b["model"], "checkpoint")
    assert_same_tensors(a["ranks"], b["ranks"], "per-rank state")
    assert not torch.equal(a["ranks"][0]["state"][0], a["ranks"][1]["state"][0])
    assert len(list(full.glob("events.out.tfevents.*"))) == 1
    assert proc.stdout.count("run ") == 2  # rank 0 alone prints the summary (full, resumed)
    # A 2-rank checkpoint does not resume in one process.
    assert main(["lm", "train", "--resume", str(full), "train.steps=9"]) == 2
