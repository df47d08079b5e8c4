"""The fast paths of PPO: a rollout with no host syncs, truncation bootstraps, compile, autocast."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from mnemo import memory
from mnemo.agents.rl.config import ConfigError, load_rl_config
from mnemo.agents.rl.ppo import PPO
from mnemo.envs.batched.recall import BatchedRecall

SYNC_METHODS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")
"""Tensor methods that copy a value to the host: each one is a device sync on cuda."""


def tiny_config(*overrides: str):
    return load_rl_config(
        None,
        [
            "env.num_envs=4",
            "ppo.rollout_len=8",
            "ppo.bptt_len=4",
            "ppo.epochs=1",
            "ppo.minibatches=2",
            "core.d_model=16",
            "agent.encoder_hidden=16",
            *overrides,
        ],
    )


@contextmanager
def count_host_syncs() -> Iterator[collections.Counter]:
    """Count calls of every method in ``SYNC_METHODS`` made from Python while inside."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}

    def counting(name: str):
        original = originals[name]

        def method(self, *args, **kwargs):
            counts[name] += 1
            return original(self, *args, **kwargs)

        return method

    try:
        for name in SYNC_METHODS:
            setattr(torch.Tensor, name, counting(name))
        yield counts
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("core", memory.core_names())
def test_collect_with_a_twin_makes_no_host_sync(core: str, monkeypatch) -> None:
    # Titans asks the host which chunks have work on CPU only, where that is free and makes
    # acting 2.2x faster; here CPU stands in for an accelerator, so take the accelerator's path.
    monkeypatch.setattr(memory.titans_layer, "ASK_HOST_ON", ())
    torch.manual_seed(0)
    ppo = PPO(tiny_config(f"core.name={core}"))
    assert not ppo.host_env and not ppo.can_truncate
    ppo.collect()  # warm-up: lazy initialisation may sync once
    with count_host_syncs() as counts:
        ppo.collect()
    assert not counts, f"host syncs in collect() with core {core}: {dict(counts)}"


def test_counter_sees_a_sync() -> None:
    with count_host_syncs() as counts:
        bool(torch.ones(1).any())
        torch.ones(1).item()
    assert counts["__bool__"] == 1 and counts["item"] == 1


class TruncatingRecall(BatchedRecall):
    """Recall whose episodes are cut by a time limit one step before the query on odd envs."""

    can_truncate = True

    def step(self, actions: torch.Tensor):
        cut = (self.t == self.delay) & (torch.arange(self.num_envs, device=self.device) % 2 == 1)
        obs, reward, term, _, info = super().step(actions)
        final = info["final_obs"].clone()
        self.t = torch.where(cut, torch.zeros_like(self.t), self.t)
        obs = torch.where(cut.unsqueeze(1), self._obs(), obs)
        return obs, reward, term, cut, {**info, "final_obs": final}


def collect_with(host_env: bool, delay: int = 2):
    torch.manual_seed(0)
    cfg = tiny_config(f"env.kwargs={{delay: {delay}}}")
    ppo = PPO(cfg)
    ppo.env = TruncatingRecall(cfg.env.num_envs, delay=delay)
    ppo.obs, _ = ppo.env.reset(seed=0)
    ppo.host_env, ppo.can_truncate = host_env, True
    return ppo, *ppo.collect()


def test_sync_free_truncation_bootstrap_matches_the_host_path() -> None:
    _, twin_ro, twin_last = collect_with(host_env=False)
    _, host_ro, host_last = collect_with(host_env=True)
    assert torch.equal(twin_ro.action, host_ro.action)
    torch.testing.assert_close(twin_ro.reward, host_ro.reward)
    torch.testing.assert_close(twin_last, host_last)
    # The bootstrap did happen: truncated steps carry gamma * V(final obs), not just the reward.
    truncated = twin_ro.done & ~(twin_ro.obs[..., -1] == 1)
    assert truncated.any()
    assert (twin_ro.reward[truncated] != 0).all()


def test_a_twin_that_never_truncates_skips_the_bootstrap_forward() -> None:
    ppo = PPO(tiny_config())
    calls = 0
    forward = ppo.forward

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return forward(*args, **kwargs)

    ppo.forward = counting
    ppo.collect()
    assert calls == ppo.cfg.ppo.rollout_len + 1  # one per step, one for the last value


def test_compile_option_compiles_the_forward_and_keeps_the_plain_model(monkeypatch) -> None:
    compiled = []

    def fake_compile(model, **kwargs):
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    ppo = PPO(tiny_config("compile=true"))
    assert compiled == [ppo.model]
    assert not any(k.startswith("_orig_mod") for k in ppo.model.state_dict())
    ppo.iterate()


@pytest.mark.slow
def test_compile_option_really_compiles() -> None:
    ppo = PPO(tiny_config("compile=true"))
    scalars = ppo.iterate()
    assert torch.isfinite(torch.tensor(scalars["losses/value"]))


def test_bf16_autocast_is_off_on_cpu_and_checked() -> None:
    ppo = PPO(tiny_config("autocast=bf16"))
    assert not ppo.autocast
    ppo.iterate()
    with pytest.raises(ConfigError, match="autocast"):
        tiny_config("autocast=fp8")


@pytest.mark.parametrize("core", memory.core_names())
def test_bf16_autocast_path_keeps_fp32_states_and_storage(core: str) -> None:
    # CPU autocast stands in for cuda's here: same code path in PPO, different op lists.
    ppo = PPO(tiny_config(f"core.name={core}"))
    ppo.autocast = True
    ppo.amp = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    dtypes = [t.dtype for t in memory.base.tree_leaves(ppo.state)]
    ro, last = ppo.collect()
    ppo.update(ro, last)
    assert [t.dtype for t in memory.base.tree_leaves(ppo.state)] == dtypes
    assert ro.value.dtype == ro.logprob.dtype == last.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_autocast_on_cuda_keeps_float32_storage_and_syncs_nothing() -> None:
    ppo = PPO(tiny_config("autocast=bf16", "device=cuda"))
    assert ppo.autocast
    ro, last = ppo.collect()
    assert ro.value.dtype == torch.float32 and last.dtype == torch.float32
    torch.cuda.set_sync_debug_mode("error")
    try:
        ppo.collect()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    ppo.update(ro, last)
