"""Bits per byte with the memory carried over whole documents, and recall accuracy by distance.

``evaluate`` runs a model over ``Streams`` (agents/lm/data.py) one segment at a time, carrying
the state from segment to segment, so every byte of a document is predicted with everything
before it in that document available to the core (as far as the core can remember). Where the
data marks recall bytes (the synthetic sets), it also reports bits per byte and argmax accuracy
at exactly those bytes, overall and by recall distance in power-of-two buckets.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from mnemo.agents.lm.data import Streams
from mnemo.agents.lm.model import ByteLM

LN2 = math.log(2.0)
N_BUCKETS = 32


@dataclass
class DistanceBucket:
    lo: int
    """Recall distances in [lo, 2*lo)."""
    n: int
    accuracy: float
    bits_per_byte: float


@dataclass
class EvalResult:
    bits_per_byte: float
    bytes: int
    """Predicted bytes (every byte of every document but its first)."""
    recall_bytes: int = 0
    recall_bits_per_byte: float = float("nan")
    recall_accuracy: float = float("nan")
    """Share of recall bytes whose most likely prediction is right."""
    by_distance: list[DistanceBucket] = field(default_factory=list)

    def scalars(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}/bits_per_byte": self.bits_per_byte}
        if self.recall_bytes:
            out[f"{prefix}/recall_bits_per_byte"] = self.recall_bits_per_byte
            out[f"{prefix}/recall_accuracy"] = self.recall_accuracy
        return out

    def table(self) -> str:
        """Recall by distance as aligned text lines (empty without recall marks)."""
        if not self.by_distance:
            return ""
        rows = [f"{'distance':>15} {'bytes':>7} {'accuracy':>9} {'bits/byte':>10}"]
        for b in self.by_distance:
            rows.append(
                f"{f'{b.lo}-{2 * b.lo - 1}':>15} {b.n:>7} {b.accuracy:>9.3f} "
                f"{b.bits_per_byte:>10.3f}"
            )
        return "\n".join(rows)


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when asked; a no-op context elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def bucket_of(distance: Tensor) -> Tensor:
    """floor(log2(distance)) for positive distances, as long."""
    return torch.log2(distance.clamp(min=1).double()).floor().long().clamp(max=N_BUCKETS - 1)


@torch.no_grad()
def evaluate(
    model: ByteLM,
    streams: Streams,
    seg_len: int,
    device: torch.device | str = "cpu",
    amp: bool = True,
    progress: bool = False,
) -> EvalResult:
    """Bits per byte of ``model`` over ``streams``, carrying the state across segments."""
    from tqdm import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval()
    state = model.initial_state(streams.batch_size, device)
    total_nats = 0.0
    total = 0
    r_nats = torch.zeros(N_BUCKETS, dtype=torch.float64)
    r_hits = torch.zeros(N_BUCKETS, dtype=torch.float64)
    r_n = torch.zeros(N_BUCKETS, dtype=torch.float64)
    segments = streams.segments(seg_len)
    bar = tqdm(segments, total=streams.n_segments(seg_len), disable=not progress, unit="seg")
    for seg in bar:
        x, y = seg.x.to(device), seg.y.to(device)
        with autocast(device, amp):
            out = model(x, state, seg.episode_start.to(device))
        state = out.state
        logits = out.logits.float()  # (B, T, 256)
        nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").cpu()
        mask = seg.mask.flatten()
        total_nats += float(nll[mask].sum())
        total += int(mask.sum())
        recall = mask & (seg.distance.flatten() > 0)
        if recall.any():
            hit = (logits.argmax(-1).flatten().cpu() == seg.y.flatten())[recall].double()
            b = bucket_of(seg.distance.flatten()[recall])
            r_nats += torch.bincount(b, nll[recall].double(), N_BUCKETS)
            r_hits += torch.bincount(b, hit, N_BUCKETS)
            r_n += torch.bincount(b, minlength=N_BUCKETS).double()
    model.train(was_training)
    result = EvalResult(total_nats / max(total, 1) / LN2, total)
    n_recall = int(r_n.sum())
    if n_recall:
        result.recall_bytes = n_recall
        result.recall_bits_per_byte = float(r_nats.sum()) / n_recall / LN2
        result.recall_accuracy = float(r_hits.sum()) / n_recall
        result.by_distance = [
            DistanceBucket(
                2**i, int(r_n[i]), float(r_hits[i] / r_n[i]), float(r_nats[i] / r_n[i] / LN2)
            )
            for i in range(N_BUCKETS)
            if r_n[i] > 0
        ]
    return result
