"""``mnemo compare``: train every (core, env, seed), evaluate, and tabulate and plot the results.

Each run is an ordinary training run with its own folder (TensorBoard events, checkpoints) under
``OUT/runs/<core>__<env>__s<seed>``. When a run has trained and been evaluated, its
``result.json`` is written atomically; a run with a result file is never run again, and a
half-finished run continues from its last checkpoint (bit-identically, as ``mnemo train
--resume``), so an interrupted comparison (Ctrl-C, kill -9, a reboot) resumes where it stopped.

Outputs in ``OUT``: results.csv (one row per run), results.md (per core and env: final eval
success as IQM with a 95% bootstrap CI across seeds, steps to 90% success, SPS), curves.png
(training success against env steps) and, when one task was given at several delays,
delay.png (eval success against delay).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mnemo.agents.config_loader import ConfigError, from_dict, load_config, to_dict
from mnemo.agents.rl.config import RLConfig, check_names

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
]
RESULT_FILE = "result.json"


@dataclass
class RunSpec:
    """One training run of a comparison (picklable, for worker processes)."""

    core: str
    env: str
    seed: int
    run_dir: str
    config: dict[str, Any]
    eval_episodes: int

    @property
    def result_path(self) -> Path:
        return Path(self.run_dir) / RESULT_FILE


def _split(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise ConfigError(f"--{what} needs at least one name, got {text!r}")
    if len(set(items)) != len(items):
        raise ConfigError(f"--{what} names something twice: {text!r}")
    return items


CLOSED_CHANNELS = ("agent.prev_action=false", "agent.prev_reward=false")
"""Every compared run, whatever its config says: a policy can keep the cue in its own previous
actions (or rewards it chose) and read it back, a memory without a core. The control ``none``
must not have it, and every core sees the same inputs as the control."""


def plan_runs(
    cores: str | Sequence[str],
    env_ids: str | Sequence[str],
    seeds: int,
    out: str | Path,
    steps: int | None = None,
    config: str | None = None,
    overrides: Sequence[str] = (),
    eval_episodes: int = 100,
) -> list[RunSpec]:
    """Every run of the comparison, each config checked, before anything is trained.

    Core options from the base config or overrides go to the cores that accept them (a core
    swapped in for another keeps only what it understands); an option no listed core accepts
    is an error.

    Raises:
        ConfigError: bad input (unknown core or env, seeds < 1, ...), in one line.
    """
    from mnemo import memory

    cores = _split(cores, "cores") if isinstance(cores, str) else list(cores)
    env_ids = _split(env_ids, "envs") if isinstance(env_ids, str) else list(env_ids)
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    if eval_episodes < 1:
        raise ConfigError(f"--eval-episodes must be >= 1, got {eval_episodes}")
    for text in overrides:
        key, _, value = text.partition("=")
        if key in ("agent.prev_action", "agent.prev_reward") and value.lower() != "false":
            raise ConfigError(
                f"{key}: mnemo compare never feeds a core its previous action or reward (the "
                "memoryless control must see what every core sees, and cannot take them)"
            )
    for core in cores:
        try:  # the name here; each core's options below, in check_names
            memory.validate_core(core, {})
        except memory.CoreConfigError as e:
            raise ConfigError(str(e)) from e
    base = load_config(RLConfig, config, [*overrides, *CLOSED_CHANNELS])
    if steps is not None:
        base.ppo.total_steps = steps
    if not base.threads:
        base.threads = 1  # J runs share the CPU; one thread each is fastest for small models
    base.run.progress = False
    accepted = {k for c in cores for k in memory.core_options(c)}
    for key in base.core.options:
        if key not in accepted:
            raise ConfigError(f"core option {key!r} is accepted by none of: {', '.join(cores)}")
    n_gpus = _cuda_count() if base.device == "cuda" else 0
    specs: list[RunSpec] = []
    for env_id in env_ids:
        for core in cores:
            for i in range(seeds):
                cfg = copy.deepcopy(base)
                cfg.env.id = env_id
                cfg.core.name = core
                valid = memory.core_options(core)
                cfg.core.options = {k: v for k, v in base.core.options.items() if k in valid}
                cfg.seed = base.seed + i
                name = f"{core}__{env_id.replace('/', '_')}__s{cfg.seed}"
                cfg.run.dir = str(Path(out) / "runs" / name)
                cfg.run.name = name
                if n_gpus > 1:
                    cfg.device = f"cuda:{len(specs) % n_gpus}"
                if i == 0:
                    check_names(cfg)  # env ids and core options; seeds change neither
                specs.append(
                    RunSpec(core, env_id, cfg.seed, cfg.run.dir, to_dict(cfg), eval_episodes)
                )
    return specs


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _nan_to_none(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def write_json_atomic(obj: Any, path: Path) -> None:
    from mnemo.agents.checkpoint import write_atomic

    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def resumable_checkpoint(run_dir: Path, cfg: RLConfig) -> dict[str, Any] | None:
    """The checkpoint an interrupted run left in ``run_dir``, if it was this very run."""
    from mnemo.agents.checkpoint import load_checkpoint

    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    try:
        ckpt = load_checkpoint(last)
    except Exception:  # unreadable: the run starts over, which loses nothing that was usable
        return None
    return ckpt if ckpt.get("config") == to_dict(cfg) else None


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Train one run, evaluate its final policy on held-out seeds, write its result file."""
    from mnemo.agents.experiments.stats import first_step_reaching
    from mnemo.agents.rl.evaluate import evaluate, load_agent
    from mnemo.agents.rl.train import train

    cfg = from_dict(RLConfig, spec.config)
    run_dir = Path(spec.run_dir)
    resume = resumable_checkpoint(run_dir, cfg)
    if resume is None and run_dir.exists():  # nothing to continue: start over, events and all
        shutil.rmtree(run_dir)
    result = train(cfg, resume=resume, run_dir=run_dir if resume else None)
    model, ecfg = load_agent(str(result.run_dir), cfg.device)
    ev = evaluate(model, ecfg, spec.eval_episodes, seed=cfg.seed, device=cfg.device)
    record = {
        "core": spec.core,
        "env": spec.env,
        "seed": spec.seed,
        "steps": result.steps,
        "wall_s": round(result.wall_s, 3),
        "sps": round(result.sps, 1),
        "train_success": _nan_to_none(result.final_success),
        "eval_success": _nan_to_none(ev.success_rate),  # None: the env reports no success
        "eval_return": ev.mean_return,
        "eval_ci": [ev.ci_low, ev.ci_high],
        "eval_episodes": ev.episodes,
        "steps_to_90": first_step_reaching(result.history, 0.9),
        "run_dir": str(run_dir),
        "history": [[s, _nan_to_none(v)] for s, v in result.history],
        "env_kwargs": cfg.env.kwargs,
    }
    write_json_atomic(record, spec.result_path)
    return record


def load_result(path: Path) -> dict[str, Any]:
    r = json.loads(path.read_text())
    r["history"] = [(s, float("nan") if v is None else v) for s, v in r["history"]]
    for key in ("train_success", "eval_success"):
        if r.get(key) is None:
            r[key] = float("nan")
    r.setdefault("eval_return", float("nan"))  # result files from before it was recorded
    return r


def _worker(spec: RunSpec) -> dict[str, Any]:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    return run_one(spec)


def execute(specs: list[RunSpec], jobs: int = 1, progress: bool = True) -> list[str]:
    """Run the specs that have no result file yet, ``jobs`` at a time; returns error lines."""
    from tqdm import tqdm

    todo = [s for s in specs if not s.result_path.is_file()]
    errors: list[str] = []
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), unit="run", disable=not progress)
    try:
        if jobs == 1:
            for spec in todo:
                bar.set_description(Path(spec.run_dir).name)
                try:
                    run_one(spec)
                except Exception as e:  # one broken run must not lose the others
                    errors.append(f"{Path(spec.run_dir).name}: {type(e).__name__}: {e}")
                bar.update()
        else:
            # spawn: forking a process that already runs torch threads can deadlock.
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_worker, s): s for s in todo}
                for fut in as_completed(futures):
                    name = Path(futures[fut].run_dir).name
                    try:
                        fut.result()
                    except Exception as e:
                        errors.append(f"{name}: {type(e).__name__}: {e}")
                    bar.set_description(name)
                    bar.update()
    finally:
        bar.close()
    return errors


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
            w.writerow({k: "" if r.get(k) is None else r[k] for k in CSV_COLUMNS})


def _na(x: float) -> str:
    """A table cell: the number, or n/a where it is not available (NaN)."""
    return "n/a" if math.isnan(x) else f"{x:.3f}"


def _with_ci(x: float, lo: float, hi: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3f} [{lo:.3f}, {hi:.3f}]"


def write_markdown(rows: list[dict[str, Any]], path: Path, plots: list[Path], command: str) -> None:
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
    for r in sorted(rows, key=lambda r: (r["env"], r["core"])):
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
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    path.write_text("\n".join(lines) + "\n")


def compare(
    cores: str | Sequence[str],
    env_ids: str | Sequence[str],
    seeds: int,
    out: str | Path,
    steps: int | None = None,
    jobs: int = 1,
    config: str | None = None,
    overrides: Sequence[str] = (),
    eval_episodes: int = 100,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Plan, run what is not done yet, then write results.csv, results.md and the plots.

    Returns the per-run results and the error lines of runs that failed (rerun to retry them).
    """
    from mnemo.agents.experiments.plots import plot_curves, plot_delay

    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    out = Path(out)
    specs = plan_runs(cores, env_ids, seeds, out, steps, config, overrides, eval_episodes)
    out.mkdir(parents=True, exist_ok=True)
    errors = execute(specs, jobs, progress)
    results = [load_result(s.result_path) for s in specs if s.result_path.is_file()]
    if not results:
        return results, errors
    write_csv(results, out / "results.csv")
    rows = summarize(results)
    plots = [plot_curves(results, out / "curves.png")]
    delay = plot_delay(rows, out / "delay.png", results[0].get("env_kwargs"))
    if delay is not None:
        plots.append(delay)
    command = "mnemo " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else "compare()"
    write_markdown(rows, out / "results.md", plots, command)
    return results, errors
