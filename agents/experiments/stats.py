"""Aggregate statistics across seeds: interquartile mean and a bootstrap confidence interval.

The IQM (mean of the middle 50% of runs) follows Agarwal et al. 2021, "Deep Reinforcement Learning
at the Edge of the Statistical Precipice": robust to one outlier seed like the median, but less
noisy than it at the 3-10 seeds RL papers can afford.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: trim 25% of the values at each end and average the rest.

    Matches ``scipy.stats.trim_mean(values, 0.25)`` (the rliable definition): the number trimmed
    at each end is ``floor(0.25 * n)``, so up to 3 values it is the plain mean. NaNs are dropped;
    no values give NaN.
    """
    x = np.sort(np.asarray([v for v in values if not math.isnan(v)], dtype=float))
    if x.size == 0:
        return float("nan")
    cut = int(0.25 * x.size)
    return float(x[cut : x.size - cut].mean())


def bootstrap_ci(
    values: Sequence[float],
    stat: str = "iqm",
    confidence: float = 0.95,
    reps: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``stat`` ("iqm", "mean" or "median").

    Seeds are resampled with replacement ``reps`` times; the interval is the central
    ``confidence`` mass of the resampled statistic. With one value the interval is that value
    (nothing to resample: read it as "no estimate of spread", not as certainty).
    """
    fns = {"iqm": iqm, "mean": lambda v: float(np.mean(v)), "median": lambda v: float(np.median(v))}
    if stat not in fns:
        raise ValueError(f"stat must be one of {', '.join(fns)}, got {stat!r}")
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(reps, x.size))
    fn = fns[stat]
    boots = np.array([fn(x[row]) for row in idx])
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(lo), float(hi)


def first_step_reaching(
    history: Sequence[tuple[int, float]], target: float, window: int = 1
) -> int | None:
    """The env step at which the success rate, averaged over the last ``window`` updates (NaN
    updates skipped), first reaches ``target``; None if it never does."""
    recent: list[float] = []
    for step, success in history:
        if math.isnan(success):
            continue
        recent = [*recent[-(window - 1) :], success] if window > 1 else [success]
        if len(recent) == window and sum(recent) / window >= target:
            return int(step)
    return None
