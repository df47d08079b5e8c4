"""What a path is when it is neither a regular file nor a folder, for the one-line refusals of
data paths and checkpoints: reading a FIFO or a device would block or never end."""

from __future__ import annotations

import stat

_SPECIAL = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_kind(mode: int) -> str | None:
    """``a FIFO (named pipe)``, ``a socket``, ``a character device`` or ``a block device`` for
    the ``st_mode`` of one, else None."""
    for test, what in _SPECIAL:
        if test(mode):
            return what
    return None
