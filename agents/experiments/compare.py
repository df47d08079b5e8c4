"""``mnemo compare``: train every (core, env, seed), evaluate, and tabulate and plot the results.

Each run is an ordinary training run with its own folder (TensorBoard events, checkpoints) under
``OUT/runs/<core>__<env>__s<seed>``. When a run has trained and been evaluated, its
``result.json`` (with the run's config) is written atomically; a run with a result file is never
run again, and a half-finished run continues from its last checkpoint (bit-identically, as
``mnemo train --resume``), so an interrupted comparison (Ctrl-C, SIGTERM, kill -9, a reboot)
resumes where it stopped. A rerun whose config differs from what ``OUT`` holds (another
``--steps``, another override) is refused in one line before anything runs: one table never
mixes budgets, and no half-finished run is deleted. A result file that cannot be read (truncated,
``{}``) is named in a warning and that run alone is run again. With ``--jobs > 1`` every run
trains in its own child process, which dies with its parent (agents/experiments/workers.py).

Outputs in ``OUT``: results.csv (one row per run), results.md (per core and env: final eval
success as IQM with a 95% bootstrap CI across seeds, steps to 90% success, SPS), curves.png
(training success against env steps) and, when one task was given at several delays,
delay.png (eval success against delay).
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnemo.agents.checkpoint import make_folder
from mnemo.agents.config_loader import ConfigError, from_dict, load_config, to_dict
from mnemo.agents.experiments.report import (
    budget_notes,
    summarize,
    write_csv,
    write_markdown,
)
from mnemo.agents.experiments.run_files import (
    load_result,
    pending,
    resumable_checkpoint,
    write_json_atomic,
)
from mnemo.agents.rl.config import RLConfig, check_names

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


SET_BY_FLAGS = {"env.id": "--envs", "core.name": "--cores", "run.dir": "--out", "run.name": "--out"}
"""Keys every run of a comparison takes from a flag, refused as overrides."""


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
        flag = SET_BY_FLAGS.get(key) or ("--steps" if key == "ppo.total_steps" and steps else None)
        if flag:  # else silently replaced by the flag's value in every run
            raise ConfigError(f"{key}: mnemo compare sets it from {flag}; drop the override")
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
    base.run.print_every = 0  # J runs' reports would interleave; results.md has the numbers
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


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Train one run, evaluate its final policy on held-out seeds, write its result file."""
    from mnemo.agents.experiments.stats import first_step_reaching
    from mnemo.agents.rl.evaluate import evaluate, load_agent
    from mnemo.agents.rl.train import train

    cfg = from_dict(RLConfig, spec.config)
    run_dir = Path(spec.run_dir)
    resume = resumable_checkpoint(run_dir, cfg)
    if resume is None and run_dir.exists():  # nothing to continue: start over, events and all
        from mnemo.agents.run_loop import lock_run_dir

        os.close(lock_run_dir(run_dir))  # not while another process trains in it
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
        "config": spec.config,
    }
    write_json_atomic(record, spec.result_path)
    return record


def execute(specs: list[RunSpec], jobs: int = 1, progress: bool = True) -> list[str]:
    """Run the specs that have no result file yet, ``jobs`` at a time; returns error lines.

    Raises:
        ConfigError: see ``pending``; before anything runs.
    """
    from tqdm import tqdm

    from mnemo.agents.experiments.workers import run_in_children

    todo = pending(specs)
    errors: list[str] = []
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), unit="run", disable=not progress)

    def done(spec: RunSpec, error: str | None) -> None:
        if error is not None:
            errors.append(f"{Path(spec.run_dir).name}: {error}")
        bar.set_description(Path(spec.run_dir).name)
        bar.update()

    try:
        if jobs == 1:
            for spec in todo:
                bar.set_description(Path(spec.run_dir).name)
                try:
                    run_one(spec)
                except Exception as e:  # one broken run must not lose the others
                    done(spec, f"{type(e).__name__}: {e}")
                else:
                    done(spec, None)
        else:
            run_in_children(run_one, todo, jobs, done)
    finally:
        bar.close()
    return errors


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
    for note in budget_notes(specs):
        print(f"note: {note}", file=sys.stderr)
    make_folder(out, "--out")  # /proc/x: one line, not a FileNotFoundError traceback
    errors = execute(specs, jobs, progress)
    results = [load_result(s.result_path) for s in specs if s.result_path.is_file()]
    if not results:
        return results, errors
    write_csv(results, out / "results.csv")
    rows = summarize(results)
    kwargs = results[0].get("env_kwargs")
    plots = [plot_curves(results, out / "curves.png", kwargs)]
    delay = plot_delay(rows, out / "delay.png", kwargs)
    if delay is not None:
        plots.append(delay)
    command = "mnemo " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else "compare()"
    write_markdown(rows, out / "results.md", plots, command, budget_notes(specs))
    return results, errors
