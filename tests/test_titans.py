"""Titans: the chunked memory update against a token-by-token reference, layouts, gradients
of the outer parameters, numerical guards and the sliding-window attention.

The shared contract (step == parallel, resets, detach, row independence) runs in
tests/test_core_contract.py for every titans_* core.
"""

from __future__ import annotations

import pytest
import torch

from mnemo import memory
from mnemo.memory.neural_memory import NeuralMemory
from mnemo.memory.titans_layout import chunk_layout
from mnemo.memory.window_attention import SlidingWindowAttention
from mnemo.memory.write_bound import WriteChain

VARIANTS = ["titans_lmm", "titans_mac", "titans_mag", "titans_mal"]
SMALL = {"chunk_size": 4, "n_heads": 2}


def small(name: str) -> dict:
    """Small options; the sliding window only where there is one (MAC and LMM refuse it)."""
    return {**SMALL, "window": 6} if name in ("titans_mag", "titans_mal") else SMALL


@pytest.fixture(autouse=True)
def one_thread():
    # Many small ops: a second thread only adds synchronisation (10-50x slower on a busy CPU).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sequential_write(mem: NeuralMemory, w0, s0, k, v, gate_in):
    """Token by token with autograd: S = eta S - theta clip(grad at W0); W = (1-alpha) W + S."""
    logits = mem.gate_proj(gate_in).unflatten(-1, (3, mem.n_heads))  # (B, b, 3, H)
    eta, theta, alpha = logits.sigmoid().unbind(-2)
    theta = theta * mem.max_lr
    w, s = list(w0), list(s0)
    for j in range(k.shape[2]):
        params = [t.detach().clone().requires_grad_(True) for t in w0]
        h = k[:, :, j]  # (B, H, Dh)
        for i, p in enumerate(params):
            h = torch.einsum("bhi,bhio->bho", h, p)
            if i < len(params) - 1:
                h = torch.nn.functional.silu(h)
        loss = (h - v[:, :, j]).square().sum(-1)  # (B, H): one loss per row and head
        grads = torch.autograd.grad(loss.sum(), params)
        norm = sum(g.square().sum((-1, -2)) for g in grads).sqrt()  # (B, H)
        clip = (mem.max_grad_norm / norm).clamp(max=1.0)[..., None, None]
        e, th, a = (t[:, j, :, None, None] for t in (eta, theta, alpha))
        for i, g in enumerate(grads):
            s[i] = e * s[i] - th * clip * g
            w[i] = (1 - a) * w[i] + s[i]
    return w, s


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("max_grad_norm", [100.0, 0.05])  # unclipped / always clipped
def test_chunked_write_matches_sequential_reference(depth: int, max_grad_norm: float) -> None:
    torch.manual_seed(depth)
    b_rows, d, heads, chunk = 3, 16, 2, 7
    mem = NeuralMemory(d, n_heads=heads, mem_depth=depth, max_grad_norm=max_grad_norm)
    with torch.no_grad():
        mem.gate_proj.weight.normal_(0, 1.0)  # spread eta, theta, alpha over (0, 1)
    w0 = tuple(p.detach() + 0.1 * torch.randn(b_rows, *p.shape) for p in mem.init_weights)
    s0 = tuple(0.1 * torch.randn_like(t) for t in w0)
    k = torch.nn.functional.normalize(torch.randn(b_rows, heads, chunk, d // heads), dim=-1)
    v = torch.randn(b_rows, heads, chunk, d // heads)
    gate_in = torch.randn(b_rows, chunk, d)
    with torch.no_grad():
        w, s = mem.write(w0, s0, k, v, mem.coefficients(gate_in))
    w_ref, s_ref = sequential_write(mem, w0, s0, k, v, gate_in)
    for a, b in zip((*w, *s), (*w_ref, *s_ref), strict=True):
        torch.testing.assert_close(a, b.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("within", [True, False])
def test_memory_pass_matches_token_by_token_reference(within: bool) -> None:
    """The LMM's reads over a whole call against a plain loop: conv1d, per-token reads with
    the weights after the chunk's tokens up to t (``within``; gradients at the chunk start) or
    at the chunk start, and the sequential write at each chunk end."""
    torch.manual_seed(0)
    core = memory.make_core("titans_lmm", 16, chunk_size=4, n_heads=2, intra_chunk_reads=within)
    layer, b, t, d, chunk = core.layers[0], 2, 14, 16, 4
    mem = layer.mem
    with torch.no_grad():
        mem.q_conv.normal_(0, 0.5)
        mem.kv_conv.normal_(0, 0.5)
    u = torch.randn(b, t, d)
    starts = torch.zeros(b, t, dtype=torch.bool)
    state = core.initial_state(b, "cpu")
    with torch.no_grad():
        lay = chunk_layout(starts, state["count"], chunk)
        grid = torch.nn.functional.pad(u, (0, 0, 0, lay.real.shape[1] - t))  # no starts: slot = t
        out, _ = layer._parallel_pass(grid, lay, state["layers"][0])

        def conv(pre, weight):  # independent of memory.neural_memory.causal_conv
            k = weight.shape[1]
            padded = torch.nn.functional.pad(pre.transpose(1, 2), (k - 1, 0))
            return torch.nn.functional.conv1d(padded, weight[:, None], groups=weight.shape[0])

        q = conv(mem.q_proj(u), mem.q_conv).transpose(1, 2)
        kv = torch.nn.functional.silu(conv(mem.kv_proj(u), mem.kv_conv).transpose(1, 2))
        q = torch.nn.functional.normalize(torch.nn.functional.silu(q).view(b, t, 2, 8), dim=-1)
        k = torch.nn.functional.normalize(kv[..., :d].view(b, t, 2, 8), dim=-1)
        v = kv[..., d:].view(b, t, 2, 8)
    w, s = mem.fresh_weights(b)
    ref = []
    for a in range(0, t, chunk):
        e = min(a + chunk, t)
        for j in range(a, e):
            w_j = w
            if within:  # token j reads M after tokens a..j, all gradients taken at w
                kj, vj = k[:, a : j + 1].transpose(1, 2), v[:, a : j + 1].transpose(1, 2)
                w_j, _ = sequential_write(mem, w, s, kj, vj, u[:, a : j + 1])
            with torch.no_grad():
                ref.append(mem.read(w_j, q[:, j : j + 1].transpose(1, 2)))
        if e - a == chunk:
            kc, vc = k[:, a:e].transpose(1, 2), v[:, a:e].transpose(1, 2)
            w, s = sequential_write(mem, w, s, kc, vc, u[:, a:e])
            w, s = tuple(x.detach() for x in w), tuple(x.detach() for x in s)
    torch.testing.assert_close(out[:, :t], torch.cat(ref, 1), atol=1e-5, rtol=1e-4)


def test_layout_puts_episode_starts_on_chunk_boundaries() -> None:
    # Row 0: 2 tokens waiting, no start. Row 1: 3 waiting, a start at t=2. Row 2: start at 0.
    starts = torch.zeros(3, 5, dtype=torch.bool)
    starts[1, 2] = starts[2, 0] = True
    lay = chunk_layout(starts, torch.tensor([2, 3, 1]), chunk=4)
    assert lay.vpos.tolist() == [[2, 3, 4, 5, 6], [3, 4, 8, 9, 10], [0, 1, 2, 3, 4]]
    assert lay.fresh.tolist() == [[False, False, False], [False, False, True], [True, False, False]]
    assert lay.complete.tolist() == [
        [True, False, False],
        [True, False, False],  # its first episode ends one token into chunk 1
        [True, False, False],
    ]
    assert lay.tail_base.tolist() == [4, 8, 4]
    assert lay.tail_count.tolist() == [3, 3, 1]
    assert lay.n_buffered.tolist() == [2, 3, 0]


def test_memory_survives_beyond_the_attention_window() -> None:
    # A token written into M changes the output long after it has left the attention window.
    torch.manual_seed(0)
    core = memory.make_core("titans_mag", 16, chunk_size=4, window=4)
    starts = torch.zeros(1, 40, dtype=torch.bool)
    starts[0, 0] = True
    x = torch.randn(1, 40, 16, requires_grad=True)
    y = core(x, core.initial_state(1, "cpu"), starts).y
    (grad,) = torch.autograd.grad(y[0, -1].sum(), x)
    assert grad[0, 0].abs().sum() > 0, "the first token never reached the last output"


@pytest.mark.parametrize("name", VARIANTS)
def test_reads_within_a_chunk_act_one_step_as_they_train(name: str) -> None:
    """With reads inside chunks, one call over T tokens equals T calls of one token."""
    torch.manual_seed(0)
    core = memory.make_core(name, 16, **small(name), intra_chunk_reads=True)
    starts = torch.zeros(2, 11, dtype=torch.bool)
    starts[:, 0] = starts[1, 6] = True
    x = torch.randn(2, 11, 16)
    with torch.no_grad():
        whole = core(x, core.initial_state(2, "cpu"), starts)
        state, steps = core.initial_state(2, "cpu"), []
        for t in range(11):
            out = core(x[:, t : t + 1], state, starts[:, t : t + 1])
            steps.append(out.y)
            state = out.state
    torch.testing.assert_close(torch.cat(steps, 1), whole.y, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("within", [True, False])
def test_output_at_t_sees_its_chunk_up_to_t(name: str, within: bool) -> None:
    """Without convolution (whose reach would hide it), the output at t depends on the earlier
    tokens of its chunk only when reads are taken inside the chunk, and never on later ones."""
    torch.manual_seed(0)
    opts = {**small(name), "chunk_size": 8, "conv_kernel": 1, "intra_chunk_reads": within}
    if name in ("titans_mag", "titans_mal"):
        opts["window"] = 1  # no attention beyond the token itself
    core = memory.make_core(name, 16, **opts)
    starts = torch.zeros(1, 16, dtype=torch.bool)
    starts[0, 0] = True
    x = torch.randn(1, 16, 16, requires_grad=True)
    y = core(x, core.initial_state(1, "cpu"), starts).y
    t = 13  # chunk 8..15
    (grad,) = torch.autograd.grad(y[0, t].sum(), x)
    reach = grad[0].abs().sum(-1)  # (T,)
    assert (reach[t + 1 :] == 0).all(), "a later token reached the output"
    if name == "titans_mac":  # MAC's attention spans its segment either way
        return
    same_chunk = reach[8:t]
    assert (same_chunk > 0).all() if within else (same_chunk == 0).all(), same_chunk


@pytest.mark.parametrize("name", VARIANTS)
def test_outer_parameters_learn_through_the_inner_updates(name: str) -> None:
    torch.manual_seed(0)
    core = memory.make_core(name, 16, **small(name))
    starts = torch.zeros(2, 19, dtype=torch.bool)
    starts[:, 0] = True
    x = torch.randn(2, 19, 16)
    core(x, core.initial_state(2, "cpu"), starts).y.square().sum().backward()
    mem = core.layers[0].mem
    named = {
        "W_q": mem.q_proj.weight,
        "W_kv": mem.kv_proj.weight,
        "eta/theta/alpha": mem.gate_proj.weight,
        "conv": mem.kv_conv,
        **{f"M_0[{i}]": p for i, p in enumerate(mem.init_weights)},
    }
    if name != "titans_lmm":
        named["persistent"] = core.layers[0].persistent
    for what, p in named.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{what} got no gradient"
    # The gates reach the loss only through the inner updates: each of the three must matter.
    g = mem.gate_proj.weight.grad.view(3, mem.n_heads, -1)
    for i, gate in enumerate(("eta", "theta", "alpha")):
        assert g[i].abs().sum() > 0, f"{gate} got no gradient"


@pytest.mark.parametrize("name", ["titans_lmm", "titans_mac"])
def test_long_sequences_stay_finite(name: str) -> None:
    torch.manual_seed(0)
    core = memory.make_core(name, 16, chunk_size=16)
    x = (20.0 * torch.randn(1, 4096, 16)).requires_grad_()
    starts = torch.zeros(1, 4096, dtype=torch.bool)
    out = core(x, core.initial_state(1, "cpu"), starts)
    assert torch.isfinite(out.y).all()
    out.y.square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for w in out.state["layers"][0]["W"]:
        assert torch.isfinite(w).all() and w.abs().max() < 1e3


def _expansive_writes(n_writes: int, gain_limit: float):
    """n_writes chained writes (one ``WriteChain``) whose backward grows ~4x each (max_lr 2):
    outputs and gradients to the first (M, S), k, v and the gates, exact and bounded."""
    torch.manual_seed(0)
    b_rows, d, heads, chunk = 3, 16, 2, 8
    mem = NeuralMemory(d, n_heads=heads, max_lr=2.0, gain_limit=gain_limit)
    w0 = tuple(
        (p.detach() + 0.1 * torch.randn(b_rows, *p.shape)).requires_grad_()
        for p in mem.init_weights
    )
    s0 = tuple((0.1 * torch.randn_like(t)).requires_grad_() for t in w0)
    k = torch.nn.functional.normalize(torch.randn(b_rows, heads, chunk, d // heads), dim=-1)
    k.requires_grad_()
    v = torch.randn(b_rows, heads, chunk, d // heads, requires_grad=True)
    c = mem.coefficients(torch.randn(b_rows, chunk, d))
    probe = [torch.randn(b_rows, *t.shape[1:]) for t in (*w0, *s0)]
    chain = WriteChain()

    def bounded(*args):
        return mem.write(*args, chain=chain)

    found = {}
    for name, write in (("exact", mem.write_exact), ("bounded", bounded)):
        w, s = w0, s0
        for _ in range(n_writes):
            w, s = write(w, s, k, v, c)
        loss = sum((o * p).sum() for o, p in zip((*w, *s), probe))
        inputs = [*w0, *s0, k, v, mem.gate_proj.weight]
        found[name] = ((*w, *s), torch.autograd.grad(loss, inputs, retain_graph=True))
    return found, _rows(probe), len(w0)


def _rows(ts) -> torch.Tensor:
    return torch.sqrt(sum(t.flatten(1).square().sum(1) for t in ts))


def test_write_backward_never_grows_the_carried_gradient() -> None:
    """At gain_limit 1 the memory's gradient through one write is at most the gradient at its
    output (per row); the forward pass and the gradients to k, v and the gates are exact."""
    found, out_norm, n = _expansive_writes(1, gain_limit=1.0)
    (out_e, grads_e), (out_b, grads_b) = found["exact"], found["bounded"]
    for a, b in zip((*out_e, *grads_e[2 * n :]), (*out_b, *grads_b[2 * n :])):
        torch.testing.assert_close(a, b)
    assert (_rows(grads_e[: 2 * n]) > 1.5 * out_norm).all(), "the test's write is not expansive"
    assert (_rows(grads_b[: 2 * n]) <= out_norm * (1 + 1e-5)).all()


def test_writes_that_grow_the_gradient_less_than_the_limit_are_exact() -> None:
    found, out_norm, n = _expansive_writes(2, gain_limit=100.0)
    (out_e, grads_e), (out_b, grads_b) = found["exact"], found["bounded"]
    assert (_rows(grads_e[: 2 * n]) > 5 * out_norm).all(), "the test's writes are not expansive"
    for a, b in zip((*out_e, *grads_e), (*out_b, *grads_b)):
        torch.testing.assert_close(a, b)


def test_writes_never_grow_the_carried_gradient_beyond_the_limit() -> None:
    """Through a chain of writes the memory's gradient grows at most gain_limit-fold (per
    row); the forward pass is exact."""
    found, out_norm, n = _expansive_writes(24, gain_limit=100.0)  # exact: ~2e7-fold
    (out_e, grads_e), (out_b, grads_b) = found["exact"], found["bounded"]
    for a, b in zip(out_e, out_b):
        torch.testing.assert_close(a, b)
    assert (_rows(grads_e[: 2 * n]) > 1e3 * out_norm).all(), "not expansive enough"
    bounded = _rows(grads_b[: 2 * n])
    assert (bounded <= 100.0 * out_norm * (1 + 1e-4)).all()
    assert (bounded >= 10.0 * out_norm).all()  # cut at the limit, not at every write


@pytest.mark.parametrize("name", VARIANTS)
def test_backward_stays_bounded_where_the_memory_diverges(name: str) -> None:
    # max_lr 0.5 at chunk 4 (refused as an option: set on the module) made the gradient at
    # the first tokens of 1024 grow beyond 1e9 before the write's backward was bounded (MAC:
    # with retrieval_grad=false: its retrieved tokens carry the gradient past the bound).
    torch.manual_seed(0)
    cut = {"retrieval_grad": False} if name == "titans_mac" else {}
    core = memory.make_core(name, 16, chunk_size=4, **cut)
    core.layers[0].mem.max_lr = 0.5
    x = (20.0 * torch.randn(1, 1024, 16)).requires_grad_()
    out = core(x, core.initial_state(1, "cpu"), torch.zeros(1, 1024, dtype=torch.bool))
    out.y[:, -4:].square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad[0, :4].norm() < 1.0


def brute_force_window(attn: SlidingWindowAttention, x, starts, prefix=None):
    """Each token attends to itself and the window-1 tokens before it of its episode, keys
    rotated by their absolute positions in the sequence, the prefix without positions."""
    b, t, _ = x.shape
    k, v = attn.keys_values(x)
    pkv = attn.keys_values(prefix) if prefix is not None else None
    ep = torch.cumsum(starts.long(), 1)
    ys = torch.zeros_like(x)
    for r in range(b):
        for i in range(t):
            js = [j for j in range(max(0, i - attn.window + 1), i + 1) if ep[r, j] == ep[r, i]]
            ks, vs = k[r : r + 1, js], v[r : r + 1, js]
            mask = torch.ones(1, 1, len(js), dtype=torch.bool)
            q_pos, k_pos = torch.tensor([i]), torch.tensor(js)
            ys[r, i] = attn.attend(x[r : r + 1, i : i + 1], ks, vs, mask, q_pos, k_pos, pkv)[0, 0]
    return ys


@pytest.mark.parametrize("window", [1, 3, 5])
@pytest.mark.parametrize("use_prefix", [False, True])
def test_window_attention_matches_brute_force_and_steps(window: int, use_prefix: bool) -> None:
    torch.manual_seed(window)
    attn = SlidingWindowAttention(8, 2, window, block=4)
    x = torch.randn(3, 13, 8)
    starts = torch.zeros(3, 13, dtype=torch.bool)
    starts[0, 0] = starts[1, 4] = starts[2, 7] = starts[2, 9] = True
    prefix = torch.randn(1, 2, 8) if use_prefix else None
    with torch.no_grad():
        y, state = attn(x, attn.initial_state(3, "cpu"), starts, prefix)
        torch.testing.assert_close(
            y, brute_force_window(attn, x, starts, prefix), atol=1e-5, rtol=0
        )
        s = attn.initial_state(3, "cpu")
        steps = []
        for i in range(13):
            yi, s = attn(x[:, i : i + 1], s, starts[:, i : i + 1], prefix)
            steps.append(yi)
    torch.testing.assert_close(torch.cat(steps, 1), y, atol=1e-5, rtol=0)
    for key in state:
        torch.testing.assert_close(s[key], state[key], atol=1e-6, rtol=0)
    # Row 2 began an episode at 9: only tokens from 9 on may be valid in its cache.
    n_valid = state["valid"][2].sum().item()
    assert n_valid == min(window - 1, 13 - 9)


@pytest.mark.parametrize("name", ["titans_mac", "titans_mag", "titans_mal"])
def test_attention_sees_the_order_of_its_inputs(name: str) -> None:
    # With the memory ablated the output is the attention's alone (plus per-token blocks):
    # swapping two earlier inputs must change what the last token of the window reads.
    torch.manual_seed(0)
    core = memory.make_core(name, 16, **small(name), ablate_memory=True)
    x = torch.randn(1, 4, 16)
    swapped = x[:, [1, 0, 2, 3]]
    starts = torch.zeros(1, 4, dtype=torch.bool)
    starts[0, 0] = True
    with torch.no_grad():
        y = core(x, core.initial_state(1, "cpu"), starts).y
        y_swapped = core(swapped, core.initial_state(1, "cpu"), starts).y
    assert (y[0, -1] - y_swapped[0, -1]).abs().max() > 1e-3


def test_ablated_mac_is_attention_without_retrieved_tokens() -> None:
    torch.manual_seed(0)
    c = SMALL["chunk_size"]
    core = memory.make_core("titans_mac", 16, **SMALL, ablate_memory=True)
    layer = core.layers[0]
    x = torch.randn(2, 3 * c, 16)
    starts = torch.zeros(2, 3 * c, dtype=torch.bool)
    starts[:, 0] = True
    with torch.no_grad():
        y = core(x, core.initial_state(2, "cpu"), starts).y
        ref = []
        pkv = layer.attn.keys_values(layer.persistent[None])
        causal = torch.ones(2, c, c, dtype=torch.bool).tril()
        pos = torch.arange(c)
        for seg in x.split(c, dim=1):  # persistent tokens + the segment, causal: nothing else
            u = layer.norm1(seg)
            k, v = layer.attn.keys_values(u)
            a = layer.attn.attend(u, k, v, causal, pos, pos, pkv)
            h = seg + layer.out_proj(layer.gate_norm(a) * 0.5)  # sigmoid(0): the constant gate
            ref.append(h + layer.ffn(layer.norm2(h)))
    torch.testing.assert_close(y, torch.cat(ref, 1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("titans_mac", {"window": 64}, r"core.window has no effect: titans_mac attends within"),
        ("titans_lmm", {"window": 4}, r"core.window has no effect: titans_lmm has no attention"),
        ("titans_lmm", {"n_persistent": 0}, r"core.n_persistent has no effect: titans_lmm"),
        ("titans_mag", {"mem_depth": 1, "mem_expand": 4}, r"core.mem_expand has no effect"),
    ],
)
def test_options_a_variant_ignores_are_refused(name: str, options: dict, message: str) -> None:
    with pytest.raises(memory.CoreConfigError, match=message) as info:
        memory.validate_core(name, options, 16)
    assert "\n" not in str(info.value)
    memory.validate_core("titans_mag", {"window": 64, "mem_depth": 1}, 16)  # these act


def test_ablation_applies_to_any_config() -> None:
    """The control of a config is that config plus ablate_memory: the memory's own options
    (which configs/lm_titans_mac.yaml and the recall configs set) are accepted and idle."""
    memory_options = {"intra_chunk_reads": False, "retrieval_grad": False}
    memory_options |= {"bounded_backward": True, "backward_gain_limit": 10.0}
    x, starts = torch.randn(2, 12, 16), torch.zeros(2, 12, dtype=torch.bool)
    outs = []
    for given in ({**memory_options, "ablate_memory": True}, {"ablate_memory": True}):
        torch.manual_seed(0)
        core = memory.make_core("titans_mac", 16, **small("titans_mac"), **given)
        outs.append(core(x, core.initial_state(2, "cpu"), starts).y)
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


def test_idle_options_are_named_in_one_line_and_null_unsets_them() -> None:
    with pytest.raises(memory.CoreConfigError) as info:
        memory.validate_core("titans_lmm", {"window": 4, "n_persistent": 2}, 16)
    said = str(info.value)
    assert "core.window has no effect" in said and "core.n_persistent has no effect" in said
    assert "\n" not in said and "core.KEY=null" in said
    memory.validate_core("titans_lmm", {"window": None, "n_persistent": None}, 16)


def test_max_lr_that_diverges_is_refused() -> None:
    # max_lr * sqrt(chunk_size) > 0.5: the exact gradient through 4096 tokens grows to 1e7+.
    with pytest.raises(memory.CoreConfigError, match=r"core.max_lr=0.5 with chunk_size=16: ") as e:
        memory.validate_core("titans_lmm", {"max_lr": 0.5, "chunk_size": 16}, 16)
    assert "\n" not in str(e.value) and "use max_lr <= 0.125" in str(e.value)
    memory.validate_core("titans_lmm", {"max_lr": 0.1, "chunk_size": 16}, 16)
    memory.validate_core("titans_lmm", {"max_lr": 0.25, "chunk_size": 4}, 16)


def test_retrieval_grad_changes_gradients_not_outputs() -> None:
    """MAC's retrieved tokens pass the task gradient into the memory (the paper) unless
    retrieval_grad is false; the forward pass is the same either way."""

    def run(retrieval_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        core = memory.make_core(
            "titans_mac", 16, **small("titans_mac"), retrieval_grad=retrieval_grad
        )
        starts = torch.zeros(1, 24, dtype=torch.bool)
        starts[0, 0] = True
        x = torch.randn(1, 24, 16, requires_grad=True)
        y = core(x, core.initial_state(1, "cpu"), starts).y
        (grad,) = torch.autograd.grad(y[0, -1].sum(), x)
        return y.detach(), grad

    y_paper, g_paper = run(True)
    y_cut, g_cut = run(False)
    torch.testing.assert_close(y_paper, y_cut)
    assert (g_paper - g_cut).abs().max() > 1e-6


def test_bounded_backward_changes_gradients_not_outputs() -> None:
    """bounded_backward=false is the exact gradient through the writes; the forward pass is the
    same, and where the exact gradient grows (max_lr 0.5, chunk 4) the bound is smaller."""

    def run(bounded: bool) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        core = memory.make_core("titans_lmm", 16, chunk_size=4, bounded_backward=bounded)
        core.layers[0].mem.max_lr = 0.5
        x = (5.0 * torch.randn(1, 64, 16)).requires_grad_()
        y = core(x, core.initial_state(1, "cpu"), torch.zeros(1, 64, dtype=torch.bool)).y
        (grad,) = torch.autograd.grad(y[:, -4:].square().mean(), x)
        return y.detach(), grad

    y_bounded, g_bounded = run(True)
    y_exact, g_exact = run(False)
    torch.testing.assert_close(y_bounded, y_exact)
    assert (g_bounded - g_exact).abs().max() > 1e-6
    assert g_bounded[0, :4].norm() <= g_exact[0, :4].norm()
