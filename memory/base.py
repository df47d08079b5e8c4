"""The memory-core contract every core in mnemo implements.

A memory core is a sequence model with explicit state. The PPO actor-critic and the byte-level
language model are heads on the same core classes, so a core must behave identically whether it
is called one step at a time (acting, sampling) or over a whole segment (training).

Conventions:
- Batch first everywhere, tensors and state alike: a minibatch of state is ``index_state(s, ids)``.
- ``episode_start[b, t]`` is True when ``x[b, t]`` begins a new episode (or document): nothing
  before it may influence ``y[b, t:]``, neither values nor gradients.
- State is a pytree (a tensor, or tuples/lists/dicts of them) passed in and returned explicitly.
  No core keeps hidden state inside the module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from mnemo.memory.options import CoreOptions

State = Any
"""A pytree of tensors whose leaves all have the batch as their first dimension."""


class CoreOutput(NamedTuple):
    """What ``MemoryCore.forward`` returns."""

    y: Tensor
    """(B, T, d_model) outputs."""
    state: State
    """Same structure, shapes, dtypes and devices as the state passed in."""
    aux_loss: Tensor
    """Scalar; zero unless the core trains something on the side."""


def tree_map(fn: Callable[[Tensor], Tensor], state: State) -> State:
    """Apply ``fn`` to every tensor leaf of a state, keeping its structure."""
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # NamedTuple
        return type(state)(*(tree_map(fn, s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(tree_map(fn, s) for s in state)
    if isinstance(state, dict):
        return {k: tree_map(fn, v) for k, v in state.items()}
    raise TypeError(f"state leaves must be tensors, got {type(state).__name__}")


def tree_map2(fn: Callable[[Tensor, Tensor], Tensor], a: State, b: State) -> State:
    """Apply ``fn`` leafwise to two states of the same structure."""
    if isinstance(a, Tensor):
        return fn(a, b)
    if isinstance(a, tuple) and hasattr(a, "_fields"):
        return type(a)(*(tree_map2(fn, x, y) for x, y in zip(a, b, strict=True)))
    if isinstance(a, (tuple, list)):
        return type(a)(tree_map2(fn, x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return {k: tree_map2(fn, a[k], b[k]) for k in a}
    raise TypeError(f"state leaves must be tensors, got {type(a).__name__}")


def tree_leaves(state: State) -> list[Tensor]:
    """All tensor leaves of a state, in a fixed order."""
    out: list[Tensor] = []
    tree_map(lambda t: out.append(t) or t, state)
    return out


def index_state(state: State, index: Tensor | slice | int) -> State:
    """Select batch rows of a state: ``state[index]`` on every leaf."""
    return tree_map(lambda t: t[index], state)


def cat_states(states: list[State]) -> State:
    """Concatenate states along the batch dimension."""
    first = states[0]
    if isinstance(first, Tensor):
        return torch.cat(states, dim=0)
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(cat_states(list(parts)) for parts in zip(*states, strict=True)))
    if isinstance(first, (tuple, list)):
        return type(first)(cat_states(list(parts)) for parts in zip(*states, strict=True))
    if isinstance(first, dict):
        return {k: cat_states([s[k] for s in states]) for k in first}
    raise TypeError(f"state leaves must be tensors, got {type(first).__name__}")


def where_rows(mask: Tensor, a: State, b: State) -> State:
    """Row-wise select: rows where ``mask`` (B,) is True come from ``a``, the others from ``b``."""

    def pick(x: Tensor, y: Tensor) -> Tensor:
        m = mask.view(-1, *([1] * (x.dim() - 1)))
        return torch.where(m, x, y)

    return tree_map2(pick, a, b)


class MemoryCore(nn.Module):
    """Base class of every memory core.

    Subclasses set ``options_type`` (their options dataclass, memory/options.py), take
    ``(d_model, options)`` in their constructor, set ``self.d_model`` and implement
    ``initial_state`` and ``forward``. Build them with ``make_core``, which checks the options.
    """

    d_model: int
    options_type: ClassVar[type[CoreOptions]] = CoreOptions
    """The options this core takes besides ``d_model`` (none by default)."""

    def initial_state(self, batch_size: int, device: torch.device | str) -> State:
        """The state of a fresh episode for ``batch_size`` rows."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: State, episode_start: Tensor) -> CoreOutput:
        """Run the core over a segment.

        Args:
            x: (B, T, d_model) inputs.
            state: the state after the previous segment (or ``initial_state``).
            episode_start: (B, T) bool; True at t means x[:, t] begins a new episode.
        """
        raise NotImplementedError

    def detach(self, state: State) -> State:
        """Cut the autograd graph through a state (truncated BPTT)."""
        return tree_map(lambda t: t.detach(), state)

    def inspect(self, x: Tensor, state: State, episode_start: Tensor) -> dict[str, Tensor]:
        """Optional: what the memory did over a segment, for people to look at (not for training).

        Called on one recorded episode (B = 1) after it was played, with the same inputs
        ``forward`` received, to draw memory at work in TensorBoard (agents/rl/video.py). Keys a
        core may return, all for batch row 0 and detached:

        - ``"attention"``: (T, K) attention weights of the last layer averaged over heads; row t
          is query step t, the K keys are the memory slots followed by the segment's steps.
        - ``"retrieval_loss"``: (T,) a neural memory's loss ||M(k_t) - v_t||^2 at each step.

        The default returns ``{}``: nothing to show (recurrent cores have no such trace).
        """
        return {}

    def zero_aux(self, x: Tensor) -> Tensor:
        return x.new_zeros(())
