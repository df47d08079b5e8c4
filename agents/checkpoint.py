"""Checkpoints written atomically (a crash mid-write never leaves a half-written file), and
the per-rank pieces a data-parallel run needs to resume exactly: RNG states and a world size.

Opening a checkpoint runs no code from it: it is read with ``torch.load(weights_only=True)``,
so it may hold only tensors and plain containers (dicts, lists, tuples, numbers, strings,
bytes); everything mnemo writes is such. The one exception, the pickled gymnasium envs of an
unbatched PPO run, is unpickled by ``safe_unpickle``, which accepts only env, space and numpy
classes. Every record of the file carries the CRC-32 ``torch.save`` writes; ``load_checkpoint``
verifies them, so a damaged file is refused rather than resumed (and then saved over).
"""

from __future__ import annotations

import glob
import io
import os
import pickle
import random
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from mnemo.agents import distributed
from mnemo.agents.checkpoint_path import checkpoint_file
from mnemo.agents.errors import USER_OS_ERRNOS, CheckpointError, ConfigError, UserError


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """``write(file)`` into a temp file in ``path``'s folder, fsync, then rename over ``path``:
    a crash mid-write never leaves a half-written file behind."""
    path = Path(path)
    kept = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a save that was killed (kill -9 skips cleanup)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _cannot_write(path, e, kept) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600; a file gets what open() gives
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_in(e)
        if cause is not None and cause.errno in USER_OS_ERRNOS:
            raise _cannot_write(path, cause, kept) from None
        raise
    return path


def _os_error_in(e: BaseException | None) -> OSError | None:
    """The ``OSError`` in ``e``'s chain: torch's writer turns a full disk into a RuntimeError
    ("unexpected pos") whose context is the ``OSError``."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


def _cannot_write(path: Path, e: OSError, kept: bool) -> Exception:
    """A full disk or a folder the user cannot write to, as one line naming ``path``; any
    other ``OSError`` as it is (a bug in mnemo, with its traceback)."""
    if e.errno not in USER_OS_ERRNOS:
        return e
    reason = (e.strerror or str(e)).lower()
    where = f" ({e.filename})" if e.filename and Path(e.filename) != path else ""
    old = f"the previous {path.name} is kept" if kept else "nothing was written"
    return UserError(f"cannot write {path}: {reason}{where}; {old}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    return write_atomic(path, lambda f: torch.save(obj, f))


_LEGACY_NUMPY = (np.ndarray, np.dtype, np.dtypes.UInt32DType)
"""What the numpy RNG state of checkpoints written before it was stored as a tensor needs."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict (a run dir means its checkpoints/last.pt), running no code
    from it.

    Raises ``CheckpointError`` for a missing, damaged, unreadable or unsafe file, and for one
    that is not a dict.
    """
    path = checkpoint_file(path)
    _verify_crc(path)
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, any version
    try:
        with torch.serialization.safe_globals([reconstruct, *_LEGACY_NUMPY]):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only met an object it will not build
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} is not a readable mnemo checkpoint: it holds an object that is not plain "
            f"data{what}; refused, nothing in it was run"
        ) from None
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(
            f"{path} is not a readable mnemo checkpoint ({type(e).__name__})"
        ) from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a mnemo checkpoint (it holds no dict)")
    return ckpt


LM_KIND = "mnemo-lm"
"""``ckpt["kind"]`` of a checkpoint ``mnemo lm train`` wrote; a PPO checkpoint has none."""


def check_head(ckpt: dict[str, Any], path: str | Path, lm: bool, use_instead: str) -> None:
    """Refuse, in one line, a checkpoint of the other head (``lm``: an LM one is wanted) or
    one that lacks its config or weights. ``use_instead`` is the command for the other head's
    checkpoint, e.g. ``"mnemo lm eval"``."""
    is_lm = ckpt.get("kind") == LM_KIND
    if is_lm != lm:
        what = "is a language-model run" if is_lm else "is not a language-model checkpoint (it is"
        what += "" if is_lm else " an RL run, made by `mnemo train`)"
        raise CheckpointError(f"{path} {what}; use `{use_instead}`")
    for key in ("config", "model"):
        if not isinstance(ckpt.get(key), dict):
            raise CheckpointError(f"{path} is not a complete mnemo checkpoint: it has no {key}")


def load_weights(module: torch.nn.Module, weights: Any, what: str) -> None:
    """``module.load_state_dict(weights)``, one line naming ``what`` where they do not fit."""
    try:
        module.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{what}: its weights do not fit this model ({first})") from None


def _verify_crc(path: Path) -> None:
    """Refuse a file whose records fail the CRC-32 ``torch.save`` stored with them."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(
            f"{path} is not a readable mnemo checkpoint ({type(e).__name__})"
        ) from None
    if bad is not None:
        raise CheckpointError(
            f"{path} is damaged: its record {bad} fails its CRC-32 checksum (the file changed "
            "after it was written); use a backup or start the run again"
        )


def check_folder(path: str | Path, key: str) -> Path:
    """``path`` with ``~`` expanded, refused in one line if something other than a folder is
    there (a file, a FIFO): ``key`` names the setting, e.g. ``run.dir``."""
    if not str(path).strip():  # Path("") is ".": an empty value would write into the cwd
        raise UserError(f"{key} is empty; give a folder (new or existing)")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{key}: {path} is a file, not a folder; give a folder (new or existing)")
    return path


def make_folder(path: str | Path, key: str) -> Path:
    """``check_folder``, then the folder created (with its parents), refused in one line naming
    ``key`` if it cannot be: forbidden, read-only, a full disk, or a place where folders cannot
    be made at all (``/proc/x`` gives ENOENT however many parents are made). Only this mkdir is
    covered: the same errno elsewhere stays a bug with its traceback."""
    folder = check_folder(path, key)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{key}: cannot create the folder {folder}: {e.strerror or e}") from None
    return folder


def run_dir_of(path: str | Path) -> Path:
    """The run folder of ``--resume PATH``: PATH itself if a folder, else the folder beside or
    above the file that holds ``checkpoints/`` (RUN for RUN/checkpoints/last.pt, RUN/x.pt and
    RUN/backups/x.pt), so a resume writes into the run it continues."""
    path = Path(path).expanduser()
    if path.is_dir():
        return path
    for folder in (path.parent, path.parent.parent):
        if folder.name != "checkpoints" and (folder / "checkpoints").is_dir():
            return folder
    if path.parent.name == "checkpoints":
        return path.parent.parent
    raise CheckpointError(
        f"--resume {path}: no run folder holds it (no checkpoints/ beside it or one level up); "
        "copy it to RUN/checkpoints/last.pt and give --resume RUN"
    )


def resume_run_dir(
    path: str | Path, ckpt: dict[str, Any], run_dir: str | None, config_file: str | None
) -> Path:
    """The folder ``--resume PATH`` continues in (``run_dir_of``), refusing a different
    ``run.dir`` that the user gave with it, which the resume would silently ignore.

    ``run_dir`` is the resumed config's: the checkpoint's own (then not the user's: the folder
    may have moved since) unless ``config_file`` or an override set it.
    """
    folder = run_dir_of(path)
    saved = (ckpt.get("config") or {}).get("run", {}).get("dir")
    given = config_file is not None or run_dir != saved
    if given and run_dir and Path(run_dir).expanduser().resolve() != folder.resolve():
        raise UserError(
            f"run.dir={run_dir}: --resume continues {folder} in place; leave run.dir out "
            f"(to continue elsewhere, copy {folder} there and --resume the copy)"
        )
    return folder


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; a core's ``options`` stay one value."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "options":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_frozen(
    saved: dict[str, Any], now: dict[str, Any], frozen: tuple[str, ...], defaults: dict[str, Any]
) -> None:
    """Fail in one line if config ``now`` changes a ``frozen`` key (or a key under one) of the
    checkpoint's config ``saved``: the keys that fix the model's shapes, the data, the envs or
    the random streams, which a resume must keep to continue the same run.

    A key the saved config lacks (its run predates the key) counts as its value in
    ``defaults`` (the config class's defaults, as a dict).
    """
    old, new, default = _flat(saved), _flat(now), _flat(defaults)
    for key in sorted(old.keys() | new.keys()):
        if not any(key == f or key.startswith(f + ".") for f in frozen):
            continue
        was = old.get(key, default.get(key))
        if was != new.get(key):
            raise ConfigError(
                f"cannot resume with {key} changed (checkpoint: {was!r}, now: "
                f"{new.get(key)!r}); {', '.join(frozen)} must stay as they were"
            )


def check_steps_left(ckpt: dict[str, Any], total: int, key: str) -> None:
    """Fail in one line if a resume would train nothing: ``total`` (the config's ``key``) is at
    or below the steps the checkpoint has done. Without this the run "finished" at once and
    reported the checkpoint's numbers as its own (an LM's bits per byte as nan)."""
    done = int(ckpt.get("step", 0))
    if total <= done:
        raise ConfigError(
            f"{key}={total}: the checkpoint has already trained {done} steps, so this resume "
            f"would train nothing; give {key} above {done} to continue it"
        )


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in nested dicts, lists and tuples moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple core state
        return type(obj)(*(to_cpu(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rng_state(device: torch.device | str = "cpu") -> dict[str, Any]:
    """This process's torch, numpy and Python RNG states (and the CUDA one on a GPU)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # Plain data, not numpy's tuple with an ndarray: weights_only loads it.
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.device(device).type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict[str, Any], device: torch.device | str = "cpu") -> None:
    torch.set_rng_state(st["torch"])
    kind, keys, *rest = st["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(st["python"])
    if "cuda" in st and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(st["cuda"], device)


def save_with_ranks(shared: Callable[[], dict[str, Any]], state: Any, path: Path) -> None:
    """Checkpoint a data-parallel run: rank 0 writes ``shared()`` plus every rank's ``state``
    as ``"ranks"``. A collective; it returns once the file is on disk, so no rank can read an
    older checkpoint after it."""
    ranks = distributed.gather_to_main(to_cpu(state))
    if distributed.is_main():
        save_atomic({**shared(), "ranks": ranks}, path)
    distributed.barrier()


def this_rank_state(ckpt: dict[str, Any]) -> Any:
    """This rank's entry of ``ckpt["ranks"]``; a different world size fails in one line."""
    ranks = ckpt["ranks"]
    world = distributed.world_size()
    if len(ranks) != world:
        how = f"torchrun --nproc_per_node {len(ranks)}" if len(ranks) > 1 else "one process"
        raise CheckpointError(
            f"the checkpoint was written by {len(ranks)} data-parallel rank(s) and this run has "
            f"{world}; resume it with {how}"
        )
    return ranks[distributed.rank()]


_SAFE_NUMPY = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
}
_ENV_MODULES = ("mnemo.envs.", "minigrid.", "gymnasium.", "numpy.random.")


def _is_env_static_method(module: str, name: str) -> bool:
    """Whether ``module.name`` is ``Cls.attr``, a static method of an env or space class:
    minigrid's envs keep one as their mission space's ``mission_func``. Those build mission
    strings; the module's other functions and the classes' other methods stay refused."""
    import inspect
    import sys

    import gymnasium as gym

    owner_name, _, attr = name.partition(".")
    owner = getattr(sys.modules.get(module), owner_name, None)
    if "." in attr or not isinstance(owner, type):
        return False
    if not issubclass(owner, (gym.Env, gym.spaces.Space)):
        return False
    return isinstance(inspect.getattr_static(owner, attr, None), staticmethod)


class _EnvUnpickler(pickle.Unpickler):
    """Unpickles envs and nothing else: classes from env, space and numpy modules (built with
    ``__new__`` and their state, or their constructor), the static methods of their env and
    space classes, mnemo.envs functions, and numpy's array and RNG rebuilders. Anything else
    (``os.system``, ``builtins.eval``...) is refused before it can run."""

    def __init__(self, data: bytes, trusted: tuple[str, ...]) -> None:
        super().__init__(io.BytesIO(data))
        self.trusted = _ENV_MODULES + trusted

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_NUMPY:
            return super().find_class(module, name)
        if (module + ".").startswith(self.trusted):
            found = super().find_class(module, name)
            if isinstance(found, type) or module.startswith("mnemo.envs."):
                return found
            if _is_env_static_method(module, name):  # minigrid's Env._gen_mission, its missions
                return found
        raise CheckpointError(
            f"the checkpoint's env state holds {module}.{name}, which is not part of an env; "
            "refused, nothing in it was run"
        )


def safe_unpickle(data: bytes, trusted: tuple[str, ...] = ()) -> Any:
    """``pickle.loads(data)`` for pickled envs, refusing any other global (see
    ``_EnvUnpickler``); ``trusted`` adds module prefixes (an outside env's package, ``"pkg."``)."""
    try:
        return _EnvUnpickler(data, trusted).load()
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(
            f"the checkpoint's env state is unreadable ({type(e).__name__})"
        ) from e
