"""What a training run prints while it runs: a table on a terminal, plain lines in a log file.

Every ``run.print_every`` iterations (PPO updates, LM optimizer steps) and at the end, the run
loop hands ``Console`` a report: ``{"section/name": value}``, SB3's layout (``rollout/``,
``train/``, ``time/``). On a terminal with ``run.progress=true`` it is drawn as SB3 draws its
logger output, a boxed table printed above the progress bar; otherwise (``run.progress=false``,
or stdout a file or a pipe) as one ``name=value`` line per report, which ``grep`` and ``awk``
read and which a log file keeps without carriage returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TextIO

__all__ = ["Console", "format_line", "format_table", "format_value", "wants_bar"]

Report = Mapping[str, float | int | str]


def wants_bar(progress: bool, stream: TextIO) -> bool:
    """Draw for a terminal (a bar, tables) only when asked to and ``stream`` is one: in a file,
    a bar is a blob of carriage returns."""
    return progress and stream.isatty()


def format_value(value: float | int | str) -> str:
    """Numbers as a person reads them: NaN as ``n/a``, whole numbers and rates (>= 1000) as
    whole numbers, else 4 significant digits."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value.is_integer() or abs(value) >= 1000:
            return f"{value:.0f}"
        return f"{value:.4g}"
    return str(value)


def format_table(report: Report) -> str:
    """SB3's table: one row per section (in order of first appearance), its names beneath it."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for key, value in report.items():
        head, _, name = key.rpartition("/")
        sections.setdefault(head, []).append((f"   {name}", format_value(value)))
    rows = [row for head, named in sections.items() for row in [(f"{head}/", ""), *named]]
    left = max(len(k) for k, _ in rows)
    right = max(len(v) for _, v in rows)
    rule = "-" * (left + right + 7)
    body = [f"| {k:<{left}} | {v:<{right}} |" for k, v in rows]
    return "\n".join([rule, *body, rule])


def format_line(report: Report) -> str:
    """One line of ``name=value`` pairs: section prefixes dropped where the name alone is
    unique (``bits_per_byte`` of ``train/`` and ``val/`` keep theirs)."""
    names = [k.rpartition("/")[2] for k in report]
    keys = [n if names.count(n) == 1 else k for k, n in zip(report, names, strict=True)]
    return " ".join(f"{k}={format_value(v)}" for k, v in zip(keys, report.values(), strict=True))


class Console:
    """Prints reports as tables (``table=True``) or lines, every ``every`` iterations and at the
    end (``every`` 0: never)."""

    def __init__(self, every: int, table: bool, write: Callable[[str], None]) -> None:
        self.every = every
        self.table = table
        self.write = write

    def due(self, iteration: int) -> bool:
        return self.every > 0 and iteration % self.every == 0

    def show(self, report: Report) -> None:
        self.write(format_table(report) if self.table else format_line(report))
