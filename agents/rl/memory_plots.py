"""Memory at work, drawn: attention heatmaps and the neural memory's retrieval loss over one
recorded episode (agents/rl/video.py), with the episode's phases marked on the step axis.

Phases come from the env, not from this code: a step's ``info["phase"]`` names the phase its
action was taken in (mnemo's Recall and KeyChest envs say "cue", "delay" / "distractor", "query"
/ "chest"; any env may). Every phase is shaded and named; the cue, the steps whose phase is
"cue", is framed on the attention heatmap, and the episode's last step, where the answer is
given, is marked as the decision. An env that reports no phases gets plain plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from mnemo.agents.experiments.plots import _plt, figure_to_array

__all__ = ["attention_figure", "inspection_images", "phase_spans", "retrieval_figure"]

Phases = Sequence[str | None]
"""The phase of each step's action (None where the env names none)."""

CUE = "cue"
PHASE_COLOURS = ("tab:cyan", "tab:gray", "tab:orange", "tab:olive", "tab:pink", "tab:brown")


def phase_spans(phases: Phases) -> list[tuple[str, int, int]]:
    """(name, first step, last step) of each run of steps in one phase, in order."""
    spans: list[tuple[str, int, int]] = []
    for t, name in enumerate(phases):
        if name is None:
            continue
        if spans and spans[-1][0] == name and spans[-1][2] == t - 1:
            spans[-1] = (name, spans[-1][1], t)
        else:
            spans.append((name, t, t))
    return spans


def _colours(phases: Phases) -> dict[str, str]:
    names = list(dict.fromkeys(p for p in phases if p is not None))
    return {n: PHASE_COLOURS[i % len(PHASE_COLOURS)] for i, n in enumerate(names)}


def _mark_phases(ax: Any, phases: Phases) -> None:
    """Shade and name each phase along the x axis (steps); a dashed line at the decision."""
    if not any(p is not None for p in phases):
        return
    colour = _colours(phases)
    for name, first, last in phase_spans(phases):
        ax.axvspan(first - 0.5, last + 0.5, color=colour[name], alpha=0.18, lw=0)
        ax.text(
            (first + last) / 2, 0.97, name, transform=ax.get_xaxis_transform(), ha="center",
            va="top", fontsize=7, color="black", clip_on=True,
        )  # fmt: skip
    decision = len(phases) - 1
    ax.axvline(decision, color="tab:red", ls="--", lw=1)
    ax.text(
        decision, 0.80, "decision ", transform=ax.get_xaxis_transform(), ha="right",
        va="top", fontsize=7, color="tab:red",
    )  # fmt: skip


def _frame_cue_and_decision(ax: Any, phases: Phases) -> None:
    """On the query x key heatmap: dashed lines around the cue's keys, and the decision row."""
    cue = [(first, last) for name, first, last in phase_spans(phases) if name == CUE]
    for first, last in cue:
        for x in (first - 0.5, last + 0.5):
            ax.axvline(x, color="cyan", ls="--", lw=1)
        ax.text(
            (first + last) / 2, -0.5, "cue", ha="center", va="bottom", fontsize=8, color="tab:cyan"
        )
    if any(p is not None for p in phases):
        row = len(phases) - 1
        ax.axhline(row - 0.5, color="tab:red", ls="--", lw=1)
        ax.text(
            0.99, row - 0.5, "decision", transform=ax.get_yaxis_transform(), ha="right",
            va="bottom", fontsize=7, color="tab:red", bbox={"fc": "white", "lw": 0, "pad": 1},
        )  # fmt: skip


def attention_figure(weights: Tensor, title: str, phases: Phases = ()) -> Any:
    """Heatmap of attention weights (T queries x K keys, the last T keys being the queries' own
    steps); the last row is the decision step. Keys no query attended (empty memory slots at an
    episode start) are cropped, and keys are numbered by step: negative ones are memory."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    w = weights.float().numpy()
    t, k = w.shape
    n_mem = k - t
    used = np.nonzero(w.max(0) > 0)[0]
    first = int(used[0]) if used.size else n_mem
    w = w[:, first:]
    x0 = first - n_mem  # step of the first key shown, relative to the first query
    fig, (ax, ax_last) = plt.subplots(
        2, 1, figsize=(6, 5.2), dpi=80, gridspec_kw={"height_ratios": [3, 1]}
    )
    extent = (x0 - 0.5, x0 + w.shape[1] - 0.5, t - 0.5, -0.5)
    im = ax.imshow(w, aspect="auto", cmap="magma", interpolation="nearest", extent=extent)
    ax.set(title=f"attention, last layer, mean over heads ({title})", ylabel="query step")
    ax.set_xlabel("key step (< 0: memory slots, oldest first)" if x0 < 0 else "key step")
    _frame_cue_and_decision(ax, phases)
    for axis in (ax.xaxis, ax.yaxis, ax_last.xaxis):
        axis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax_last.bar(np.arange(x0, x0 + w.shape[1]), w[-1], color="tab:purple", width=1.0)
    _mark_phases(ax_last, phases)
    ax_last.set(xlim=extent[:2], xlabel="key step", ylabel="weight")
    ax_last.set_title(f"at the decision step (step {t - 1})", fontsize=9)
    fig.tight_layout()
    return fig


def retrieval_figure(loss: Tensor, title: str, phases: Phases = ()) -> Any:
    """Line plot of the neural memory's retrieval loss ||M(k_t) - v_t||^2 over the episode."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    ax.plot(loss.float().numpy(), color="tab:green", marker="." if len(loss) < 64 else None)
    _mark_phases(ax, phases)
    ax.set(
        title=f"neural memory retrieval loss ({title})",
        xlabel="episode step",
        ylabel="||M(k) - v||²",
        xlim=(-0.5, len(loss) - 0.5),
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def inspection_images(
    found: dict[str, Tensor], title: str = "", phases: Phases = ()
) -> dict[str, np.ndarray]:
    """Draw what ``MemoryCore.inspect`` returned: name -> (H, W, 3) uint8 image."""
    out: dict[str, np.ndarray] = {}
    if "attention" in found:
        fig = attention_figure(found["attention"], title, phases)
        out["attention"] = figure_to_array(fig)
    if "retrieval_loss" in found:
        fig = retrieval_figure(found["retrieval_loss"], title, phases)
        out["retrieval_loss"] = figure_to_array(fig)
    return out
