"""``mnemo compare``'s outputs: per-run CSV, and the per (core, env) table across seeds
(IQM with a bootstrap CI, and the caveats a reader needs: few seeds, rounded budgets)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mnemo.agents.experiments.compare import RunSpec

CSV_COLUMNS = [
    "core",
    "env",
    "seed",
    "steps",
    "wall_s",
    "sps",
    "train_success",
    "eval_success",
    "eval_return",
    "steps_to_90",
    "run_dir",
    "init_from",  # the run whose weights it started from (run.init_from; a ladder --climb rung)
]


def budget_notes(specs: Sequence[RunSpec]) -> list[str]:
    """One line per step budget that is not a whole number of PPO updates: runs train whole
    updates, so they end at the next multiple of env.num_envs x ppo.rollout_len."""
    notes = []
    for total, per in dict.fromkeys(
        (
            s.config["ppo"]["total_steps"],
            s.config["env"]["num_envs"] * s.config["ppo"]["rollout_len"],
        )
        for s in specs
    ):
        if total % per:
            notes.append(
                f"--steps {total:,} is not a whole number of updates of {per:,} env steps "
                f"(env.num_envs x ppo.rollout_len): runs train {-(-total // per) * per:,}"
            )
    return notes


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (core, env): eval success IQM and 95% bootstrap CI across seeds, steps to 90%, SPS."""
    from mnemo.agents.experiments.stats import bootstrap_ci, iqm

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["core"], r["env"]), []).append(r)
    rows = []
    for (core, env), runs in groups.items():
        ev = [r["eval_success"] for r in runs]
        reached = sorted(r["steps_to_90"] for r in runs if r["steps_to_90"] is not None)
        lo, hi = bootstrap_ci(ev, "iqm")
        rets = [r.get("eval_return", float("nan")) for r in runs]
        ret_lo, ret_hi = bootstrap_ci(rets, "iqm")
        rows.append(
            {
                "core": core,
                "env": env,
                "seeds": len(runs),
                "iqm": iqm(ev),
                "ci_low": lo,
                "ci_high": hi,
                "train_iqm": iqm([r["train_success"] for r in runs]),
                "return_iqm": iqm(rets),
                "return_ci_low": ret_lo,
                "return_ci_high": ret_hi,
                "reached_90": len(reached),
                "median_steps_to_90": reached[len(reached) // 2] if reached else None,
                "sps": sum(r["sps"] for r in runs) / len(runs),
            }
        )
    return rows


def write_csv(results: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in results:
            init_from = (r.get("config") or {}).get("run", {}).get("init_from")
            r = {**r, "init_from": init_from}
            w.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_COLUMNS})


def _na(x: float) -> str:
    """A table cell: the number, or n/a where it is not available (NaN)."""
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _with_ci(x: float, lo: float, hi: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f} [{lo:.3f}, {hi:.3f}]"


FEW_SEEDS = 5
"""Below this many seeds an IQM and its bootstrap CI are rough, and the table says so."""


def table_order(row: dict[str, Any]) -> tuple:
    """Rows by task, then delay as a number (D8 before D16), then env id and core."""
    from mnemo.agents.experiments.plots import env_delay, task_name

    return (task_name(row["env"]), env_delay(row["env"]) or 0, row["env"], row["core"])


def write_markdown(
    rows: list[dict[str, Any]],
    path: Path,
    plots: list[Path],
    command: str,
    notes: Sequence[str] = (),
) -> None:
    """results.md: the per (core, env) table, its caveats (``notes``, few seeds), the plots."""
    few = sorted({r["seeds"] for r in rows if r["seeds"] < FEW_SEEDS})
    if few:
        notes = [
            *notes,
            f"Only {', '.join(map(str, few))} seed(s) in some rows: an IQM and its bootstrap CI "
            f"over fewer than {FEW_SEEDS} seeds are rough (up to 3 seeds the IQM is the plain "
            "mean, and the CI cannot reach beyond the values seen); run more seeds to conclude.",
        ]
    lines = [
        "# mnemo compare",
        "",
        f"`{command}`",
        "",
        "Eval success: greedy policy on held-out env seeds after training; IQM across seeds with "
        "a 95% percentile-bootstrap CI (2000 resamples). Steps to 90%: median over the seeds whose "
        "training success rate (per update) reached 0.9. n/a: the env reports no success "
        "(set env.success_return to define it); the eval return is there to compare instead.",
        "",
        "| core | env | seeds | eval success IQM [95% CI] | eval return IQM [95% CI] "
        "| train success IQM | steps to 90% (seeds reached) | SPS |",
        "|---|---|---:|---|---|---:|---|---:|",
    ]
    for r in sorted(rows, key=table_order):
        s90 = r["median_steps_to_90"]
        lines.append(
            f"| {r['core']} | {r['env']} | {r['seeds']} "
            f"| {_with_ci(r['iqm'], r['ci_low'], r['ci_high'])} "
            f"| {_with_ci(r['return_iqm'], r['return_ci_low'], r['return_ci_high'])} "
            f"| {_na(r['train_iqm'])} "
            f"| {'-' if s90 is None else f'{s90:,}'} ({r['reached_90']}/{r['seeds']}) "
            f"| {r['sps']:,.0f} |"
        )
    lines.append("")
    lines += [f"**Note:** {n}\n" for n in notes]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    path.write_text("\n".join(lines) + "\n")
