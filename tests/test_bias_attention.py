"""memory/bias_attention.py: the hand-written attention and its backward against autograd.

Both functions must give softmax(q k^T + bias) v and its gradients, whole or a slice of the
batch at a time (a small ``CACHE_NUMBERS`` forces several slices).
"""

from __future__ import annotations

import pytest
import torch

from mnemo.memory import bias_attention as ba

B, H, Q, W, D, P = 5, 2, 6, 9, 4, 7


def reference(qu, qv, k, v, rk, index, masked):
    """The gathered bias formed whole, then plain autograd softmax attention."""
    scores = torch.einsum("bhqd,phd->bhqp", qv, rk)  # distance ``masked`` scores -inf
    scores = scores.masked_fill(torch.arange(rk.shape[0]) == masked, float("-inf"))
    bias = torch.gather(scores, -1, index.expand(-1, H, -1, -1))
    weights = torch.softmax(qu @ k.transpose(-1, -2) + bias, dim=-1)
    return weights @ v


def inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    qu, qv = (torch.randn(B, H, Q, D, generator=g, dtype=torch.float64) for _ in range(2))
    kv = torch.randn(B, W, 2 * H * D, generator=g, dtype=torch.float64)
    rk = torch.randn(P + 1, H, D, generator=g, dtype=torch.float64)  # row P: masked
    index = torch.randint(0, P, (B, 1, Q, W), generator=g)
    hidden = torch.rand(B, 1, Q, W, generator=g) < 0.3
    hidden[..., 0] = False  # every query sees a key
    index = index.masked_fill(hidden, P)  # P: the masked column
    return [t.requires_grad_() for t in (qu, qv, kv, rk)], index


@pytest.mark.parametrize("cache", [1 << 19, 2 * Q * W])
def test_gathered_equals_the_bias_formed_whole(monkeypatch, cache: int) -> None:
    monkeypatch.setattr(ba, "CACHE_NUMBERS", cache)
    (qu, qv, kv, rk), index = inputs(0)
    out = ba.gathered_bias_attention(qu, qv, kv, rk, index, P)
    k, v = (z.view(B, W, H, D).transpose(1, 2) for z in kv.chunk(2, dim=-1))
    want = reference(qu, qv, k, v, rk, index, P)
    torch.testing.assert_close(out, want)
    g = torch.randn_like(want)
    got = torch.autograd.grad(out, (qu, qv, kv, rk), g)
    wanted = torch.autograd.grad(want, (qu, qv, kv, rk), g)
    for a, b in zip(got, wanted):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cache", [1 << 19, 2 * Q * W])
def test_bias_attention_equals_autograd(monkeypatch, cache: int) -> None:
    monkeypatch.setattr(ba, "CACHE_NUMBERS", cache)
    (qu, _, kv, _), index = inputs(1)
    k, v = (z.view(B, W, H, D).transpose(1, 2) for z in kv.chunk(2, dim=-1))
    bias = torch.randn(B, H, Q, W, dtype=torch.float64).masked_fill(index == P, float("-inf"))
    bias.requires_grad_()
    out = ba.bias_attention(qu, k, v, bias.clone())  # the bias is spent
    want = torch.softmax(qu @ k.transpose(-1, -2) + bias, dim=-1) @ v
    torch.testing.assert_close(out, want)
    g = torch.randn_like(want)
    for a, b in zip(
        torch.autograd.grad(out, (qu, kv, bias), g), torch.autograd.grad(want, (qu, kv, bias), g)
    ):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cache", [1 << 19, 2 * Q * W])
def test_a_toeplitz_run_of_keys_gives_the_gathered_numbers(monkeypatch, cache: int) -> None:
    """Keys G.. at distance offset + query - key (Transformer-XL's memory and segment): their
    gradient is copied through a strided view, not scattered, with the numbers of the plain
    distance index."""
    monkeypatch.setattr(ba, "CACHE_NUMBERS", cache)
    (qu, qv, kv, rk), index = inputs(2)
    first, offset = 4, 2
    dist = offset + torch.arange(Q)[:, None] - torch.arange(W - first)[None, :]
    hide = torch.rand(B, 1, Q, W - first, generator=torch.Generator().manual_seed(3)) < 0.3
    seen = (dist >= 0) & (dist < P) & ~hide
    index[..., first:] = torch.where(seen, dist.clamp(0, P - 1), P)
    at = ba.gather_index(index, P, P + 1, (first, offset))
    assert at.scattered is not None  # the strided path is taken
    runs = [ba.gathered_bias_attention(qu, qv, kv, rk, i, P) for i in (at, index)]
    g = torch.randn_like(runs[0])
    got, wanted = (torch.autograd.grad(o, (qu, qv, kv, rk), g) for o in runs)
    torch.testing.assert_close(runs[0], runs[1])  # the plain index: checked above
    for a, b in zip(got, wanted, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cache", [1 << 19, 2 * Q * W])
def test_an_index_of_one_row_reads_as_repeated(monkeypatch, cache: int) -> None:
    """An index with fewer rows than the batch repeats (rows alike): the numbers of the index
    repeated in full, whole or a slice of the batch at a time."""
    monkeypatch.setattr(ba, "CACHE_NUMBERS", cache)
    (qu, qv, kv, rk), index = inputs(4)
    one = index[:1]
    runs = [ba.gathered_bias_attention(qu, qv, kv, rk, i, P) for i in (one, one.repeat(B, 1, 1, 1))]
    g = torch.randn_like(runs[0])
    got, wanted = (torch.autograd.grad(o, (qu, qv, kv, rk), g) for o in runs)
    assert torch.equal(runs[0], runs[1])
    for a, b in zip(got, wanted, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cache", [1 << 19, 2 * Q * W])
def test_keys_at_distinct_distances_write_their_gradient(monkeypatch, cache: int) -> None:
    """Where no two keys a query sees share a distance (``distinct``), the position scores'
    gradient is written, not added: the numbers of adding it."""
    monkeypatch.setattr(ba, "CACHE_NUMBERS", cache)
    (qu, qv, kv, rk), _ = inputs(5)
    g = torch.Generator().manual_seed(6)
    order = torch.rand(B, 1, Q, P, generator=g).argsort(-1)  # distinct distances per query
    index = torch.full((B, 1, Q, W), P)  # keys past the P distances: hidden
    index[..., :P] = order
    index[..., 1:P] = index[..., 1:P].masked_fill(torch.rand(B, 1, Q, P - 1, generator=g) < 0.3, P)
    at = ba.gather_index(index, P, P + 1, distinct=True)
    runs = [ba.gathered_bias_attention(qu, qv, kv, rk, i, P) for i in (at, index)]
    grad = torch.randn_like(runs[0])
    got, wanted = (torch.autograd.grad(o, (qu, qv, kv, rk), grad) for o in runs)
    assert torch.equal(runs[0], runs[1])
    for a, b in zip(got, wanted, strict=True):
        assert torch.equal(a, b)
