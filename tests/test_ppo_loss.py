"""The PPO loss against numbers worked out by hand on three steps of one sequence.

Steps (B = 1, T = 3, two actions, clip = 0.2):

    t   logits      action  new prob  old prob   ratio  advantage  value  old value  return
    0   [0, 0]      0       1/2       2/5        1.25    2         0.0    1.0        0.0
    1   [ln 3, 0]   0       3/4       3/4        1.0    -1         0.6    0.5        1.0
    2   [ln 3, 0]   1       1/4       5/14       0.7     1         2.0    0.5        1.0
"""

from __future__ import annotations

import math

import pytest
import torch

from mnemo.agents.rl.config import PPOConfig
from mnemo.agents.rl.ppo_loss import LossOutputs, ppo_loss
from mnemo.agents.rl.rollout import SequenceBatch

LN3 = math.log(3)
H_HALF = math.log(2)  # entropy of (1/2, 1/2)
H_QUARTER = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # entropy of (3/4, 1/4)
RATIO = (1.25, 1.0, 0.7)


def row(*xs: float) -> torch.Tensor:
    return torch.tensor([list(xs)], dtype=torch.float32)  # (1, T)


def batch(advantage: tuple[float, ...] = (2.0, -1.0, 1.0)) -> SequenceBatch:
    zeros = torch.zeros(1, 3)
    return SequenceBatch(
        obs=zeros,
        prev_action=zeros.long(),
        prev_reward=zeros,
        episode_start=zeros.bool(),
        action=torch.tensor([[0, 0, 1]]),
        logprob=row(math.log(2 / 5), math.log(3 / 4), math.log(5 / 14)),
        value=row(1.0, 0.5, 0.5),
        advantage=row(*advantage),
        ret=row(0.0, 1.0, 1.0),
        state=torch.zeros(1, 0),
    )


def outputs(recon: float | None = None) -> LossOutputs:
    logits = torch.tensor([[[0.0, 0.0], [LN3, 0.0], [LN3, 0.0]]])  # (1, 3, 2)
    value = row(0.0, 0.6, 2.0)
    aux = torch.tensor(0.25)
    return LossOutputs(logits, value, aux, None if recon is None else torch.tensor(recon))


def cfg(**kw: object) -> PPOConfig:
    base = {"clip": 0.2, "vf_coef": 0.5, "ent_coef": 0.01, "aux_coef": 1.0, "norm_adv": False}
    return PPOConfig(**{**base, **kw})


def policy_loss(adv: tuple[float, ...]) -> float:
    """mean over t of max(-a r, -a clip(r, 0.8, 1.2))."""
    terms = [max(-a * r, -a * min(max(r, 0.8), 1.2)) for a, r in zip(adv, RATIO, strict=True)]
    return sum(terms) / 3


def total(pg: float, mse: float, aux: float = 0.25) -> float:
    """pg + vf_coef * 0.5 * mse - ent_coef * entropy + aux_coef * aux."""
    entropy = (H_HALF + 2 * H_QUARTER) / 3
    return pg + 0.5 * 0.5 * mse - 0.01 * entropy + aux


def test_clipped_policy_value_entropy_aux_by_hand() -> None:
    loss, m = ppo_loss(outputs(), batch(), cfg())
    # policy: t0 clipped at 1.2 (-2.4), t1 unclipped (1.0), t2 not clipped below (-0.7).
    assert policy_loss((2.0, -1.0, 1.0)) == pytest.approx(-0.7)
    assert float(m["losses/policy"]) == pytest.approx(-0.7, abs=1e-6)
    # value, unclipped: 0.5 * mean(0^2, 0.4^2, 1^2) = 0.5 * 1.16 / 3
    assert float(m["losses/value"]) == pytest.approx(0.5 * 1.16 / 3, abs=1e-6)
    assert float(m["losses/entropy"]) == pytest.approx((H_HALF + 2 * H_QUARTER) / 3, abs=1e-6)
    assert float(m["memory/aux_loss"]) == 0.25
    assert float(loss) == pytest.approx(total(-0.7, 1.16 / 3), abs=1e-6)
    kl = ((0.25 - math.log(1.25)) + 0.0 + (-0.3 - math.log(0.7))) / 3
    assert float(m["losses/approx_kl"]) == pytest.approx(kl, abs=1e-6)
    assert float(m["losses/clipfrac"]) == pytest.approx(2 / 3)  # t0 and t2 moved past 0.2
    assert "losses/reconstruction" not in m


def test_value_clipping_by_hand() -> None:
    # v_clip = old + clamp(new - old, -0.2, 0.2) = (0.8, 0.6, 0.7)
    # max((new - ret)^2, (v_clip - ret)^2) = max(0, 0.64), max(0.16, 0.16), max(1, 0.09)
    loss, m = ppo_loss(outputs(), batch(), cfg(clip_value=True))
    assert float(m["losses/value"]) == pytest.approx(0.5 * (0.64 + 0.16 + 1.0) / 3, abs=1e-6)
    assert float(loss) == pytest.approx(total(-0.7, 1.8 / 3), abs=1e-6)


def test_advantage_normalisation_by_hand() -> None:
    # a = (2, -1, 1): mean 2/3, unbiased std sqrt(((4/3)^2 + (5/3)^2 + (1/3)^2) / 2) = sqrt(7/3)
    std = math.sqrt(7 / 3)
    a = (4 / 3 / std, -5 / 3 / std, 1 / 3 / std)
    _, m = ppo_loss(outputs(), batch(), cfg(norm_adv=True))
    assert float(m["losses/policy"]) == pytest.approx(policy_loss(a), abs=1e-6)
    # Normalisation is per minibatch: scaling the advantages changes nothing.
    _, scaled = ppo_loss(outputs(), batch((20.0, -10.0, 10.0)), cfg(norm_adv=True))
    assert float(scaled["losses/policy"]) == pytest.approx(policy_loss(a), abs=1e-6)


def test_reconstruction_loss_is_weighted_and_logged() -> None:
    loss, m = ppo_loss(outputs(recon=0.4), batch(), cfg(), recon_coef=0.5)
    assert float(m["losses/reconstruction"]) == pytest.approx(0.4)
    assert float(loss) == pytest.approx(total(-0.7, 1.16 / 3) + 0.5 * 0.4, abs=1e-6)


def test_clipped_steps_pass_no_policy_gradient() -> None:
    """t0 (ratio 1.25 > 1.2 with a > 0) is clipped: its logits get no policy gradient."""
    out = outputs()
    logits = out.logits.clone().requires_grad_()
    _, m = ppo_loss(out._replace(logits=logits), batch(), cfg())
    m["losses/policy"].backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad[0, 0], torch.zeros(2))
    assert (logits.grad[0, 1:].abs() > 0).all()
