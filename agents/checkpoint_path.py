"""The file a checkpoint argument names (``mnemo eval``, ``mnemo lm eval``/``sample``, either
``--resume``), refusing in one line what can hold no checkpoint."""

from __future__ import annotations

from pathlib import Path

from mnemo.agents.errors import CheckpointError
from mnemo.agents.file_kind import special_kind

GIVE = "give a checkpoint file or a run folder (one holding checkpoints/last.pt)"


def checkpoint_file(path: str | Path) -> Path:
    """The file ``path`` names (a run folder: its checkpoints/last.pt).

    Raises ``CheckpointError`` for an empty path (``Path`` reads it as the cwd), a folder
    without checkpoints/, a device, FIFO or socket, a missing file and one that is no zip
    archive (every ``torch.save`` file is one).
    """
    if not str(path).strip():
        raise CheckpointError(f"the checkpoint path is empty; {GIVE}")
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "checkpoints").is_dir():
            raise CheckpointError(
                f"{path} is a folder but not a run folder (no checkpoints/ in it); {GIVE}"
            )
        path = path / "checkpoints" / "last.pt"
    if path.exists() and not path.is_file():
        what = special_kind(path.stat().st_mode) or "a folder"
        raise CheckpointError(f"{path} is not a checkpoint file (it is {what}); {GIVE}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return path  # the loader says why it cannot be read
    if head != b"PK\x03\x04":
        raise CheckpointError(
            f"{path} is not a readable mnemo checkpoint (not a file torch.save wrote); {GIVE}"
        )
    return path
