"""``mnemo ladder --climb``: each (core, seed) climbs the delays in the order given, every rung
warm-started from the same core and seed's finished run at the previous delay.

The first delay trains from scratch exactly as without ``--climb``; the run at each later delay
has ``run.init_from`` set to the previous rung's run folder (so it starts from that run's final
weights, its checkpoints/last.pt, and nothing else: optimizer, step count and envs are fresh) and
the same env-step budget, so steps to 0.9 count from the rung's own start. The delays run one
after another, each delay's cells ``--jobs`` at a time.

A cell whose previous rung has no result file (it failed, or was stopped) is not run: one error
line names it, rather than a run from scratch passing for a climb; rerunning the command once
that rung has finished climbs on. ``run.init_from`` is part of every run's config, so a rerun
that toggles ``--climb`` on an existing ``--out`` is refused in one line before anything trains.
"""

from __future__ import annotations

from pathlib import Path

from mnemo.agents.config_loader import ConfigError
from mnemo.agents.experiments.compare import RunSpec, execute
from mnemo.agents.experiments.run_files import ResultError, pending, recorded_config

__all__ = ["check_climb_mode", "climb_configs", "execute_climb", "previous_rungs"]


def previous_rungs(specs: list[RunSpec]) -> list[tuple[RunSpec, RunSpec]]:
    """(run, the same core and seed's run at the previous delay) for every run after the first
    delay. ``specs`` are in ``plan_ladder``'s order: delay by delay."""
    last: dict[tuple[str, int], RunSpec] = {}
    pairs = []
    for spec in specs:
        key = (spec.core, spec.seed)
        if key in last:
            pairs.append((spec, last[key]))
        last[key] = spec
    return pairs


def climb_configs(specs: list[RunSpec]) -> None:
    """Point every run after the first delay at its previous rung (``run.init_from``)."""
    for spec, before in previous_rungs(specs):
        spec.config["run"]["init_from"] = before.run_dir


def check_climb_mode(specs: list[RunSpec], climb: bool) -> None:
    """Refuse, in one line, an ``--out`` whose runs were planned with the other ``--climb``.

    Raises:
        ConfigError: a run after the first delay was (or was not) warm-started from its
            previous rung, and this plan does the opposite.
    """
    for spec, before in previous_rungs(specs):
        try:
            recorded = recorded_config(spec)
        except ResultError:  # unreadable: ``pending`` names it and runs that run again
            continue
        if recorded is None:
            continue
        climbed = recorded[1].get("run", {}).get("init_from") == before.run_dir
        if climbed != climb:
            was = "with" if climbed else "without"
            raise ConfigError(
                f"--out {Path(spec.run_dir).parent.parent} holds a ladder run {was} --climb "
                f"({Path(spec.run_dir).name}): rerun {was} --climb, or give another --out"
            )


def execute_climb(specs: list[RunSpec], jobs: int = 1, progress: bool = True) -> list[str]:
    """Run the rungs delay by delay, each delay's cells ``jobs`` at a time; returns error lines
    (a failed run, and every later cell it left without a previous rung).

    Raises:
        ConfigError: see ``pending``; before anything runs.
    """
    pending(specs)  # a folder of another config is refused before the first rung trains
    previous = {spec.run_dir: before for spec, before in previous_rungs(specs)}
    rungs: dict[str, list[RunSpec]] = {}
    for spec in specs:
        rungs.setdefault(spec.env, []).append(spec)
    errors: list[str] = []
    for rung in rungs.values():
        ready = []
        for spec in rung:
            before = previous.get(spec.run_dir)
            if spec.result_path.is_file() or before is None or before.result_path.is_file():
                ready.append(spec)
            else:
                errors.append(
                    f"{Path(spec.run_dir).name}: not climbed: {Path(before.run_dir).name} has "
                    "not finished (no result.json); rerun to climb on once it has"
                )
        errors += execute(ready, jobs, progress)
    return errors
