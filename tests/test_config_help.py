"""``mnemo train --help`` lists every config key with its type, default and doc (the fields'
docstrings); ``mnemo cores NAME`` a core's options the same way."""

from __future__ import annotations

import dataclasses

import pytest

from mnemo import memory
from mnemo.agents.cli import main
from mnemo.agents.config_help import config_keys, first_sentence
from mnemo.agents.lm.config import LMConfig
from mnemo.agents.rl.config import RLConfig
from mnemo.memory.registry import core_options_type


@pytest.mark.parametrize("cls", [RLConfig, LMConfig])
def test_every_config_key_has_a_doc(cls: type) -> None:
    keys = config_keys(cls)
    assert len(keys) > 20
    assert [k.key for k in keys if not k.doc] == []


def test_every_core_option_has_a_doc() -> None:
    for name in memory.core_names():
        keys = config_keys(core_options_type(name))
        assert [k.key for k in keys if not k.doc] == [], name


def test_a_subclass_keeps_its_bases_docs_and_its_own_defaults() -> None:
    keys = {k.key: k for k in config_keys(LMConfig)}
    assert keys["run.log_every"].default == 20  # the LM's own default
    assert keys["run.overwrite"].doc.startswith("Start a fresh run")  # the shared section's
    assert keys["core.d_model"].type == "int"


def test_the_first_sentence_is_the_one_line_doc() -> None:
    assert first_sentence("Extra kwargs,\n e.g. ``{delay: 64}``. More.") == (
        "Extra kwargs, e.g. `{delay: 64}`."
    )


def test_train_help_lists_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for k in config_keys(RLConfig):
        if k.key != "core.options":
            assert f"  {k.key}: {k.type} = {k.default!r}\n" in out
    assert "ppo.lr: float = 0.001\n      Adam learning rate." in out
    assert "mnemo cores NAME" in out


def test_cores_name_lists_its_options_with_preset_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["cores", "gtrxl"]) == 0
    out = capsys.readouterr().out
    assert "core.gated: bool = True" in out  # gtrxl's preset, not the family's default
    assert "core.pre_ln" not in out  # inert under gates: not an option here
    fields = {f.name for f in dataclasses.fields(core_options_type("gtrxl"))}
    assert "pre_ln" in fields
    assert main(["cores", "nope"]) == 2
    assert "valid cores: " in capsys.readouterr().err
