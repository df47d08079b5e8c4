"""The console's two forms: SB3's table on a terminal, ``name=value`` lines in a log."""

from __future__ import annotations

import io

from mnemo.agents.console import format_line, format_table, format_value, wants_bar

REPORT = {
    "time/steps": "4096/8192",
    "rollout/ep_return": 0.41234,
    "rollout/success": float("nan"),
    "time/SPS": 2450.7,
    "train/policy": -0.0123456,
}


def test_values_read_as_a_person_reads_them() -> None:
    shown = [format_value(v) for v in (float("nan"), 3.0, 2450.7, 0.41234, 12, "a/b")]
    assert shown == ["n/a", "3", "2451", "0.4123", "12", "a/b"]


def test_table_groups_sections_in_order_of_first_appearance() -> None:
    lines = format_table(REPORT).splitlines()
    assert lines[0] == lines[-1] and set(lines[0]) == {"-"}
    names = [line.split("|")[1].strip() for line in lines[1:-1]]
    assert names == [
        "time/",
        "steps",
        "SPS",
        "rollout/",
        "ep_return",
        "success",
        "train/",
        "policy",
    ]
    assert len({len(line) for line in lines}) == 1  # aligned


def test_line_is_name_value_pairs() -> None:
    assert format_line(REPORT) == (
        "steps=4096/8192 ep_return=0.4123 success=n/a SPS=2451 policy=-0.01235"
    )


def test_line_keeps_the_section_of_a_name_two_sections_share() -> None:
    line = format_line({"train/bits_per_byte": 2.0, "val/bits_per_byte": 2.5, "train/lr": 0.1})
    assert line == "train/bits_per_byte=2 val/bits_per_byte=2.5 lr=0.1"


def test_no_bar_or_table_into_a_file() -> None:
    assert not wants_bar(True, io.StringIO()) and not wants_bar(False, io.StringIO())
