"""LSTM and GRU memory cores.

Hochreiter & Schmidhuber 1997 (LSTM); Cho et al. 2014 (GRU). Both run torch.nn's fused
recurrent layers. Resets are exact: at a time step where some rows begin an episode, the
sequence is split, those rows get a fresh state (``torch.where``, so no gradient flows to what
came before) and the fused layer runs on to the next split; a one-layer LSTM instead runs its
episode pieces in a few length buckets (``memory/episode_buckets.py``). With no reset inside
the batch (acting, one step at a time) the whole segment is one fused call.

Departures: none in the recurrences. The LSTM's forget-gate bias starts at ``forget_bias``
(default 1.0, Jozefowicz et al. 2015) rather than PyTorch's 0: with 0 the LSTM learned a
64-step recall far slower than the GRU on our recall task. For memories of hundreds of steps,
``chrono=T`` sets the gate biases by chrono initialisation (Tallec & Ollivier 2018, "Can
recurrent neural networks warp time?"); without it no recurrent core learned Recall-D256.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mnemo.memory.base import CoreOutput, MemoryCore, State
from mnemo.memory.episode_buckets import bucketed_run
from mnemo.memory.options import MAX_LAYERS, CoreOptions, option
from mnemo.memory.registry import register_core


def reset_times(episode_start: Tensor) -> list[int]:
    """Time indices (> 0) at which at least one row begins an episode, sorted."""
    if episode_start.shape[1] <= 1:
        return []
    return (torch.nonzero(episode_start[:, 1:].any(0)).flatten() + 1).tolist()


@dataclass(frozen=True)
class RecurrentOptions(CoreOptions):
    """Options of the ``lstm`` and ``gru`` cores."""

    cell: str = option("lstm", choices=("lstm", "gru"))
    """The recurrent cell (set by the registered name)."""
    num_layers: int = option(1, at_least=1, at_most=MAX_LAYERS)
    """Stacked recurrent layers."""
    forget_bias: float = 1.0
    """Initial forget-gate bias of the LSTM (ignored by the GRU and when ``chrono`` is set)."""
    chrono: int = option(0, at_least=0)
    """Chrono initialisation (Tallec & Ollivier 2018) for memories of up to ``chrono`` steps
    (0 = off): the LSTM forget-gate bias (the GRU's update-gate bias) is drawn from
    log U(1, chrono - 1) and the LSTM input-gate bias is its negative, so the gates start out
    keeping what they hold over 1..chrono steps. Set it near the delay to be remembered: with
    the default init no core learned Recall-D256; with ``chrono=256`` the LSTM did."""

    def inert(self) -> dict[str, str]:
        if self.cell == "gru":
            return {"forget_bias": "the GRU has no forget gate (chrono sets its update gate)"}
        if self.chrono:
            return {"forget_bias": "chrono sets the forget-gate biases"}
        return {}

    def check_width(self, d_model: int) -> str | None:
        if 0 < self.chrono < 3:
            return (
                f"chrono must be 0 (off) or >= 3 (the longest memory in steps), got {self.chrono}"
            )
        return None


@register_core("gru", cell="gru")
@register_core("lstm", cell="lstm")
class RecurrentCore(MemoryCore):
    """A stack of LSTM or GRU layers of width ``d_model``.

    State: LSTM ``(h, c)``, GRU ``h``; each (B, num_layers, d_model).
    """

    bucketed = True
    """One-layer LSTMs run rows with episode starts inside as bucketed pieces
    (memory/episode_buckets.py): 2.2x faster than one fused call per reset time at ~100 reset
    times per minibatch. The GRU keeps the split: torch's CPU GRU is no faster bucketed."""

    options_type = RecurrentOptions

    def __init__(self, d_model: int, opts: RecurrentOptions) -> None:
        super().__init__()
        cell, num_layers = opts.cell, opts.num_layers
        self.d_model = d_model
        self.cell = cell
        self.num_layers = num_layers
        rnn_cls = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(d_model, d_model, num_layers=num_layers, batch_first=True)
        if cell == "lstm":
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_ih"):
                    with torch.no_grad():
                        p[d_model : 2 * d_model].fill_(opts.forget_bias)
                elif name.startswith("bias_hh"):
                    with torch.no_grad():
                        p[d_model : 2 * d_model].zero_()
        if opts.chrono:
            self._chrono_init(opts.chrono)

    @torch.no_grad()
    def _chrono_init(self, longest: int) -> None:
        """Gate biases for memories of 1..``longest`` steps (Tallec & Ollivier 2018, eq. 10).

        A forget gate sigma(b) keeps a fraction 1 - 1/u per step for b = log(u), so u drawn in
        [1, longest - 1] spreads the units' time scales up to ``longest``. Only the input-side
        biases carry it; the hidden-side ones start at 0 (torch adds the two).
        """
        d = self.d_model
        for name, p in self.rnn.named_parameters():
            if not name.startswith("bias"):
                continue
            p.zero_()
            if name.startswith("bias_ih"):
                b = torch.empty(d).uniform_(1, longest - 1).log()
                p[d : 2 * d] = b  # LSTM: forget gate (i, f, g, o); GRU: update gate (r, z, n)
                if self.cell == "lstm":
                    p[:d] = -b  # input gate: write little while the forget gate keeps much

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        h = torch.zeros(batch_size, self.num_layers, self.d_model, device=device)
        return (h, h.clone()) if self.cell == "lstm" else h

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> CoreOutput:
        # nn.LSTM/GRU want the state layer-first, ours is batch-first: transpose once, and keep
        # the per-piece work below to a where and a fused call (it runs ~100 times per
        # minibatch on envs with short episodes).
        lstm = self.cell == "lstm"
        hidden = tuple(s.transpose(0, 1).contiguous() for s in (state if lstm else (state,)))
        times = reset_times(episode_start)
        if times and self.bucketed and lstm and self.num_layers == 1:
            y, h, c = bucketed_run(self.rnn, x, *hidden, episode_start)
            return CoreOutput(y, (h.transpose(0, 1), c.transpose(0, 1)), self.zero_aux(x))
        starts = episode_start.t().unsqueeze(-1)  # (T, B, 1): broadcasts over (layers, B, H)
        zero = x.new_zeros(())
        ys = []
        # One tensor_split, not a slice per piece: a slice's backward zero-fills a tensor the
        # size of x for every piece, which cost more than the recurrence itself.
        for a, piece in zip([0, *times], x.tensor_split(times, dim=1), strict=True):
            hidden = tuple(torch.where(starts[a], zero, s) for s in hidden)
            y, hidden = self.rnn(piece, hidden if lstm else hidden[0])
            hidden = hidden if lstm else (hidden,)
            ys.append(y)
        y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)
        out = tuple(s.transpose(0, 1) for s in hidden)
        return CoreOutput(y, out if lstm else out[0], self.zero_aux(x))
