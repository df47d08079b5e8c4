"""The models benchmarks/lm_peers.py trains, behind one step: mnemo's cores and the two ports.

``Runner.loss(x, y, state, first)`` is the same call for each; the builders take a width and
return a fresh runner (lm_peers.py matches widths by parameter count). The ports' defects
that are worked around here are in lm_peers.py's docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnemo import memory
from mnemo.agents.config_loader import parse_flag_pair
from mnemo.agents.errors import UserError
from mnemo.agents.lm.config import load_lm_config
from mnemo.agents.lm.model import build_model

ROOT = Path(__file__).resolve().parents[1]
MNEMO = ("titans_mac", "compressive", "gtrxl", "lstm")
MNEMO_MORE = ("titans_mag", "titans_mal", "titans_lmm", "trxl", "gru")
"""Other mnemo cores ``--models`` takes (configs/lm_<core>.yaml), not run by default."""
PEERS = ("titans-pytorch", "compressive-transformer-pytorch")


class Runner:
    """One model behind a common step: ``loss(x, y, state) -> (nats, aux, state)``."""

    def __init__(self, model: nn.Module, width: int, carries: bool) -> None:
        self.model, self.width, self.carries = model, width, carries

    def fresh(self, batch: int) -> Any:
        return None

    def before_step(self) -> None:
        """Hook for a peer's defect (see the module docstring)."""

    def logits(self, x: Tensor, state: Any, first: bool) -> tuple[Tensor, Tensor, Any]:
        raise NotImplementedError

    def loss(self, x: Tensor, y: Tensor, state: Any, first: bool) -> tuple[Tensor, Tensor, Any]:
        logits, aux, state = self.logits(x, state, first)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()), aux, state


Builder = Callable[[int], Runner]


class MnemoRunner(Runner):
    def fresh(self, batch: int) -> Any:
        return self.model.initial_state(batch, "cpu")

    def logits(self, x: Tensor, state: Any, first: bool) -> tuple[Tensor, Tensor, Any]:
        starts = torch.zeros_like(x, dtype=torch.bool)
        starts[:, 0] = first
        out = self.model(x, state, starts)
        return out.logits, out.aux_loss, self.model.detach(out.state)


class TitansPortRunner(Runner):
    def logits(self, x: Tensor, state: Any, first: bool) -> tuple[Tensor, Tensor, Any]:
        return self.model(x), torch.zeros(()), None


class CompressivePortRunner(Runner):
    def before_step(self) -> None:
        for m in self.model.modules():
            if hasattr(m, "to_kv"):
                m.to_kv.weight.requires_grad_(True)

    def logits(self, x: Tensor, state: Any, first: bool) -> tuple[Tensor, Tensor, Any]:
        logits, mems, aux = self.model(x, memories=None if first else state)
        return logits, aux.sum(), mems


def mnemo_runner(core: str, extra: Sequence[str] = ()) -> Builder:
    """configs/lm_<core>.yaml's core options, plus the ``core.key=value`` items of ``extra``
    whose key this core has."""
    valid = memory.core_options(core)
    mine = [e for e in extra if e.split("=", 1)[0].removeprefix("core.") in valid]
    options = load_lm_config(str(ROOT / "configs" / f"lm_{core}.yaml"), mine).core.options

    def build(width: int) -> Runner:
        return MnemoRunner(build_model(core, width, options), width, carries=True)

    return build


def titans_port(
    segment: int, memory: bool = True, options: dict[str, Any] | None = None
) -> Callable[[int], Runner]:
    """``memory=False``: its attention-only control (``neural_memory_layers=()``, its own
    option), as ``--set core.ablate_memory=true`` is mnemo's. ``options``: its constructor's
    keywords over the ones below (``--peer-set``), to take its parts away one at a time."""
    import inspect

    from titans_pytorch import MemoryAsContextTransformer, MemoryMLP

    valid = set(inspect.signature(MemoryAsContextTransformer).parameters)
    unknown = sorted(set(options or {}) - valid)
    if unknown:
        raise UserError(
            f"--peer-set {unknown[0]}: not a MemoryAsContextTransformer keyword; valid: "
            + ", ".join(sorted(valid))
        )

    def build(width: int) -> Runner:
        # As configs/lm_titans_mac.yaml: 2 layers, 4 heads, chunks of 16, a 2-layer memory of
        # expansion 2, 4 persistent tokens, feed-forward x2; its own defaults otherwise.
        heads = 4
        kwargs: dict[str, Any] = dict(
            num_tokens=256,
            dim=width,
            depth=2,
            segment_len=16,
            num_persist_mem_tokens=4,
            num_longterm_mem_tokens=4,
            heads=heads,
            dim_head=width // heads,
            ff_mult=2,
            neural_memory_model=MemoryMLP(dim=width // heads, depth=2, expansion_factor=2.0),
            neural_memory_kwargs={"heads": heads, "dim_head": width // heads},
            neural_memory_layers=None if memory else (),
        )
        model = MemoryAsContextTransformer(**{**kwargs, **(options or {})})
        _unshare_parameters(model)
        return TitansPortRunner(model, width, carries=False)

    return build


def compressive_port(segment: int) -> Callable[[int], Runner]:
    from compressive_transformer_pytorch import CompressiveTransformer

    def build(width: int) -> Runner:
        # 2 layers, 4 heads, compression rate 4 as configs/lm_compressive.yaml; the port needs
        # mem_len >= the segment, so its memory is the segment and cmem a quarter of it.
        model = CompressiveTransformer(
            num_tokens=256,
            dim=width,
            seq_len=segment,
            depth=2,
            heads=4,
            mem_len=segment,
            cmem_len=segment // 4,
            cmem_ratio=4,
        )
        return CompressivePortRunner(model, width, carries=True)

    return build


def _unshare_parameters(model: nn.Module) -> None:
    """Parameters that are views of a larger storage (expanded per head) become their own."""
    for mod in model.modules():
        for name, p in list(mod.named_parameters(recurse=False)):
            if p.untyped_storage().nbytes() != p.numel() * p.element_size():
                setattr(mod, name, nn.Parameter(p.detach().clone()))


def peer_options(items: list[str]) -> dict[str, Any]:
    """``--peer-set key=value`` items -> titans-pytorch constructor keywords."""
    pairs = (parse_flag_pair(i, "--peer-set", "keyword", "num_residual_streams=1") for i in items)
    return dict(pairs)


def builders(
    names: list[str], segment: int, extra: list[str], peer: dict[str, Any] | None = None
) -> dict[str, Callable[[int], Runner] | str]:
    """name -> builder, or the reason it is skipped (a peer that is not installed)."""
    out: dict[str, Callable[[int], Runner] | str] = {}
    for name in names:
        try:
            if name in (*MNEMO, *MNEMO_MORE):
                out[name] = mnemo_runner(name, extra)
            elif name == "titans-pytorch":
                out[name] = titans_port(segment, options=peer)
            else:
                out[name] = compressive_port(segment)
        except ImportError as e:
            out[name] = f"not installed ({e.name}; pip install the `bench` extra, see --help)"
    return out
