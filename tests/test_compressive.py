"""Compressive Transformer specifics beyond the shared contract (tests/test_core_contract.py)."""

from __future__ import annotations

import pytest
import torch

from mnemo import memory
from mnemo.memory.base import tree_leaves
from mnemo.memory.compressive import COMPRESSIONS

D, B = 16, 3
SMALL = {"n_mem": 4, "n_cmem": 3, "compression_rate": 3, "n_layers": 2, "n_heads": 2}


def make(**kw) -> memory.MemoryCore:
    torch.manual_seed(0)
    return memory.make_core("compressive", D, **{**SMALL, **kw})


def starts_for(t: int) -> torch.Tensor:
    s = torch.zeros(B, t, dtype=torch.bool)
    s[0, 0] = True
    s[1, 7] = True
    s[2, 15] = True
    return s


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("gated", [False, True])
def test_steps_equal_segment_for_every_compression(compression: str, gated: bool) -> None:
    core = make(compression=compression, gated=gated)
    t = 30
    x = torch.randn(B, t, D)
    starts = starts_for(t)
    with torch.no_grad():
        full = core(x, core.initial_state(B, "cpu"), starts)
        s, ys = core.initial_state(B, "cpu"), []
        for a in range(0, t, 4):
            out = core(x[:, a : a + 4], s, starts[:, a : a + 4])
            ys.append(out.y)
            s = out.state
    torch.testing.assert_close(torch.cat(ys, 1), full.y, atol=1e-5, rtol=1e-4)
    for a, b in zip(tree_leaves(s), tree_leaves(full.state), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("compression", ["conv", "most_used"])
def test_cached_kv_equals_recomputed(compression: str) -> None:
    core = make(compression=compression, gated=True)
    x = torch.randn(B, 26, D)
    starts = starts_for(26)
    with torch.no_grad():
        a = core(x[:, :17], core.initial_state(B, "cpu"), starts[:, :17])
        cached = core(x[:, 17:], a.state, starts[:, 17:])
    recomputed = core(x[:, 17:], a.state, starts[:, 17:])  # grad mode: from hidden states
    torch.testing.assert_close(cached.y, recomputed.y.detach(), atol=1e-5, rtol=1e-4)
    for k in ("raw_kv", "cmem_kv"):
        torch.testing.assert_close(cached.state[k], recomputed.state[k], atol=1e-5, rtol=1e-4)


def test_acting_step_projects_only_the_new_step_and_block() -> None:
    core = make(n_mem=32, n_cmem=16)
    sizes: list[int] = []
    for blk in core.blocks:
        blk.attn.kv.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[1]))
    with torch.no_grad():
        core(torch.randn(B, 1, D), core.initial_state(B, "cpu"), torch.ones(B, 1, dtype=bool))
    assert sizes == [1, 1] * core.n_layers, sizes


def test_compressed_memory_holds_blocks_of_c_evicted_states() -> None:
    """Layer 0's inputs are x: with mean pooling its compressed memory is block means of x.

    Row 1 starts an episode at t=7: its blocks restart there (a block never mixes episodes)
    and states still waiting in the buffer are never padded with zeros.
    """
    nm, ncm, c = SMALL["n_mem"], SMALL["n_cmem"], SMALL["compression_rate"]
    core = make(compression="mean")
    t = 19
    x = torch.randn(B, t, D)
    starts = torch.zeros(B, t, dtype=torch.bool)
    starts[1, 7] = True
    with torch.no_grad():
        st = core(x, core.initial_state(B, "cpu"), starts).state
    last_evicted = t - 1 - nm  # states 0..14 have left the FIFO memory
    for row, first in ((0, 0), (1, 7)):
        ends = list(range(first + c - 1, last_evicted + 1, c))[-ncm:]
        want = torch.stack([x[row, e - c + 1 : e + 1].mean(0) for e in ends])
        got = st["cmem"][row, 0][-len(ends) :]
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        assert st["cvalid"][row].sum() == len(ends)
    # Row 1: episode states 7..14 evicted = 8 states -> 2 blocks, 2 states in the buffer.
    assert st["cvalid"][1].tolist() == [False, True, True]
    torch.testing.assert_close(st["raw"][0, 0], x[0, t - core.n_raw :])


def test_one_layer_sees_memory_and_compressed_memory_only() -> None:
    """y_t changes with x_s for s in the FIFO window or in a visible compressed block, and
    with nothing older; states still in the buffer are not attended."""
    nm, ncm, c = 4, 2, 3
    core = make(n_layers=1, n_mem=nm, n_cmem=ncm, compression_rate=c, compression="max")
    t = 24
    x = torch.randn(1, t, D)
    starts = torch.zeros(1, t, dtype=torch.bool)
    with torch.no_grad():
        base = core(x, core.initial_state(1, "cpu"), starts).y[0, -1]
        changed = []
        for s in range(t):
            x2 = x.clone()
            x2[0, s] += 5.0
            y = core(x2, core.initial_state(1, "cpu"), starts).y[0, -1]
            changed.append(not torch.allclose(y, base, atol=1e-6))
    q = t - 1
    raw = set(range(q - nm, q + 1))
    evicted = q - nm - 1  # newest evicted state: 18; blocks end at 2, 5, ..., 17
    ends = [e for e in range(c - 1, evicted + 1, c)][-ncm:]
    blocks = {s for e in ends for s in range(e - c + 1, e + 1)}
    seen = {s for s in range(t) if changed[s]}
    # max-pool: a perturbation inside a block may not win the max; none outside may matter.
    assert raw <= seen
    assert seen <= raw | blocks, f"attended outside memory: {sorted(seen - raw - blocks)}"
    assert seen & blocks, "compressed memory is never read"
    assert evicted not in seen  # in the buffer: waiting for c states, not attended


def test_reconstruction_loss_trains_only_the_compressor() -> None:
    core = make()
    x = torch.randn(B, 20, D, requires_grad=True)
    out = core(x, core.initial_state(B, "cpu"), starts_for(20))
    assert out.aux_loss > 0
    out.aux_loss.backward()
    assert x.grad is None or torch.equal(x.grad, torch.zeros_like(x.grad))
    for name, p in core.named_parameters():
        reached = p.grad is not None and p.grad.abs().sum() > 0
        assert reached == name.startswith("compressors."), name


def test_task_loss_does_not_reach_the_compressor() -> None:
    core = make()
    x = torch.randn(B, 20, D)
    out = core(x, core.initial_state(B, "cpu"), starts_for(20))
    out.y.square().sum().backward()
    for name, p in core.named_parameters():
        if name.startswith("compressors."):
            assert p.grad is None or torch.equal(p.grad, torch.zeros_like(p.grad)), name


def test_reconstruction_loss_decreases_when_trained() -> None:
    core = make(n_layers=1)
    opt = torch.optim.Adam(core.compressors.parameters(), lr=3e-2)
    x = torch.randn(4, 16, D)
    starts = torch.zeros(4, 16, dtype=torch.bool)
    losses = []
    for _ in range(15):
        aux = core(x, core.initial_state(4, "cpu"), starts).aux_loss
        opt.zero_grad()
        aux.backward()
        opt.step()
        losses.append(float(aux.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::3]


@pytest.mark.parametrize("cache", [1 << 19, 64])
def test_rows_alike_share_one_plan_with_the_same_numbers(monkeypatch, cache: int) -> None:
    """Rows with one episode timing get one row's plan (``block_plan``), with the numbers of
    the plan made row by row: outputs, state, aux loss, gradients and ``inspect``, bit for bit,
    in blocks of queries and in slices of the batch (a small cache: one row per slice)."""
    from mnemo.memory import bias_attention, compressive_windows

    monkeypatch.setattr(bias_attention, "CACHE_NUMBERS", cache)
    core = make()
    monkeypatch.setattr(core, "query_block", 8)
    x = torch.randn(B, 50, D)
    starts = torch.zeros(B, 50, dtype=torch.bool)
    starts[:, 0] = True
    runs = []
    for shared in (True, False):
        monkeypatch.setattr(compressive_windows, "rows_alike", lambda *_, s=shared: s)
        core.zero_grad()
        first = core(x[:, :20], core.initial_state(B, "cpu"), starts[:, :20])
        out = core(x[:, 20:], core.detach(first.state), starts[:, 20:])
        (out.y.square().sum() + out.aux_loss).backward()
        grads = [p.grad.clone() for p in core.parameters()]
        seen = core.inspect(x[:, 20:], first.state, starts[:, 20:])["attention"]
        runs.append([out.y, out.aux_loss, *tree_leaves(out.state), *grads, seen])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("amp", [False, True])
def test_projected_twice_is_both_frozen_projections(amp: bool) -> None:
    """One product for the compressions' keys/values: attention's gradient reaches the weight
    only, the reconstruction loss's the compressions only, the numbers of two products (with
    bf16 autocast too)."""
    import torch.nn.functional as F

    from mnemo.memory.compressive import ProjectedTwice

    x, w = torch.randn(2, 5, D, requires_grad=True), torch.randn(2 * D, D, requires_grad=True)
    ga, gb = torch.randn(2, 5, 2 * D), torch.randn(2, 5, 2 * D)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        a, b = ProjectedTwice.apply(x, w)
        a2, b2 = F.linear(x.detach(), w), F.linear(x, w.detach())
    got = torch.autograd.grad((a.float() * ga).sum() + (b.float() * gb).sum(), (x, w))
    want = torch.autograd.grad((a2.float() * ga).sum() + (b2.float() * gb).sum(), (x, w))
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert all(torch.equal(g, h) for g, h in zip(got, want, strict=True))


def test_bad_options_are_explained() -> None:
    with pytest.raises(memory.CoreConfigError, match="compression must be one of"):
        memory.make_core("compressive", D, compression="zip")
    with pytest.raises(memory.CoreConfigError, match="n_cmem"):
        memory.make_core("compressive", D, n_cmem=0)
