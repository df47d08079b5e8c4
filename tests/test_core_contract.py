"""The memory-core contract, run over every registered core.

A new core is tested by registering it: nothing here names a core, except the small-size
options below that keep the suite fast.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mnemo import memory
from mnemo.memory.base import State, index_state, tree_leaves

D = 16
B = 4
T = 21
ATOL = 1e-5

# Small settings so that every core's window/chunk logic is exercised within T steps.
SMALL: dict[str, dict] = {
    "trxl": {"mem_len": 8, "n_layers": 2, "n_heads": 2},
    "gtrxl": {"mem_len": 8, "n_layers": 2, "n_heads": 2},
    "compressive": {"n_mem": 4, "n_cmem": 4, "compression_rate": 2, "n_layers": 2, "n_heads": 2},
}


def small_options(name: str) -> dict:
    opts = memory.core_options(name)
    wanted = SMALL.get(name, {})
    if name.startswith("titans"):
        wanted = {"chunk_size": 4, "n_heads": 2}
    if name in ("titans_mag", "titans_mal"):
        wanted["window"] = 6  # the sliding-window variants (the others refuse it)
    return {k: v for k, v in wanted.items() if k in opts}


@pytest.fixture(params=memory.core_names())
def core(request: pytest.FixtureRequest) -> memory.MemoryCore:
    torch.manual_seed(0)
    c = memory.make_core(request.param, D, **small_options(request.param))
    return c


def scattered_starts(b: int = B, t: int = T) -> torch.Tensor:
    starts = torch.zeros(b, t, dtype=torch.bool)
    starts[0, 0] = True
    starts[1, 5] = True
    starts[1, 13] = True
    starts[2, 0] = True
    starts[2, 9] = True
    starts[3, 17] = True
    return starts


def run_chunks(core: memory.MemoryCore, x, state, starts, size: int):
    ys = []
    for a in range(0, x.shape[1], size):
        out = core(x[:, a : a + size], state, starts[:, a : a + size])
        ys.append(out.y)
        state = out.state
    return torch.cat(ys, dim=1), state


def assert_state_close(a: State, b: State) -> None:
    for x, y in zip(tree_leaves(a), tree_leaves(b), strict=True):
        torch.testing.assert_close(x, y, atol=ATOL, rtol=1e-4)


def test_registry_lists_the_control() -> None:
    assert {"lstm", "gru", "none"} <= set(memory.core_names())


def test_unknown_core_and_option_name_the_choices() -> None:
    with pytest.raises(memory.CoreConfigError, match=r"valid cores: .*lstm"):
        memory.make_core("lstmm", D)
    with pytest.raises(memory.CoreConfigError, match="valid options"):
        memory.make_core("lstm", D, not_an_option=3)


@pytest.mark.parametrize(
    ("name", "options", "d_model", "message"),
    [
        ("lstmm", {}, None, r"^unknown core 'lstmm'; valid cores: .*lstm"),
        ("lstm", {"nope": 1}, None, r"key 'core.nope' for core 'lstm'; valid options: cell, "),
        ("trxl", {"mem_len": "8"}, None, r"option mem_len expects int, got '8'"),
        ("trxl", {"mem_len": True}, None, r"option mem_len expects int, got True"),
        ("trxl", {"mem_len": 0}, None, r"mem_len must be >= 1, got 0"),
        ("trxl", {"memory_dtype": "f8"}, None, r"memory_dtype must be one of float32, "),
        ("titans_mac", {"max_lr": float("nan")}, None, r"max_lr must be >= 0.0, got nan"),
        ("titans_mac", {"n_heads": 0}, None, r"n_heads must be >= 1, got 0"),
        ("titans_mac", {"n_heads": 3}, 16, r"n_heads \(3\) must divide d_model \(16\)"),
        ("none", {}, 0, r"core.d_model must be a positive integer, got 0"),
    ],
)
def test_validate_core_names_the_option_in_one_line(
    name: str, options: dict, d_model: int | None, message: str
) -> None:
    with pytest.raises(memory.CoreConfigError, match=message) as info:
        memory.validate_core(name, options, d_model)
    assert "\n" not in str(info.value)


def test_options_are_frozen_and_presets_apply() -> None:
    assert memory.core_options("gtrxl")["gated"] and not memory.core_options("trxl")["gated"]
    assert memory.core_options("titans_mag")["variant"] == "mag"
    memory.validate_core("titans_mag", {"max_grad_norm": 1}, D)  # an int is a valid float
    opts = type(memory.make_core("gru", D)).options_type()
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.num_layers = 2  # type: ignore[misc]


def test_shapes_and_aux(core: memory.MemoryCore) -> None:
    x = torch.randn(B, T, D)
    out = core(x, core.initial_state(B, "cpu"), scattered_starts())
    assert out.y.shape == (B, T, D)
    assert out.aux_loss.dim() == 0
    assert torch.isfinite(out.y).all()


@pytest.mark.parametrize("size", [1, 3, 7])
def test_a_one_call_equals_steps_and_chunks(core: memory.MemoryCore, size: int) -> None:
    torch.manual_seed(1)
    x = torch.randn(B, T, D)
    starts = scattered_starts()
    state = core.initial_state(B, "cpu")
    with torch.no_grad():
        full = core(x, state, starts)
        y, s = run_chunks(core, x, state, starts, size)
    torch.testing.assert_close(y, full.y, atol=ATOL, rtol=1e-4)
    assert_state_close(s, full.state)


def test_b_episode_start_cuts_values_and_gradients(core: memory.MemoryCore) -> None:
    torch.manual_seed(2)
    k, row = 9, 2  # scattered_starts has a start at [2, 9]
    x = torch.randn(B, T, D, requires_grad=True)
    starts = scattered_starts()
    out = core(x, core.initial_state(B, "cpu"), starts)

    fresh = core(
        x[row : row + 1, k:].detach(), core.initial_state(1, "cpu"), starts[row : row + 1, k:]
    )
    torch.testing.assert_close(out.y[row : row + 1, k:], fresh.y, atol=ATOL, rtol=1e-4)

    (grad,) = torch.autograd.grad(out.y[row, k:].sum(), x)
    assert torch.equal(grad[row, :k], torch.zeros_like(grad[row, :k])), "gradient leaked"
    assert grad[row, k:].abs().sum() > 0


def test_c_carried_state_ignored_after_start(core: memory.MemoryCore) -> None:
    torch.manual_seed(3)
    warm = core(torch.randn(B, T, D), core.initial_state(B, "cpu"), scattered_starts()).state
    x = torch.randn(B, 11, D)
    starts = torch.zeros(B, 11, dtype=torch.bool)
    starts[:, 0] = True
    with torch.no_grad():
        a = core(x, core.detach(warm), starts)
        b = core(x, core.initial_state(B, "cpu"), starts)
    torch.testing.assert_close(a.y, b.y, atol=ATOL, rtol=1e-4)
    assert_state_close(a.state, b.state)


def test_d_detach_and_state_structure(core: memory.MemoryCore) -> None:
    x = torch.randn(B, T, D, requires_grad=True)
    s0 = core.initial_state(B, "cpu")
    out = core(x, s0, scattered_starts())
    for name, s in (("forward", out.state), ("detach", core.detach(out.state))):
        assert type(s) is type(s0), name
        for a, b in zip(tree_leaves(s), tree_leaves(s0), strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype and a.device == b.device, name
    for leaf in tree_leaves(core.detach(out.state)):
        assert not leaf.requires_grad and leaf.grad_fn is None


def test_e_rows_are_independent(core: memory.MemoryCore) -> None:
    torch.manual_seed(4)
    x = torch.randn(B, T, D, requires_grad=True)
    starts = scattered_starts()
    out = core(x, core.initial_state(B, "cpu"), starts)
    (grad,) = torch.autograd.grad(out.y[1].sum(), x)
    others = torch.cat([grad[:1], grad[2:]])
    assert torch.equal(others, torch.zeros_like(others))
    # And a row run alone gives the same numbers as inside the batch.
    alone = core(x[1:2].detach(), core.initial_state(1, "cpu"), starts[1:2])
    torch.testing.assert_close(alone.y, out.y[1:2].detach(), atol=ATOL, rtol=1e-4)
    assert_state_close(alone.state, index_state(core.detach(out.state), slice(1, 2)))


# Options that by design leave the outputs unchanged (documented in their docstrings).
NO_OUTPUT_EFFECT = {
    "cache_kv": "speed only: the same numbers with or without the cache",
    "retrieval_grad": "gradients only (tests/test_titans.py checks them)",
    "bounded_backward": "gradients only (tests/test_titans.py checks them)",
    "backward_gain_limit": "gradients only (tests/test_titans.py checks them)",
}
# Options that do nothing in some preset are not accepted there (``CoreOptions.inert``): the
# registry does not list them, and setting one is refused (test_inert_options_are_refused).


def other_values(default, meta) -> list:
    """Candidate values for an option other than its default, most ordinary first."""
    if isinstance(default, bool):
        return [not default]
    if meta.get("choices"):
        return [c for c in meta["choices"] if c != default]
    if default is None:
        return [24]
    if isinstance(default, int):
        return [v for v in (default + 1, 2 * default, default + 3, default - 1) if v != default]
    return [v for v in (0.5 * default, 2.0 * default, default + 1.0) if v != default]


def outputs_with(name: str, options: dict) -> torch.Tensor:
    """Outputs of two calls (the state carried between them) of a core whose parameters are
    perturbed from their initialisation, so options that act only through trained weights
    (e.g. a convolution that starts as the identity) show too."""
    torch.manual_seed(0)
    core = memory.make_core(name, D, **options)
    with torch.no_grad():
        for p in core.parameters():
            p.add_(0.1 * torch.randn_like(p))
        torch.manual_seed(1)
        x, starts = torch.randn(2, 2, 24, D), torch.zeros(2, 24, dtype=torch.bool)
        starts[:, 0] = True
        first = core(x[0], core.initial_state(2, "cpu"), starts)
        second = core(x[1], first.state, torch.zeros_like(starts))
    return torch.cat([first.y, second.y], dim=1)


def registry_options() -> list[tuple[str, str]]:
    return [(name, key) for name in memory.core_names() for key in memory.core_options(name)]


@pytest.mark.parametrize(("name", "key"), registry_options())
def test_every_accepted_option_changes_the_output(name: str, key: str) -> None:
    """Each option acts or is refused: a value the core accepts must change its outputs."""
    if key in NO_OUTPUT_EFFECT:
        pytest.skip(NO_OUTPUT_EFFECT[key])
    base = small_options(name)
    default = {**memory.core_options(name), **base}[key]
    meta = {
        f.name: f.metadata for f in dataclasses.fields(type(memory.make_core(name, D)).options_type)
    }
    tried = []
    for value in other_values(default, meta[key]):
        try:
            memory.validate_core(name, {**base, key: value}, D)
        except memory.CoreConfigError as err:
            tried.append(f"{value!r}: {err}")
            continue
        diff = (outputs_with(name, {**base, key: value}) - outputs_with(name, base)).abs().max()
        assert diff > 1e-6, f"{name}: {key}={value!r} accepted but the outputs are unchanged"
        return
    # Refused at every other value: the option cannot be set to anything that does nothing.
    assert tried, f"{name}: no other value of {key} to try"


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("trxl", "gate_bias", 3.0),
        ("gtrxl", "pre_ln", True),
        ("gru", "forget_bias", 2.0),
        ("titans_mac", "window", 16),
        ("titans_lmm", "n_persistent", 2),
    ],
)
def test_inert_options_are_refused(name: str, key: str, value: object) -> None:
    assert key not in memory.core_options(name)
    with pytest.raises(memory.CoreConfigError, match=f"core.{key} has no effect"):
        memory.make_core(name, D, **{key: value})


@pytest.mark.parametrize(("name", "key"), [("lstm", "num_layers"), ("gtrxl", "n_layers")])
def test_layer_counts_are_bounded(name: str, key: str) -> None:
    # 10**12 layers would loop for hours before any memory check could stop it.
    with pytest.raises(memory.CoreConfigError, match=f"{key} must be <= 256"):
        memory.validate_core(name, {key: 10**12})
