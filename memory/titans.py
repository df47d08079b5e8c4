"""Titans cores: the neural long-term memory alone (LMM) and as context, gate or layer.

Behrouz, Zhong & Mirrokni 2025, "Titans: Learning to Memorize at Test Time" (arXiv 2501.00663).
The memory itself is ``memory.neural_memory.NeuralMemory``. Each layer is a pre-norm residual
block followed by a SiLU feed-forward block; ``n_layers`` of them are stacked.

- ``titans_lmm``: y = M*(q) with the memory learning from the same tokens (section 4.3, "LMM").
- ``titans_mac`` (memory as context, 4.1): the sequence is cut into segments of ``chunk_size``
  tokens; for segment S, h = M*_{t-1}(q_S); attention over [persistent | h | S] (causal inside
  the segment); M is updated with the attention output y; o = y (x) M*(y), here
  norm(y) * sigmoid(M*(y)). h = M*_{t-1}(q_S) reads the memory as of the segment start, as
  in the paper.
- ``titans_mag`` (memory as gate, 4.2): sliding-window attention over [persistent | x] gated
  with the memory branch: o = norm(y) * sigmoid(norm(M*(x))).
- ``titans_mal`` (memory as layer, 4.3): memory layer, then sliding-window attention over
  [persistent | memory output].

Chunks and episodes. The memory updates once per completed chunk of ``chunk_size`` tokens,
counted per row from its episode start: a reset at any position starts a new chunk there, so
each row has its own chunk grid. A call lays every row's tokens out on a padded "virtual" grid
(tokens still waiting from the previous call first, an episode start jumping to the next chunk
boundary), runs the chunks in order for all rows at once, and keeps the tokens of each row's
unfinished chunk (this layer's inputs) in the state. The next call recomputes them, so one call
over T equals T calls of one step. Rows with an episode start get M_0, zero momentum, zero
convolution context and an empty KV cache (``torch.where``: no gradient crosses a reset).

Departures from the paper:
- Causality inside a segment: with ``intra_chunk_reads`` (the default) token t reads the
  memory updated by its chunk's tokens up to t, gradients taken at the chunk start
  (``NeuralMemory.read_within``); MAC's final gate then reads M_t(y_t) learned from y up to t
  (the paper's M*_t(y_t) after updating with the whole segment would let token j see tokens
  after j, which an acting agent cannot do), and MAC's retrieval reads the chunk start (the
  chunk's writes depend on it). Without it every read uses the chunk-start weights.
- MAC: the retrieved token h_i is visible to segment tokens j >= i only (the paper's prefix
  [p | h | S] would show h_i, a function of x_i, to earlier tokens); the segment length equals
  the memory's chunk size.
- Positions: rotary (RoFormer) on the attention's queries and keys: MAC numbers the retrieved
  tokens 0..c-1 and the segment c..2c-1 (the paper's layout [p | h | S]); MAG/MAL use the
  distance inside the sliding window. Persistent tokens have no position (their scores use the
  unrotated query). The paper does not say; titans-pytorch uses rotary as well. Without
  positions, swapping two tokens inside the window left the outputs unchanged (6e-8), so
  MAC/MAG/MAL outputs differ from before this change.
- ``retrieval_grad=false`` (configs/lm_titans_mac.yaml) detaches MAC's retrieved tokens where
  the attention takes them: through them chunk i's memory reached chunk i + 1's (h -> y -> the
  write's k, v), a path the bounded write (memory/neural_memory.py) cannot scale; the gradient
  at the first tokens of 4096 reached 1.5e13 at chunk 16, max_lr 0.125 (8e-5 without it). The
  forward pass is the same; the memory then learns through the gate's reads and its writes.
  The default keeps the paper's gradient: over one RL episode (258 steps, 8 chunks) it stays
  finite, and it is how the memory learned Recall-D256 (configs/recall_d256_titans_mac.yaml).
- ``ablate_memory`` (the attention-only control) removes MAC's retrieved tokens from the
  attention: it attends over persistent tokens and the segment only.
- Persistent tokens are attention context only; they are not written into the memory (a
  learned M_0 plays that role).
- Pre-norm residual blocks with a feed-forward block, as usual for Transformers; the memory
  branch of LMM/MAL ends with RMSNorm, a SiLU gate from the input and an output projection
  (section 4.4, "gating").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mnemo.memory.base import CoreOutput, MemoryCore, State, tree_map2
from mnemo.memory.registry import register_core
from mnemo.memory.titans_layer import TitansLayer
from mnemo.memory.titans_layout import chunk_layout
from mnemo.memory.titans_options import TitansOptions


@register_core("titans_mal", variant="mal")
@register_core("titans_mag", variant="mag")
@register_core("titans_mac", variant="mac")
@register_core("titans_lmm", variant="lmm")
class TitansCore(MemoryCore):
    """A stack of Titans layers (see the module docstring).

    Args:
        d_model: width.
        opts: ``TitansOptions`` (checked by ``make_core``).

    State: ``{"count": (B,) long, "layers": tuple of per-layer dicts}``; per layer the fast
    weights "W" and momentum "S" (tuples of (B, H, d_in, d_out)), the unfinished chunk's
    inputs "buf" (B, chunk_size, D), convolution tails (B, conv_kernel - 1, C) and, for MAG/MAL,
    the attention's KV cache "swa".
    """

    options_type = TitansOptions

    def __init__(self, d_model: int, opts: TitansOptions) -> None:
        super().__init__()
        self.d_model, self.variant, self.chunk_size = d_model, opts.variant, opts.chunk_size
        self.layers = nn.ModuleList(TitansLayer(d_model, opts) for _ in range(opts.n_layers))

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        return {
            "count": torch.zeros(batch_size, dtype=torch.long, device=device),
            "layers": tuple(layer.initial_state(batch_size, device) for layer in self.layers),
        }

    def forward(
        self, x: Tensor, state: State, episode_start: Tensor, trace: list[Tensor] | None = None
    ) -> CoreOutput:
        """Run the core over a segment (``MemoryCore.forward``).

        Args:
            trace: if given, the last layer's memory appends the retrieval loss (B, chunk) of
                every chunk it learns from, in order (what ``inspect`` shows).
        """
        if x.shape[1] == 0:
            return CoreOutput(x, state, self.zero_aux(x))
        lay = chunk_layout(episode_start, state["count"], self.chunk_size)
        new_layers = []
        last = len(self.layers) - 1
        for i, (layer, st) in enumerate(zip(self.layers, state["layers"])):
            x, st = layer(x, st, lay, episode_start, trace if i == last else None)
            new_layers.append(st)
        new_state = {"count": lay.tail_count, "layers": tuple(new_layers)}
        # Under autocast some leaves come back in bf16; the state keeps its own dtypes.
        new_state = tree_map2(lambda new, old: new.to(old.dtype), new_state, state)
        return CoreOutput(x, new_state, self.zero_aux(x))

    @torch.no_grad()
    def inspect(self, x: Tensor, state: State, episode_start: Tensor) -> dict[str, Tensor]:
        """The last layer's retrieval loss ||M(k_t) - v_t||^2 (T,) for row 0 (MemoryCore.inspect).

        Taken at the weights each token's gradient is taken at (its chunk start), i.e. the loss
        the memory learns from: how surprising step t is to it. NaN for the tokens of the
        unfinished last chunk, which the memory has not learned from yet.
        """
        c = self.chunk_size
        lay = chunk_layout(episode_start, state["count"], c)
        losses: list[Tensor] = []  # (B, c) per chunk the memory learned from
        self(x, state, episode_start, trace=losses)
        slots = torch.full((lay.real.shape[1],), float("nan"), device=x.device)
        written = torch.nonzero(lay.complete.any(0)).flatten().tolist()
        for i, loss in zip(written, losses, strict=True):
            if lay.complete[0, i]:
                slots[i * c : (i + 1) * c] = loss[0]
        return {"retrieval_loss": slots[lay.vpos[0]]}
