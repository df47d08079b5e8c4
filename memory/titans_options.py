"""Options of the Titans cores (memory/titans.py), checked once by the registry.

Options a variant would ignore are refused in one line (``TitansOptions.__post_init__``), so a
config never sets something that silently does nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mnemo.memory.options import MAX_LAYERS, CoreConfigError, CoreOptions, option

VARIANTS = ("lmm", "mac", "mag", "mal")
MAX_LR_SQRT_CHUNK = 0.5
"""Largest max_lr * sqrt(chunk_size): above it the exact gradient through 4096 tokens grew to
1e7 or more at every chunk size measured (the table in memory/neural_memory.py), so the bounded
backward would discard most of it. Below it the exact gradient can still grow (chunk 4 at 0.25:
5e9, chunk 32 at 0.1: 2e7); the bounded write keeps the backward pass finite there."""


@dataclass(frozen=True)
class TitansOptions(CoreOptions):
    """Options of the Titans cores (each registered name presets ``variant``)."""

    variant: str = option("mac", choices=VARIANTS)
    """"lmm", "mac", "mag" or "mal" (see the module docstring)."""
    n_layers: int = option(1, at_least=1, at_most=MAX_LAYERS)
    """Stacked layers, each with its own memory (and attention)."""
    n_heads: int = option(2, at_least=1)
    """Heads of the memory and of the attention (must divide ``d_model``)."""
    chunk_size: int = option(8, at_least=1)
    """Tokens per memory update (and MAC's segment length)."""
    window: int = option(8, at_least=1)
    """Tokens a sliding-window query sees, itself included (MAG, MAL only: MAC attends within
    its segment of ``chunk_size`` tokens, LMM has no attention)."""
    n_persistent: int = option(4, at_least=0)
    """Learned persistent-memory tokens (attention context; not LMM)."""
    mem_depth: int = option(2, at_least=1, at_most=MAX_LAYERS)
    """Layers of the memory MLP."""
    mem_expand: int = option(2, at_least=1)
    """Hidden width of the memory MLP per head width (``mem_depth`` >= 2 only)."""
    conv_kernel: int = option(4, at_least=1)
    """Causal depthwise convolution width after the q/k/v projections (1: none)."""
    max_lr: float = option(0.1, at_least=0.0)
    """Upper bound of the inner learning rate theta; max_lr * sqrt(chunk_size) above
    ``MAX_LR_SQRT_CHUNK`` is refused (the exact backward pass diverges there;
    memory/neural_memory.py)."""
    max_grad_norm: float = option(1.0, at_least=0.0)
    """Per-token clip of the inner gradient's norm."""
    ffn_mult: int = option(2, at_least=1)
    """Feed-forward hidden width per ``d_model``."""
    intra_chunk_reads: bool = True
    """Token t reads the memory updated by its chunk's tokens up to t (gradients at the chunk
    start, the dual form of test-time training); false: every token reads the chunk-start
    memory. MAC's retrieval always reads the chunk start (the chunk's writes depend on it)."""
    bounded_backward: bool = True
    """Scale the gradient through each memory write to at most the gradient at its output, so
    it cannot grow over thousands of tokens (memory/neural_memory.py). It also shrinks it where
    the exact one grows mildly: with it, MAC on Recall-D256 (8 chunks, seed 0) was still at
    chance after 3-5M env steps, where the exact gradient had learned by 1.5-3.0M (seeds 0-2);
    the RL configs set false (False: the exact gradient)."""
    backward_gain_limit: float = option(1.0, at_least=1.0)
    """With ``bounded_backward``: the most the gradient carried by the memory may grow through
    consecutive writes (a budget their backward pass shares; memory/neural_memory.py). 1: no
    write may grow it. On the Recall-D256 MAC core (8 writes, loss on the last step) 1 leaves
    the cue's write 0.03-0.06x of its exact gradient and 1000 the exact one, while on the LM
    (titans_mac, benchmarks/lm_peers.py, 100 steps) 1e4 gave 3.21/3.35 bits per byte against
    3.09/3.13 at 1 (seeds 0/1): benchmarks/titans_bound_probe.py."""
    retrieval_grad: bool = True
    """MAC: the task loss reaches the memory (its writes and queries) through the retrieved
    tokens, as in the paper. False detaches them: over 4096 LM tokens that path's gradient
    reached 1.5e13 (memory/titans.py); over one 258-step RL episode it is what trained the
    memory on Recall-D256."""
    ablate_memory: bool = False
    """Reads of the memory return zeros: the attention-only control of learning experiments
    (MAG's gate becomes a constant 1/2, MAC sees no retrieved tokens, MAL's memory layer adds
    nothing). The memory's own options (``intra_chunk_reads``, ``bounded_backward``,
    ``backward_gain_limit``, ``retrieval_grad``) then do nothing, and are accepted so that any
    config's control is that config plus ``core.ablate_memory=true``."""

    def inert(self) -> dict[str, str]:
        v = self.variant
        no_attention = v == "lmm" and "titans_lmm has no attention"
        ignored = {
            "window": no_attention
            or (v == "mac" and "titans_mac attends within its segment of chunk_size tokens"),
            "n_persistent": no_attention,
            "mem_expand": self.mem_depth == 1 and "a memory of mem_depth=1 has no hidden layer",
            "backward_gain_limit": not self.bounded_backward
            and "bounded_backward=false: the gradient is exact",
            "retrieval_grad": v != "mac" and f"titans_{v} retrieves no tokens",
        }
        return {k: why for k, why in ignored.items() if why}

    def __post_init__(self) -> None:
        if self.max_lr * math.sqrt(self.chunk_size) > MAX_LR_SQRT_CHUNK:
            raise CoreConfigError(
                f"core.max_lr={self.max_lr:g} with chunk_size={self.chunk_size}: backprop through "
                f"the memory diverges on long sequences; use max_lr <= "
                f"{MAX_LR_SQRT_CHUNK / math.sqrt(self.chunk_size):.3g} (max_lr * sqrt(chunk_size)"
                f" <= {MAX_LR_SQRT_CHUNK})"
            )

    def check_width(self, d_model: int) -> str | None:
        if d_model % self.n_heads:
            return f"n_heads ({self.n_heads}) must divide d_model ({d_model})"
        return None
