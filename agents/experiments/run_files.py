"""What a ``mnemo compare`` run folder holds, and which runs are still to do.

A finished run has a ``result.json`` (written atomically, with the run's config); a
half-finished one has ``checkpoints/last.pt``. ``pending`` refuses a folder that holds another
config's run (one table never mixes step budgets; a half-finished run is never deleted for
another), and reruns a run whose result file cannot be read, naming the file.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnemo.agents.config_loader import ConfigError, from_dict, to_dict
from mnemo.agents.errors import UserError
from mnemo.agents.rl.config import RLConfig

if TYPE_CHECKING:
    from mnemo.agents.experiments.compare import RunSpec

RESULT_KEYS = ("core", "env", "seed", "steps", "wall_s", "sps", "train_success", "eval_success")
RESULT_KEYS += ("steps_to_90", "run_dir", "history")


class ResultError(UserError):
    """A result file that is not one (truncated, empty, ``{}``); the message names the file."""


def write_json_atomic(obj: Any, path: Path) -> None:
    from mnemo.agents.checkpoint import write_atomic

    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def resumable_checkpoint(run_dir: Path, cfg: RLConfig) -> dict[str, Any] | None:
    """The checkpoint an interrupted run left in ``run_dir``, if it was this very run."""
    ckpt = _last_checkpoint(run_dir)
    same = ckpt is not None and not config_differences(ckpt["config"], to_dict(cfg))
    return ckpt if same else None


def _last_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir``'s checkpoints/last.pt if it is there, readable and has a config."""
    from mnemo.agents.checkpoint import load_checkpoint

    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        return None
    try:
        ckpt = load_checkpoint(last)
    except Exception:  # unreadable: the run starts over, which loses nothing that was usable
        return None
    return ckpt if isinstance(ckpt.get("config"), dict) else None


def load_result(path: Path) -> dict[str, Any]:
    """A run's result file, NaN where a value is not available.

    Raises:
        ResultError: the file is unreadable, not JSON, or lacks a result's keys (names it).
    """
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ResultError(f"{path}: unreadable result file ({e})") from e
    missing = [k for k in RESULT_KEYS if k not in r] if isinstance(r, dict) else list(RESULT_KEYS)
    if missing:
        raise ResultError(f"{path}: not a complete result file (no {', '.join(missing[:3])})")
    r["history"] = [(s, float("nan") if v is None else v) for s, v in r["history"]]
    for key in ("train_success", "eval_success"):
        if r.get(key) is None:
            r[key] = float("nan")
    r.setdefault("eval_return", float("nan"))  # result files from before it was recorded
    return r


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "options":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every key two run configs disagree on (defaults filled in, so a
    config written before a key existed compares equal to one with its default)."""
    a, b = _flat(_filled(old)), _flat(_filled(new))
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]


def _filled(config: dict[str, Any]) -> dict[str, Any]:
    try:
        return to_dict(from_dict(RLConfig, copy.deepcopy(config)))
    except ConfigError:  # a key mnemo no longer has: compared as written
        return config


def recorded_config(spec: RunSpec) -> tuple[str, dict[str, Any]] | None:
    """What ``spec``'s folder already holds: (its file, the config it was run with)."""
    if spec.result_path.is_file():
        r = load_result(spec.result_path)
        return (str(spec.result_path), r["config"]) if "config" in r else None
    ckpt = _last_checkpoint(Path(spec.run_dir))
    return None if ckpt is None else ("checkpoints/last.pt", ckpt["config"])


def pending(specs: list[RunSpec]) -> list[RunSpec]:
    """The specs still to run. An unreadable result file is reported (stderr) and removed, so
    that run alone runs again.

    Raises:
        ConfigError: a run folder holds a result or checkpoint of another config (another
            ``--steps``, another override): one table must not mix them, and a half-finished
            run must not be deleted.
    """
    todo = []
    for spec in specs:
        try:
            recorded = recorded_config(spec)
        except ResultError as e:
            print(f"warning: {e}; running that run again", file=sys.stderr)
            spec.result_path.unlink()
            recorded = recorded_config(spec)
        if recorded is not None:
            diff = config_differences(recorded[1], spec.config)
            if diff:
                raise ConfigError(
                    f"{spec.run_dir} holds a run of another config ({'; '.join(diff[:3])}, in "
                    f"{Path(recorded[0]).name}): give another --out, or delete that folder"
                )
        if not spec.result_path.is_file():
            todo.append(spec)
    return todo
