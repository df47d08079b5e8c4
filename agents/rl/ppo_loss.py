"""The PPO loss on one minibatch of sequences (Schulman et al. 2017), as a pure function.

``PPO.update`` runs the model and hands its outputs here; everything else it does (the minibatch
loop, the non-finite check, backward, all-reduce, clipping, the optimizer step, logging) stays
there. tests/test_ppo_loss.py checks these numbers against a hand computation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from mnemo.agents.rl.actor_critic import ActionDist
from mnemo.agents.rl.config import PPOConfig
from mnemo.agents.rl.rollout import SequenceBatch


class LossOutputs(NamedTuple):
    """What the model said about a minibatch, (B, T, ...) each."""

    logits: Tensor  # (B, T, A)
    value: Tensor  # (B, T)
    aux_loss: Tensor  # scalar: the core's own aux loss
    recon_loss: Tensor | None = None  # scalar: observation reconstruction, None when off
    nvec: tuple[int, ...] | None = None  # MultiDiscrete's sizes (ActorCritic.nvec); None: Discrete


def ppo_loss(
    outputs: LossOutputs, mb: SequenceBatch, cfg: PPOConfig, recon_coef: float = 0.0
) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped PPO loss and its parts.

    loss = policy + vf_coef * value - ent_coef * entropy + aux_coef * aux
    (+ recon_coef * reconstruction when ``outputs.recon_loss`` is given).

    Args:
        outputs: the model's logits and values on ``mb``, the core's aux loss and, if on, the
            reconstruction loss.
        mb: the minibatch: actions, acting log-probs and values, advantages, returns.
        cfg: clip, clip_value, norm_adv and the coefficients.
        recon_coef: weight of ``outputs.recon_loss`` (the agent's, not PPO's, setting).

    Returns:
        The scalar loss (with grad) and the metrics, as scalar tensors keyed by their log names:
        ``losses/{policy,value,entropy,approx_kl,clipfrac}``, ``memory/aux_loss`` and, if on,
        ``losses/reconstruction``. approx_kl and clipfrac carry no grad.
    """
    # NaN logits reach the loss, whose check names them (PPO.update): ActionDist does not
    # validate its arguments.
    dist = ActionDist(outputs.logits.float(), outputs.nvec)
    log_ratio = dist.log_prob(mb.action) - mb.logprob
    ratio = log_ratio.exp()
    a = mb.advantage
    if cfg.norm_adv:
        a = (a - a.mean()) / (a.std() + 1e-8)
    pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
    v_err = (outputs.value - mb.ret) ** 2
    if cfg.clip_value:
        # PPO2's value clipping: the new value may move at most ``clip`` from the acting value.
        v_clip = mb.value + (outputs.value - mb.value).clamp(-cfg.clip, cfg.clip)
        v_err = torch.max(v_err, (v_clip - mb.ret) ** 2)
    v_loss = 0.5 * v_err.mean()
    entropy = dist.entropy().mean()
    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
    loss = loss + cfg.aux_coef * outputs.aux_loss
    metrics = {"losses/policy": pg_loss, "losses/value": v_loss, "losses/entropy": entropy}
    if outputs.recon_loss is not None:
        loss = loss + recon_coef * outputs.recon_loss
        metrics["losses/reconstruction"] = outputs.recon_loss
    with torch.no_grad():
        metrics["losses/approx_kl"] = ((ratio - 1) - log_ratio).mean()
        metrics["losses/clipfrac"] = ((ratio - 1).abs() > cfg.clip).float().mean()
    metrics["memory/aux_loss"] = outputs.aux_loss
    return loss, metrics
