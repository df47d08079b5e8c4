"""Fuzz the config loader and the CLI: bad input is one clear line and exit code 2, never a
traceback; good input passes ``mnemo train --check``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.cli import main

KEYS = [
    "env.id",
    "env.num_envs",
    "env.batched",
    "env.kwargs",
    "env.kwargs.delay",
    "env.kwargs.num_symbols",
    "core.name",
    "core.d_model",
    "core.num_layers",
    "core.mem_len",
    "agent.encoder_hidden",
    "agent.recon_coef",
    "ppo.total_steps",
    "ppo.rollout_len",
    "ppo.bptt_len",
    "ppo.lr",
    "ppo.gamma",
    "ppo.minibatches",
    "run.dir",
    "run.checkpoint_every",
    "device",
    "seed",
    "nope",
    "ppo",
    "ppo.nope.deeper",
]
VALUES = st.one_of(
    st.integers(-5, 5),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", "abc", "[1, 2]", "{a: 1}", "null", "lstm", "gtrxl", "cuda", "1e6", "-0"]),
    st.text(max_size=8),
)


def override(key: str, value: object) -> str:
    return f"{key}={value}"


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pairs=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=3))
def test_fuzzed_overrides_never_traceback(
    pairs: list[tuple[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [override(k, v) for k, v in pairs]
    code = main(["train", "--check", "configs/recall_lstm.yaml", *args])
    out, err = capsys.readouterr()
    assert code in (0, 2), (args, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
    else:
        assert "env:" in out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=200))
def test_fuzzed_yaml_files(text: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "c.yaml"
    path.write_text(text)
    code = main(["train", "--check", str(path)])
    assert code in (0, 2)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--check", "configs/recall_lstm.yaml", "env.kwargs.delay=-1"],
        ["train", "--check", "configs/recall_lstm.yaml", "core.d_model=0"],
        ["train", "--check", "configs/recall_lstm.yaml", "env.num_envs=-3"],
        ["train", "--check", "configs/recall_lstm.yaml", "core.num_layers=0"],
        ["train", "--check", "missing.yaml"],
        ["train", "--resume", "no/such/run"],
        ["eval", "no/such/checkpoint.pt"],
    ],
)
def test_named_bad_inputs(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
