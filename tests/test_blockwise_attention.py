"""Blockwise windowed attention (memory/blockwise.py) in trxl, gtrxl and compressive.

A long call cut into blocks of queries gives the numbers of one block over every key, each block
reads a window whose width does not grow with T (so the cost is linear), and the
``most_used`` compression ranks every evicted state of its span by usage.
"""

from __future__ import annotations

import pytest
import torch
from test_core_contract import assert_state_close, run_chunks

from mnemo import memory
from mnemo.memory.base import tree_leaves

D, B = 16, 3
CASES = [
    ("trxl", {"mem_len": 6}),
    ("gtrxl", {"mem_len": 6}),
    *[
        ("compressive", {"n_mem": 4, "n_cmem": 3, "compression_rate": 3, "compression": c})
        for c in ("conv", "max", "mean", "most_used")
    ],
]
IDS = [f"{n}-{o.get('compression', '')}" for n, o in CASES]


def make(name: str, opts: dict, **kw) -> memory.MemoryCore:
    torch.manual_seed(0)
    return memory.make_core(name, D, n_layers=2, n_heads=2, **opts, **kw)


def starts_for(t: int) -> torch.Tensor:
    """Episode starts: row 0 at step 0, row 1 at 7, row 2 at 30 (within the last blocks)."""
    rows, steps = torch.tensor([0, 1, 2]), torch.tensor([0, 7, 30])
    s = torch.zeros(B, max(t, 31), dtype=torch.bool)
    s[rows, steps] = True
    return s[:, :t]


def warm_state(core: memory.MemoryCore) -> dict:
    """A state with memory in it, so that the first blocks read old memory too."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        x = torch.randn(B, 9, D, generator=g)
        return core(x, core.initial_state(B, "cpu"), torch.zeros(B, 9, dtype=torch.bool)).state


def run(core: memory.MemoryCore, block: int, x: torch.Tensor, state: dict, starts: torch.Tensor):
    core.query_block = block
    core.zero_grad()
    xg = x.clone().requires_grad_()
    out = core(xg, state, starts)
    out.y.square().mean().backward()
    grads = [p.grad.clone() for p in core.parameters() if p.grad is not None]
    return out, xg.grad, grads


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_blocks_give_the_numbers_of_one_block(name: str, opts: dict) -> None:
    core = make(name, opts)
    t = 37
    x, starts, state = torch.randn(B, t, D), starts_for(t), warm_state(core)
    one, gx_one, gp_one = run(core, t, x, state, starts)
    for block in (1, 4, 5):  # a last block that is full, padded, and blocks of one query
        out, gx, gp = run(core, block, x, state, starts)
        torch.testing.assert_close(out.y, one.y, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(gx, gx_one, atol=1e-6, rtol=1e-4)
        for a, b in zip(gp, gp_one, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
        for a, b in zip(tree_leaves(out.state), tree_leaves(one.state), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_steps_equal_a_call_in_blocks(name: str, opts: dict) -> None:
    core = make(name, opts)
    core.query_block = 4
    t = 33
    x, starts = torch.randn(B, t, D), starts_for(t)
    with torch.no_grad():
        full = core(x, core.initial_state(B, "cpu"), starts)
        ys, s = run_chunks(core, x, core.initial_state(B, "cpu"), starts, 1)
    torch.testing.assert_close(ys, full.y, atol=1e-5, rtol=1e-4)
    assert_state_close(s, full.state)


@pytest.mark.parametrize(("name", "opts"), CASES, ids=IDS)
def test_keys_per_block_do_not_grow_with_the_call(name: str, opts: dict) -> None:
    core = make(name, opts)
    core.query_block = 8
    widths: list[int] = []
    for blk in core.blocks:
        blk.attn.register_forward_hook(lambda _m, inp, _o: widths.append(inp[1].shape[1]))
    with torch.no_grad():
        for t in (64, 256):
            core(torch.randn(1, t, D), core.initial_state(1, "cpu"), torch.ones(1, t, dtype=bool))
    assert len(set(widths)) == 1, widths


def test_most_used_keeps_the_most_attended_evicted_states() -> None:
    """One layer, one head: usage (from the dense attention weights that ``inspect`` shows,
    renormalised over the raw memory) matches the state, and the compressed memory the next step
    reads is the n_cmem most used of the c x n_cmem states evicted last, in time order."""
    nm, ncm, c = 4, 3, 3
    torch.manual_seed(0)
    core = memory.make_core(
        "compressive", D, n_layers=1, n_heads=1, n_mem=nm, n_cmem=ncm, compression_rate=c,
        compression="most_used",
    )  # fmt: skip
    r = nm + c * ncm
    x = torch.randn(1, 40, D)
    shared_window = False
    for t in range(r, 40, 3):
        starts = torch.zeros(1, t, dtype=torch.bool)
        s0 = core.initial_state(1, "cpu")
        w = core.inspect(x[:, :t], s0, starts)["attention"]  # (T, R + T): raw slots, steps
        with torch.no_grad():
            st = core(x[:, :t], s0, starts).state
        lag = torch.arange(t)[:, None] - torch.arange(-r, t)[None, :]
        raw_only = torch.where((lag >= 0) & (lag <= nm), w, 0.0)
        usage = (raw_only / raw_only.sum(1, keepdim=True)).sum(0)  # (R + T,)
        torch.testing.assert_close(st["usage"][0, 0], usage[-r:], atol=1e-5, rtol=1e-4)
        top = usage[-r:-nm].topk(ncm).indices.sort().values  # among the c x n_cmem evicted
        torch.testing.assert_close(st["cmem"][0, 0], x[0, t - r : t - nm][top])
        assert st["cvalid"].all()
        # Episode time // c: the blocks the other compressions form, one slot each.
        shared_window |= len(set(((top + t - r) // c).tolist())) < ncm
    assert shared_window, "ranked over the whole span, two kept states can share a block"


def test_most_used_acting_step_projects_only_the_new_step() -> None:
    core = make("compressive", {"n_mem": 32, "n_cmem": 16, "compression": "most_used"})
    sizes: list[int] = []
    for blk in core.blocks:
        blk.attn.kv.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[1]))
    with torch.no_grad():
        core(torch.randn(B, 1, D), core.initial_state(B, "cpu"), torch.ones(B, 1, dtype=bool))
    assert sizes == [1] * core.n_layers, sizes
