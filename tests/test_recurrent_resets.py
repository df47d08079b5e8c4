"""The LSTM's bucketed episode pieces equal the split-at-every-reset path: outputs, final
states and gradients (memory/episode_buckets.py)."""

from __future__ import annotations

import pytest
import torch

from mnemo import memory


@pytest.mark.parametrize("p_start", [0.02, 0.2, 0.6])
@pytest.mark.parametrize("first_start", [False, True])
def test_bucketed_equals_split(p_start: float, first_start: bool) -> None:
    torch.manual_seed(0)
    core = memory.make_core("lstm", 8).double()
    b, t = 7, 37
    x = torch.randn(b, t, 8, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(b, 1, 8, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(b, 1, 8, dtype=torch.float64, requires_grad=True)
    starts = torch.rand(b, t) < p_start
    starts[:, 0] = first_start
    starts[0, 1:] = False  # one row with a single piece from t=0 to the end
    results = []
    for bucketed in (True, False):
        core.bucketed = bucketed
        out = core(x, (h0, c0), starts)
        h, c = out.state
        loss = (out.y * torch.linspace(-1, 1, 8)).sum() + (h**2).sum() + (c * 3).sum()
        grads = torch.autograd.grad(loss, [x, h0, c0, *core.parameters()])
        results.append((out.y, h, c, *grads))
    for a, s in zip(*results, strict=True):
        torch.testing.assert_close(a, s, rtol=1e-9, atol=1e-9)
