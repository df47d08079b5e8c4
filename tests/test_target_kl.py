"""``ppo.target_kl``: an update ends before the step of the first minibatch whose approximate
KL from the acting policy exceeds 1.5 x target_kl; off (0), the update is unchanged."""

from __future__ import annotations

import pytest
import torch

from mnemo.agents.config_loader import ConfigError
from mnemo.agents.rl.config import load_rl_config
from mnemo.agents.rl.ppo import PPO

SMALL = ["env.id=mnemo/Recall-D8-v0", "env.num_envs=8", "ppo.rollout_len=16", "ppo.bptt_len=8"]


def one_update(*overrides: str) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    ppo = PPO(load_rl_config(None, [*SMALL, "ppo.lr=0.01", *overrides]))
    logs = ppo.update(*ppo.collect())
    return logs, {k: v.clone() for k, v in ppo.model.state_dict().items()}


def test_an_update_stops_at_the_first_minibatch_past_the_kl() -> None:
    full, weights = one_update()
    assert full["losses/minibatch_steps"] == 16  # 4 epochs x 4 minibatches
    # The first minibatch is the acting policy itself (KL 0); lr 0.01 moves it past 1.5e-6.
    stopped, _ = one_update("ppo.target_kl=1e-6")
    assert 1 <= stopped["losses/minibatch_steps"] < 16
    loose, same = one_update("ppo.target_kl=1e9")
    assert loose["losses/minibatch_steps"] == 16
    assert all(torch.equal(weights[k], same[k]) for k in weights)


@pytest.mark.parametrize("bad", ["-0.1", ".inf", ".nan"])
def test_bad_target_kl_is_one_line(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"ppo\.target_kl"):
        load_rl_config(None, [f"ppo.target_kl={bad}"])
