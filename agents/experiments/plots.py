"""Pictures: learning curves and delay sweeps for ``mnemo compare`` and ``mnemo ladder`` (the
memory heatmaps of recorded episodes are agents/rl/memory_plots.py).

matplotlib runs on the Agg backend (no display needed) and is imported only when a picture is
drawn, so that training without videos never pays for it.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_to_array(fig: Any) -> np.ndarray:
    """Render a matplotlib figure to an (H, W, 3) uint8 array and close it."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    plt.close(fig)
    buf.seek(0)
    from PIL import Image

    return np.asarray(Image.open(buf).convert("RGB"))


def _on_grid(history: Sequence[Sequence[float]], grid: np.ndarray) -> np.ndarray:
    """Success at each grid step: the last known value (NaN updates skipped) before it."""
    steps = np.array([h[0] for h in history if not math.isnan(h[1])], dtype=float)
    vals = np.array([h[1] for h in history if not math.isnan(h[1])], dtype=float)
    if steps.size == 0:
        return np.full(grid.shape, np.nan)
    idx = np.searchsorted(steps, grid, side="right") - 1
    return np.where(idx >= 0, vals[np.clip(idx, 0, None)], np.nan)


CHANCE_KWARG = {
    "mnemo.envs.recall:RecallEnv": "num_symbols",
    "mnemo.envs.keychest.match:KeyChestMatchEnv": "num_colors",
}
"""Tasks whose success by guessing is 1 / (this constructor argument)."""


def chance_level(env_id: str, kwargs: dict[str, Any] | None = None) -> float | None:
    """Success rate of a uniform guess at the decision, where the task defines it: recall
    1/num_symbols, KeyChest-Match 1/num_colors (``kwargs`` over the registered ones, else the
    constructor's default); None for any other env."""
    import importlib
    import inspect

    import gymnasium as gym

    from mnemo import envs  # noqa: F401  (registers mnemo's ids)

    if env_id not in gym.registry:
        return None
    spec = gym.spec(env_id)
    name = CHANCE_KWARG.get(spec.entry_point) if isinstance(spec.entry_point, str) else None
    if name is None:
        return None
    given = {**(spec.kwargs or {}), **(kwargs or {})}
    if name not in given:
        module, _, cls = spec.entry_point.partition(":")
        param = inspect.signature(getattr(importlib.import_module(module), cls)).parameters[name]
        given[name] = param.default
    return 1.0 / int(given[name])


def _chance_line(ax: Any, chance: float | None) -> None:
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls=":", label=f"chance ({chance:.2g})")


def plot_curves(
    results: list[dict[str, Any]], path: str | Path, kwargs: dict[str, Any] | None = None
) -> Path:
    """Training success against env steps: one panel per env (by task, then delay as a
    number), one line per core (mean over seeds, shaded between the worst and the best seed),
    and the chance level where the task defines one."""
    plt = _plt()
    env_ids = sorted({r["env"] for r in results}, key=lambda e: (task_name(e), env_delay(e) or 0))
    cores = list(dict.fromkeys(r["core"] for r in results))
    colours = {c: plt.cm.tab10(i % 10) for i, c in enumerate(cores)}
    fig, axes = plt.subplots(
        1, len(env_ids), figsize=(4.5 * len(env_ids), 3.6), dpi=100, squeeze=False
    )
    for ax, env_id in zip(axes[0], env_ids, strict=True):
        for core in cores:
            runs = [r for r in results if r["env"] == env_id and r["core"] == core]
            if not runs:
                continue
            end = max(r["steps"] for r in runs)
            grid = np.linspace(0, end, 200)
            curves = np.stack([_on_grid(r["history"], grid) for r in runs])
            with np.errstate(all="ignore"), _quiet():
                mean = np.nanmean(curves, 0)
                lo, hi = np.nanmin(curves, 0), np.nanmax(curves, 0)
            ax.plot(grid, mean, color=colours[core], label=f"{core} ({len(runs)} seeds)")
            ax.fill_between(grid, lo, hi, color=colours[core], alpha=0.15, linewidth=0)
        _chance_line(ax, chance_level(env_id, kwargs))
        ax.set(title=env_id, xlabel="env steps", ylabel="training success rate", ylim=(-0.02, 1.02))
        ax.xaxis.set_major_formatter(_steps_formatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _steps_formatter() -> Any:
    """Tick labels like 250k and 1.5M."""
    from matplotlib.ticker import FuncFormatter

    def fmt(x: float, _pos: int) -> str:
        if abs(x) >= 1e6:
            return f"{x / 1e6:g}M"
        return f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"

    return FuncFormatter(fmt)


def env_delay(env_id: str, kwargs: dict[str, Any] | None = None) -> int | None:
    """The delay of a task: ``kwargs["delay"]``, else the registered kwargs, else ``-D<n>`` in
    the id; None when the env has no delay."""
    import re

    import gymnasium as gym

    if kwargs and "delay" in kwargs:
        return int(kwargs["delay"])
    if env_id in gym.registry and "delay" in (gym.spec(env_id).kwargs or {}):
        return int(gym.spec(env_id).kwargs["delay"])
    m = re.search(r"-D(\d+)(?:-|$)", env_id)
    return int(m.group(1)) if m else None


def task_name(env_id: str) -> str:
    """The env id without its delay, e.g. ``mnemo/Recall-v0`` for ``mnemo/Recall-D16-v0``."""
    import re

    return re.sub(r"-D\d+(?=-|$)", "", env_id)


def _delay_axis(ax: Any, delays: list[int]) -> None:
    """A log2 x axis of delays, ticked at exactly the delays run, with grid and legend."""
    ax.set_xscale("log", base=2)
    from matplotlib.ticker import NullLocator

    ax.set_xticks(delays, [str(d) for d in delays])
    ax.xaxis.set_minor_locator(NullLocator())  # y keeps its minor ticks: a log axis under a decade
    ax.set_xlabel("delay (steps)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_delay(
    rows: list[dict[str, Any]], path: str | Path, kwargs: dict[str, Any] | None = None
) -> Path | None:
    """Final eval success (IQM, 95% bootstrap CI) against delay, one line per core, one panel
    per task that was run at two or more delays, with the task's chance level where it has one.
    ``rows`` are results.md's per (core, env) rows.
    Returns None (and draws nothing) when no task has several delays."""
    by_task: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        d = env_delay(r["env"], kwargs)
        if d is not None:
            by_task[task_name(r["env"])].add(d)
    tasks = sorted(t for t, ds in by_task.items() if len(ds) >= 2)
    if not tasks:
        return None
    plt = _plt()
    cores = list(dict.fromkeys(r["core"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), dpi=100, squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, core in enumerate(cores):
            pts = sorted(
                (env_delay(r["env"], kwargs), r["iqm"], r["ci_low"], r["ci_high"])
                for r in rows
                if r["core"] == core and task_name(r["env"]) == task
            )
            if not pts:
                continue
            d, y, lo, hi = (np.array(v, dtype=float) for v in zip(*pts))
            err = np.stack([y - lo, hi - y])
            ax.errorbar(
                d, y, yerr=err, marker="o", capsize=3, color=plt.cm.tab10(i % 10), label=core
            )
        envs = [r["env"] for r in rows if task_name(r["env"]) == task]
        chances = {chance_level(e, kwargs) for e in envs}
        _chance_line(ax, chances.pop() if len(chances) == 1 else None)
        delays = sorted({env_delay(e, kwargs) for e in envs})
        _delay_axis(ax, delays)
        ax.set(title=task, ylabel="eval success (IQM)", ylim=(-0.02, 1.02))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


class _quiet:
    """Silence numpy's "mean of empty slice" warnings where all seeds are still NaN."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def plot_ladder(rows: list[dict[str, Any]], path: str | Path, climb: bool = False) -> Path:
    """``mnemo ladder``'s figure: eval success (IQM, 95% CI) and cost per env step against
    delay, one line per core. ``rows`` are per (core, delay) with ``delay``, ``iqm``,
    ``ci_low``, ``ci_high`` (trained cells) and ``us_per_step``, ``mb`` (measured cells).
    ``climb``: each delay was warm-started from the previous one (``mnemo ladder --climb``)."""
    plt = _plt()
    cores = list(dict.fromkeys(r["core"] for r in rows))
    delays = sorted({r["delay"] for r in rows})
    trained_any = any("iqm" in r for r in rows)
    fig, axes = plt.subplots(1, 3 if trained_any else 2, figsize=(14 if trained_any else 10, 3.8))
    left, right, mem = axes if trained_any else (None, *axes)
    for i, core in enumerate(cores):
        mine = sorted((r for r in rows if r["core"] == core), key=lambda r: r["delay"])
        colour = plt.cm.tab10(i % 10)
        trained = [r for r in mine if "iqm" in r]
        if trained and left is not None:
            d = np.array([r["delay"] for r in trained], dtype=float)
            y = np.array([r["iqm"] for r in trained])
            lo, hi = [r["ci_low"] for r in trained], [r["ci_high"] for r in trained]
            err = np.stack([y - lo, hi - y])
            label = f"{core}, climbed" if climb else core
            left.errorbar(d, y, yerr=err, marker="o", capsize=3, color=colour, label=label)
        costed = [r for r in mine if "us_per_step" in r]
        for ax, key in ((right, "us_per_step"), (mem, "mb")):
            if costed:
                x = [r["delay"] for r in costed]
                ax.plot(x, [r[key] for r in costed], marker="o", color=colour, label=core)
    if left is not None:
        envs = [r["env"] for r in rows if "env" in r]
        _chance_line(left, chance_level(envs[0]) if envs else None)
        left.set(ylabel="eval success (IQM)", ylim=(-0.02, 1.02))
        left.set_title("how far memory reaches" + (" (climbed)" if climb else ""))
    right.set(ylabel="us per env step (PPO iteration)")
    right.set_title("what it costs: time")
    mem.set(ylabel="MB (rollout + activations)")
    mem.set_title("what it costs: memory")
    from matplotlib.ticker import FormatStrFormatter

    for ax in (right, mem):
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        if high < 10 * low:  # under a decade a log axis has no major tick to label
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    for ax in axes:
        _delay_axis(ax, delays)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
