"""Transformer-XL / GTrXL specifics beyond the shared contract (tests/test_core_contract.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mnemo import memory
from mnemo.memory.attention import RelMultiHeadAttention, gather_rel, rel_shift, sinusoid
from mnemo.memory.transformer_block import GRUGate
from mnemo.memory.trxl import rel_shift_window

D, B = 16, 3


def make(name: str = "gtrxl", **kw) -> memory.MemoryCore:
    torch.manual_seed(0)
    opts = {"mem_len": 6, "n_layers": 2, "n_heads": 2, **kw}
    return memory.make_core(name, D, **opts)


def test_rel_shift_equals_brute_force_gather() -> None:
    torch.manual_seed(0)
    m, t = 5, 4
    k = m + t
    x = torch.randn(2, 3, t, k)  # column c holds distance k - 1 - c
    shifted = rel_shift(x)
    by_distance = x.flip(-1)  # column p holds distance p
    i = torch.arange(t)[:, None]
    j = torch.arange(k)[None, :]
    dist = m + i - j  # query i sits at key m + i
    want = gather_rel(by_distance, dist)
    causal = j <= m + i
    torch.testing.assert_close(shifted[..., causal], want[..., causal])


def test_window_rel_shift_matches_gather() -> None:
    torch.manual_seed(0)
    m, t = 6, 5
    scores = torch.randn(2, 2, t, m + 1)  # distances m..0
    out = rel_shift_window(t)(scores)
    i = torch.arange(t)[:, None]
    j = torch.arange(m + t)[None, :]
    dist = m + i - j
    want = gather_rel(scores.flip(-1), dist)
    inside = (dist >= 0) & (dist <= m)
    torch.testing.assert_close(out[..., inside], want[..., inside])


def test_attention_equals_the_papers_formula() -> None:
    """Scores (q+u).k + (q+v).W_kR R_{i-j}, masked softmax, against a direct loop over i, j."""
    torch.manual_seed(0)
    attn = RelMultiHeadAttention(D, 2)
    m, t = 4, 3
    k_len = m + t
    hq, ctx = torch.randn(B, t, D), torch.randn(B, k_len, D)
    kv = attn.kv(ctx)
    i = torch.arange(t)[:, None]
    j = torch.arange(k_len)[None, :]
    mask = ((j <= m + i) & (j >= i)).expand(B, t, k_len).clone()
    mask[0, 1, 2] = False
    pos = torch.arange(m, -1, -1.0)
    out, _ = attn(hq, kv, pos, rel_shift_window(t), mask)

    q = attn.heads(attn.q(hq))
    kk, vv = (attn.heads(z) for z in kv.chunk(2, -1))
    r = attn.r(sinusoid(torch.arange(k_len, dtype=torch.float), D)).view(k_len, 2, D // 2)
    scores = torch.full((B, 2, t, k_len), float("-inf"))
    for a in range(t):
        for c in range(k_len):
            d = m + a - c
            if d < 0:
                continue
            s = ((q[:, :, a] + attn.u) * kk[:, :, c]).sum(-1)
            s = s + ((q[:, :, a] + attn.v) * r[d]).sum(-1)
            scores[:, :, a, c] = torch.where(mask[:, a, c, None], s / math.sqrt(D // 2), -math.inf)
    want = torch.softmax(scores, -1) @ vv
    want = attn.o(want.transpose(1, 2).reshape(B, t, D))
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-4)


def test_position_score_forms_agree() -> None:
    torch.manual_seed(0)
    attn = RelMultiHeadAttention(D, 2)
    pos = torch.arange(9.0)
    qv = torch.randn(2, 2, 1, D // 2)  # folded form wins at T=1, batch 2
    qv_big = torch.randn(64, 2, 8, D // 2)  # unfolded form wins
    for q in (qv, qv_big):
        want = torch.einsum("bhtd,phd->bhtp", q, attn.r(sinusoid(pos, D)).view(9, 2, D // 2))
        torch.testing.assert_close(attn.position_scores(q, pos), want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["trxl", "gtrxl"])
def test_cached_kv_equals_recomputed(name: str) -> None:
    core = make(name)
    x = torch.randn(B, 15, D)
    starts = torch.zeros(B, 15, dtype=torch.bool)
    starts[1, 7] = True
    s = core.initial_state(B, "cpu")
    with torch.no_grad():
        a = core(x[:, :9], s, starts[:, :9])
        cached = core(x[:, 9:], a.state, starts[:, 9:])
    recomputed = core(x[:, 9:], a.state, starts[:, 9:])  # grad mode: keys from hidden states
    torch.testing.assert_close(cached.y, recomputed.y.detach(), atol=1e-5, rtol=1e-4)


def test_acting_step_projects_only_the_new_token() -> None:
    core = make("gtrxl", mem_len=32)
    sizes: list[int] = []
    for blk in core.blocks:
        blk.attn.kv.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[1]))
    s = core.initial_state(B, "cpu")
    with torch.no_grad():
        core(torch.randn(B, 1, D), s, torch.ones(B, 1, dtype=torch.bool))
    assert sizes == [1, 1], "an acting step must read cached keys, not re-project the memory"


@pytest.mark.parametrize("name", ["trxl", "gtrxl"])
def test_window_is_mem_len_and_memory_carries_it(name: str) -> None:
    """Each layer reaches M steps further back: y_t depends on x_{t-LM}, not on x_{t-LM-1}."""
    m = 6
    core = make(name, mem_len=m)
    t_total = 16
    x = torch.randn(1, t_total, D, requires_grad=True)
    starts = torch.zeros(1, t_total, dtype=torch.bool)
    starts[0, 0] = True
    out = core(x, core.initial_state(1, "cpu"), starts)
    probe = torch.randn(D)  # not .sum(): a final LayerNorm makes the sum constant
    last = t_total - 1
    (g,) = torch.autograd.grad((out.y[0, last] * probe).sum(), x)
    reach = last - m * core.n_layers  # each layer looks M steps further back
    assert g[0, reach].abs().sum() > 0
    assert torch.equal(g[0, :reach], torch.zeros_like(g[0, :reach]))
    # Values from before the segment arrive through memory, gradients do not (stop-gradient).
    first = core(x[:, :4], core.initial_state(1, "cpu"), starts[:, :4])
    second = core(x[:, 4:], first.state, starts[:, 4:])
    torch.testing.assert_close(second.y, out.y[:, 4:], atol=1e-5, rtol=1e-4)
    (g2,) = torch.autograd.grad((second.y * probe).sum(), x)
    assert torch.equal(g2[0, :4], torch.zeros_like(g2[0, :4]))


def test_invalid_memory_is_masked_not_zeros() -> None:
    """A fresh episode whose memory holds garbage gives the same output as an empty memory."""
    core = make("trxl")
    s = core.initial_state(B, "cpu")
    junk = {k: (torch.randn_like(v) if v.is_floating_point() else v) for k, v in s.items()}
    x = torch.randn(B, 1, D)
    no_start = torch.zeros(B, 1, dtype=torch.bool)
    with torch.no_grad():
        a = core(x, s, no_start).y
        b = core(x, junk, no_start).y
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b)


def test_gtrxl_structure_and_gate_bias() -> None:
    g = make("gtrxl", gate_bias=3.0)
    t = make("trxl")
    assert g.pre_ln and all(blk.gated for blk in g.blocks)
    assert not t.pre_ln and not any(blk.gated for blk in t.blocks)
    assert torch.all(g.blocks[0].gate1.bg == 3.0)
    assert memory.core_options("gtrxl")["gate_bias"] == 2.0
    gate = GRUGate(D, gate_bias=50.0)  # a huge bias closes the gate: identity map
    x = torch.randn(4, D)
    torch.testing.assert_close(gate(x, torch.randn(4, D)), x, atol=1e-5, rtol=0)


def test_bf16_memory_option() -> None:
    core32, core16 = make("gtrxl"), make("gtrxl", memory_dtype="bfloat16")
    x = torch.randn(B, 10, D)
    starts = torch.zeros(B, 10, dtype=torch.bool)
    starts[:, 0] = True
    with torch.no_grad():
        a = core32(x, core32.initial_state(B, "cpu"), starts)
        s16 = core16.initial_state(B, "cpu")
        b = core16(x, s16, starts)
        c = core16(x[:, :1], b.state, starts[:, :1] & False)
    assert b.state["mem"].dtype == torch.bfloat16 and b.state["kv"].dtype == torch.bfloat16
    assert c.state["mem"].dtype == torch.bfloat16
    torch.testing.assert_close(a.y, b.y)  # bf16 only affects what is stored
    assert torch.isfinite(c.y).all()


def test_bad_options_are_explained() -> None:
    with pytest.raises(memory.CoreConfigError, match="divisible"):
        memory.make_core("trxl", D, n_heads=3)
    with pytest.raises(memory.CoreConfigError, match="mem_len"):
        memory.make_core("trxl", D, mem_len=0)
