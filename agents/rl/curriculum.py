"""``curriculum:`` in a ``mnemo train`` config: earlier stages trained first, each one
warm-starting the next, so one command runs a whole curriculum (D16 first, then D256).

The key is a list of earlier stages, each a mapping of dotted keys to values with the meaning
and checks of command-line overrides (``env.id: mnemo/Recall-D16-v0``, ``ppo.bptt_len: 8``).
The config itself is the last stage. An earlier stage is the final config, command-line
overrides included, with the stage's own keys set on top (it inherits every key it does not set,
``ppo.target_success`` and ``ppo.total_steps`` included): ``seed=1`` on the command line
reaches every stage, ``env.id=...`` there changes the final stage and any stage that does not
set its own ``env.id``. A key naming a section (``env: {id: ...}``) merges over the config's
section, as a config over its ``base:``. ``run.dir`` and ``run.init_from`` are the
curriculum's to set.

Every stage is an ordinary run: stage k < N in ``<run.dir>/stages/<k>``, stage N (the config)
in ``<run.dir>`` itself, so ``mnemo eval RUN``, ``--resume RUN`` and ``tensorboard --logdir
RUN`` work as for any run. Stage k + 1 starts from stage k's weights (``run.init_from``);
stage 1 from the config's own ``run.init_from``, if it has one.

``<run.dir>/curriculum.json`` records every stage's config and, once it has finished, its
numbers; like ``mnemo compare``'s result.json it is what marks a finished run. Rerunning the
command skips finished stages and resumes an interrupted one from its checkpoint as
``--resume`` does (the ``FROZEN`` keys must match, a larger ``ppo.total_steps`` goes on). A
finished stage whose config changed, or another number of stages, is refused in one line:
the stages after it started from what it learned. ``run.overwrite=true`` starts every stage
over.

An earlier stage with ``ppo.target_success`` (or ``ppo.target_return``) that spends its
budget without reaching it stops the curriculum in one line, exit 1: the next stage would
start from a policy that has not learned what it was there to learn. Rerunning (with more
``ppo.total_steps`` for that stage) continues it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnemo.agents.config_help import ConfigKey
from mnemo.agents.config_loader import (
    CURRICULUM_KEY,
    ConfigError,
    apply_overrides,
    from_dict,
    merge,
    read_number,
    read_yaml,
    set_key,
    to_dict,
)
from mnemo.agents.rl.config import RLConfig, check_names, describe

__all__ = ["CURRICULUM_FILE", "HELP", "Stage", "load_curriculum", "run_curriculum"]

CURRICULUM_FILE = "curriculum.json"
STAGES_DIR = "stages"
SET_BY_CURRICULUM = ("run.dir", "run.init_from")
RESULT_NEUTRAL = ("run.", "threads", "device", "memory_check")
"""Keys (and prefixes) a finished stage may differ in on a rerun: where and how a run logs,
not what it learns. ``run.init_from`` is compared all the same."""

HELP = ConfigKey(
    CURRICULUM_KEY,
    "list",
    [],
    "Earlier stages, each a mapping of override keys (e.g. {env.id: mnemo/Recall-D16-v0, "
    "ppo.target_success: 0.95}) set on top of this config: stage k trains in "
    f"<run.dir>/{STAGES_DIR}/<k> and warm-starts the next, this config last in <run.dir>; "
    "rerunning the command resumes (README: Long horizons).",
)
"""What ``mnemo train --help`` says of the key (the config dataclasses do not hold it)."""


@dataclass
class Stage:
    """One run of a curriculum: its config (run.dir and run.init_from set) and its keys."""

    index: int
    """1-based; the last stage is the config itself."""
    cfg: RLConfig
    keys: dict[str, Any]
    """The stage's own keys as written; empty for the config itself."""

    @property
    def run_dir(self) -> Path:
        return Path(str(self.cfg.run.dir))

    def header(self, n: int) -> str:
        own = " ".join(f"{k}={v}" for k, v in self.keys.items())
        label = own or f"env.id={self.cfg.env.id} (the config)"
        return f"stage {self.index}/{n}: {label} -> {self.run_dir}"


def load_curriculum(path: str, overrides: list[str]) -> tuple[RLConfig, list[Stage]]:
    """The config ``path`` with ``overrides`` (checked as ``load_rl_config`` checks it) and,
    when it has a non-empty ``curriculum:``, its stages, the config itself last; else [].

    Raises:
        ConfigError: a bad curriculum or stage, in one line naming the stage and key.
    """
    data = apply_overrides(read_yaml(path), overrides)
    raw = data.pop(CURRICULUM_KEY, None)
    cfg = from_dict(RLConfig, copy.deepcopy(data))
    check_names(cfg)
    if raw is None or raw == []:
        return cfg, []
    if not isinstance(raw, list):
        raise ConfigError(
            f"{CURRICULUM_KEY}: expected a list of stages (mappings of override keys, e.g. "
            f"{{env.id: mnemo/Recall-D16-v0}}), got {raw!r}"
        )
    from mnemo.agents.rl.train import default_run_dir

    out = default_run_dir(cfg)
    stages: list[Stage] = []
    init_from = cfg.run.init_from
    for index, keys in enumerate(raw, 1):
        stage_dir = out / STAGES_DIR / str(index)
        stages.append(_stage(data, index, keys, stage_dir, init_from))
        init_from = str(stage_dir)
    stages.append(_stage(data, len(raw) + 1, {}, out, init_from))
    return stages[-1].cfg, stages


def _stage(
    data: dict[str, Any], index: int, keys: Any, run_dir: Path, init_from: str | None
) -> Stage:
    where = f"{CURRICULUM_KEY} stage {index}"
    if not isinstance(keys, dict):
        raise ConfigError(f"{where}: expected a mapping of override keys, got {keys!r}")
    stage = copy.deepcopy(data)
    for key, value in keys.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"{where}: key {key!r} must look like section.key")
        if key == CURRICULUM_KEY:
            raise ConfigError(f"{where}: a stage cannot hold a {CURRICULUM_KEY} of its own")
        if key in SET_BY_CURRICULUM:
            raise ConfigError(
                f"{where}: {key} is the curriculum's to set (stage k runs in "
                f"<run.dir>/{STAGES_DIR}/<k>, from the weights of stage k - 1)"
            )
        path = key.split(".")
        if isinstance(value, dict) and _is_section(path):  # `env: {id: ...}` as a child config
            value = merge(_get(stage, path), value)
        set_key(stage, path, read_number(value), f"{where}: {key}")
    set_key(stage, ["run", "dir"], str(run_dir), where)
    set_key(stage, ["run", "init_from"], init_from, where)
    try:
        cfg = from_dict(RLConfig, stage)
        check_names(cfg)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return Stage(index, cfg, dict(keys))


def _is_section(path: list[str]) -> bool:
    """Whether ``path`` names a config section (``env``, ``ppo``), not a value."""
    tp: Any = RLConfig
    for part in path:
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints:
            return False
        tp = hints[part]
    return dataclasses.is_dataclass(tp)


def _get(data: dict[str, Any], path: list[str]) -> dict[str, Any]:
    for part in path:
        data = data.get(part) if isinstance(data.get(part), dict) else {}
    return data


def run_curriculum(stages: list[Stage], check: bool = False) -> int:
    """Train every stage not finished yet, in order; returns the exit code (1: an earlier
    stage missed its target). ``check``: print the stages and the final config, train nothing.
    """
    n = len(stages)
    if check:
        print("\n".join(s.header(n) for s in stages))
        print(describe(stages[-1].cfg), end="")
        return 0
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"{CURRICULUM_KEY}: not supported under torchrun; train each stage with its own "
            "`torchrun ... mnemo train` and run.init_from=<the previous stage's run>"
        )
    out = stages[-1].run_dir
    records = _records(stages, out)
    _write(records, out)
    for stage, record in zip(stages, records, strict=True):
        if record["finished"]:
            print(f"{stage.header(n)}: finished earlier ({record['steps']} steps), skipped")
            continue
        failed = _train_stage(stage, record, n, records, out)
        if failed:
            print(f"error: {failed}", file=sys.stderr)
            return 1
    print(summary(records, out))
    return 0


def _train_stage(
    stage: Stage, record: dict[str, Any], n: int, records: list[dict[str, Any]], out: Path
) -> str | None:
    """Train (or resume) one stage and record it; returns the line to stop with, if any."""
    from mnemo.agents.rl.train import train

    resume = None if stage.cfg.run.overwrite else _resumable(stage)
    start = f", resuming at step {resume['step']}" if resume else ""
    if stage.cfg.run.init_from and not resume:
        start += f", warm start from {stage.cfg.run.init_from}"
    print(stage.header(n) + start, flush=True)
    if resume:
        record["steps"] = int(resume["step"])
    t0 = time.perf_counter()
    try:
        result = train(stage.cfg, resume=resume, run_dir=stage.run_dir if resume else None)
    except KeyboardInterrupt:  # stopped after writing a checkpoint: record how far it got
        record["steps"] = _checkpoint_step(stage, record["steps"])
        raise
    finally:  # an interrupted stage's time counts too
        record["wall_s"] = round(record["wall_s"] + time.perf_counter() - t0, 3)
        _write(records, out)
    print(result.summary())
    ppo = stage.cfg.ppo
    reached = result.steps_to_target is not None
    has_target = bool(ppo.target_success) or ppo.target_return is not None
    record.update(
        steps=result.steps,
        steps_to_target=result.steps_to_target,
        target_reached=reached if has_target else None,
        final_success=_number(result.final_success),
        finished=reached or not has_target or stage.index == n,
    )
    _write(records, out)
    if record["finished"]:
        return None
    target = (
        f"ppo.target_success={ppo.target_success}"
        if ppo.target_success
        else f"ppo.target_return={ppo.target_return}"
    )
    best = max((s for _, s in result.history if s == s), default=float("nan"))
    return (
        f"{CURRICULUM_KEY} stage {stage.index}/{n} ({stage.run_dir}) did not reach {target} in "
        f"{result.steps} env steps (success {result.final_success:.3f} at the end, best update "
        f"{best:.3f}); stage {stage.index + 1} not started: give the stage more ppo.total_steps "
        "and rerun the command to continue it"
    )


def _resumable(stage: Stage) -> dict[str, Any] | None:
    """The checkpoint an interrupted stage left, checked as ``--resume`` checks one."""
    from mnemo.agents.checkpoint import check_frozen, load_checkpoint
    from mnemo.agents.rl.train import FROZEN

    last = stage.run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    ckpt = load_checkpoint(last)
    try:
        check_frozen(ckpt["config"], to_dict(stage.cfg), FROZEN, to_dict(RLConfig()))
    except ConfigError as e:
        raise ConfigError(f"{CURRICULUM_KEY} stage {stage.index} ({stage.run_dir}): {e}") from None
    return ckpt


def _checkpoint_step(stage: Stage, default: int) -> int:
    """The env step of the stage's last checkpoint, or ``default`` if it has none readable."""
    from mnemo.agents.checkpoint import load_checkpoint

    last = stage.run_dir / "checkpoints" / "last.pt"
    try:
        return int(load_checkpoint(last)["step"]) if last.is_file() else default
    except Exception:  # a record is not worth a second error while stopping
        return default


def _fresh(stage: Stage) -> dict[str, Any]:
    return {
        "stage": stage.index,
        "run_dir": str(stage.run_dir),
        "env_id": stage.cfg.env.id,
        "env_kwargs": stage.cfg.env.kwargs,
        "keys": stage.keys,
        "finished": False,
        "steps": 0,
        "steps_to_target": None,
        "target_reached": None,
        "final_success": None,
        "wall_s": 0.0,
        "config": to_dict(stage.cfg),
    }


def _records(stages: list[Stage], out: Path) -> list[dict[str, Any]]:
    """One record per stage: what ``out`` holds of each, or a fresh one.

    Raises:
        ConfigError: ``out`` holds another run, another curriculum, or a stage that finished
            with another config.
    """
    fresh = [_fresh(s) for s in stages]
    if stages[-1].cfg.run.overwrite:
        return fresh
    path = out / CURRICULUM_FILE
    again = "give another run.dir, or start over in it with run.overwrite=true"
    if not path.is_file():
        held = [s.run_dir for s in stages if (s.run_dir / "checkpoints" / "last.pt").exists()]
        if held:
            raise ConfigError(f"{held[0]} holds a run that is not this curriculum's: {again}")
        return fresh
    try:
        old = json.loads(path.read_text()).get("stages")
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"{path}: unreadable ({type(e).__name__}): {again}") from None
    if not isinstance(old, list) or not all(isinstance(r, dict) for r in old):
        raise ConfigError(f"{path}: not a curriculum record (no list of stages): {again}")
    if len(old) != len(stages):
        raise ConfigError(
            f"{out} holds a curriculum of {len(old)} stages, this config has {len(stages)}: {again}"
        )
    for new, was in zip(fresh, old, strict=True):
        if not was.get("finished"):
            new["wall_s"] = float(was.get("wall_s") or 0.0)
            continue
        diff = _differences(was.get("config", {}), new["config"])
        if diff:
            raise ConfigError(
                f"{out}: stage {new['stage']} finished with another config "
                f"({'; '.join(diff[:3])}): {again}"
            )
        new.update({k: v for k, v in was.items() if k != "config"})
    return fresh


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    from mnemo.agents.experiments.run_files import config_differences

    return [
        d
        for d in config_differences(old, new)
        if d.startswith("run.init_from:") or not d.startswith(RESULT_NEUTRAL)
    ]


def _number(x: float | None) -> float | None:
    return None if x is None or x != x else x


def _write(records: list[dict[str, Any]], out: Path) -> None:
    from mnemo.agents.experiments.run_files import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    total = {
        "total_steps": sum(r["steps"] for r in records),
        "total_wall_s": round(sum(r["wall_s"] for r in records), 3),
    }
    write_json_atomic({"stages": records, **total}, out / CURRICULUM_FILE)


def summary(records: list[dict[str, Any]], out: Path) -> str:
    """One line: every stage's env, env steps and wall time, then the totals."""
    parts = []
    for r in records:
        target = f", target at {r['steps_to_target']}" if r["steps_to_target"] else ""
        kwargs = "".join(f" {k}={v}" for k, v in (r.get("env_kwargs") or {}).items())
        parts.append(
            f"stage {r['stage']} {r['env_id']}{kwargs}: {r['steps']} steps{target}, "
            f"{r['wall_s']:.1f} s"
        )
    steps, wall = sum(r["steps"] for r in records), sum(r["wall_s"] for r in records)
    return f"curriculum {out}: {'; '.join(parts)}; total {steps} steps, {wall:.1f} s"
