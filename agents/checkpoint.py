"""Checkpoints written atomically (a crash mid-write never leaves a half-written file), and
the per-rank pieces a data-parallel run needs to resume exactly: RNG states and a world size."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from mnemo.agents import distributed
from mnemo.agents.errors import CheckpointError


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """``write(file)`` into a temp file in ``path``'s folder, fsync, then rename over ``path``:
    a crash mid-write never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically."""
    return write_atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict (a run dir means its checkpoints/last.pt).

    Raises ``CheckpointError`` for a missing or unreadable file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(
            f"{path} is not a readable mnemo checkpoint ({type(e).__name__})"
        ) from e


def run_dir_of(path: str | Path) -> Path:
    """The run folder of ``--resume PATH``: PATH itself, or RUN/checkpoints/last.pt's RUN."""
    path = Path(path)
    return path.parent.parent if path.suffix == ".pt" else path


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
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.device(device).type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict[str, Any], device: torch.device | str = "cpu") -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
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
