"""A one-layer LSTM or GRU over rows that hold several episodes, in a few fused calls.

Splitting a (B, T) batch at every time step where some row starts an episode costs one fused
call per such step, ~100 per PPO minibatch when episodes are short, and each call has a fixed
cost (~0.3 ms forward + backward on a CPU core) that dwarfs its work. Here every row is cut into
its episode pieces instead, the pieces are grouped by length into power-of-two buckets, and
each bucket runs as one fused call from the pieces' own start states (the row's carried state
for a piece that continues it, zeros after an episode start, so no gradient crosses a start).
Padding sits after each piece, so it never reaches the piece's outputs: these are exact.

The padded calls end past most pieces, so their final states are not the rows' final states.
A one-layer core's final ``h`` is its last output. An LSTM's final ``c`` is rebuilt from the
last pieces' gates, which the exact outputs give for every step at once, by summing the
linear recurrence c_t = f_t c_{t-1} + i_t g_t in log space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bucketed_run(
    rnn: nn.LSTM | nn.GRU, x: Tensor, h0: Tensor, c0: Tensor | None, episode_start: Tensor
) -> tuple[Tensor, Tensor, Tensor | None]:
    """x (B, T, D); h0, c0 (1, B, H) carried states (c0 None for a GRU); episode_start (B, T).

    Returns y (B, T, H) and the final h (and c), each (1, B, H).
    """
    b, t, d = x.shape
    cut = episode_start.clone()
    cut[:, 0] = True
    flat = cut.flatten()
    piece = torch.cumsum(flat.long(), 0) - 1  # (B*T,) piece of every step
    first = torch.nonzero(flat).flatten()  # (M,) flat index where each piece begins
    lengths = torch.bincount(piece, minlength=first.numel())
    row = torch.div(first, t, rounding_mode="floor")
    carries = ((first % t) == 0) & ~episode_start[:, 0][row]
    # Bucket k holds the pieces of length in (2^(k-1), 2^k]; one host sync for the buckets.
    bucket = torch.ceil(torch.log2(lengths.double())).long()
    x_flat = x.reshape(b * t, d)
    zero = x.new_zeros(())
    ys, places = [], []
    for k in torch.unique(bucket).tolist():
        sel = torch.nonzero(bucket == k).flatten()
        width = min(2**k, t)
        steps = torch.arange(width, device=x.device)
        valid = steps < lengths[sel, None]  # (m, width)
        src = torch.where(valid, first[sel, None] + steps, 0)
        keep = carries[sel].view(1, -1, 1)
        start = tuple(torch.where(keep, s[:, row[sel]], zero) for s in (h0, c0) if s is not None)
        y, _ = rnn(x_flat[src], start if c0 is not None else start[0])
        ys.append(y[valid])
        places.append(src[valid])
    place = torch.cat(places)
    order = torch.empty_like(place).scatter_(0, place, torch.arange(place.numel(), device=x.device))
    y = torch.cat(ys)[order].view(b, t, -1)
    h_end = y[:, -1].unsqueeze(0)
    if c0 is None:
        return y, h_end, None
    last = piece.view(b, t)[:, -1]
    begin = first[last] - row[last] * t  # (B,) where each row's last piece starts
    c_end = _final_cell(rnn, x, y, h0[0], c0[0], begin, carries[last])
    return y, h_end, c_end.unsqueeze(0)


def _final_cell(
    rnn: nn.LSTM, x: Tensor, y: Tensor, h0: Tensor, c0: Tensor, begin: Tensor, carries: Tensor
) -> Tensor:
    """The LSTM cell state after each row's last piece, (B, H), from the exact outputs y."""
    t = x.shape[1]
    t0 = int(begin.min())
    steps = torch.arange(t0, t, device=x.device)
    at_begin = (steps == begin[:, None]).unsqueeze(-1)  # (B, W, 1)
    active = (steps >= begin[:, None]).unsqueeze(-1)
    zero = y.new_zeros(())
    h_init = torch.where(carries[:, None], h0, zero)
    c_init = torch.where(carries[:, None], c0, zero)
    prev = y[:, t0 - 1 : t - 1] if t0 > 0 else torch.cat([h_init[:, None], y[:, : t - 1]], 1)
    h_prev = torch.where(at_begin, h_init[:, None], prev)
    gates = F.linear(x[:, t0:], rnn.weight_ih_l0, rnn.bias_ih_l0) + F.linear(
        h_prev, rnn.weight_hh_l0, rnn.bias_hh_l0
    )
    i, f, g, _ = gates.chunk(4, dim=-1)
    log_f = torch.where(active, F.logsigmoid(f), zero)  # steps before the piece: factor 1
    # Sum over later steps of log f, from the end: exact for the last steps, no cancellation.
    later = torch.flip(torch.cumsum(torch.flip(log_f, [1]), 1), [1]) - log_f
    u = torch.where(active, torch.sigmoid(i) * torch.tanh(g), zero)
    return (torch.exp(later) * u).sum(1) + torch.exp(log_f.sum(1)) * c_init
