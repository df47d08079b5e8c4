"""PPO for actor-critics with a memory core (Schulman et al. 2017; recurrent variant).

The core state at the start of every truncated-BPTT chunk of a rollout is stored during the
rollout, so training replays each (env, chunk) sequence from exactly the state acting had there.
Minibatches are whole sequences, never shuffled timesteps.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mnemo.agents import distributed, divergence
from mnemo.agents.config_sections import check_device
from mnemo.agents.errors import NonFiniteError
from mnemo.agents.rl.actor_critic import ACOutput, ActingState, ActorCritic
from mnemo.agents.rl.config import RLConfig
from mnemo.agents.rl.ppo_loss import LossOutputs, ppo_loss
from mnemo.agents.rl.rollout import Rollout, compute_gae, sequence_minibatches
from mnemo.agents.rl.vector_env import counted_success, make_vector_env, warn_if_no_twin
from mnemo.envs.batched.base import TensorVectorEnv
from mnemo.memory.base import State, tree_leaves, tree_map, tree_map2


@dataclass
class EpisodeStats:
    """Per-env running sums, kept on the device; read out once per rollout.

    ``success`` is NaN where the env did not report one; with ``success_return`` set, an episode
    succeeds when its return reaches it (whatever the env says).
    """

    ret: Tensor
    length: Tensor
    success_return: float | None = None
    finished_return: list[Tensor] = field(default_factory=list)
    finished_length: list[Tensor] = field(default_factory=list)
    finished_success: list[Tensor] = field(default_factory=list)

    def step(self, reward: Tensor, done: Tensor, success: Tensor) -> None:
        self.ret += reward
        self.length += 1
        success = counted_success(self.ret, success, self.success_return)
        # Store masked values: no host sync here. Success is stored for every finished episode
        # (NaN where not available) and picked out by the finished returns' mask.
        self.finished_return.append(torch.where(done, self.ret, torch.nan))
        self.finished_length.append(torch.where(done, self.length.float(), torch.nan))
        self.finished_success.append(success.float())
        self.ret = torch.where(done, 0.0, self.ret)
        self.length = torch.where(done, 0, self.length)

    def flush(self) -> dict[str, np.ndarray]:
        out = {}
        finished = None
        for name in ("return", "length", "success"):
            buf = getattr(self, f"finished_{name}")
            if buf:
                v = torch.stack(buf).flatten().cpu().numpy()
                finished = ~np.isnan(v) if finished is None else finished
                out[name] = v[finished]
            else:
                out[name] = np.zeros(0)
            buf.clear()
        return out


class PPO:
    """Holds the envs, the agent and the optimizer; ``collect`` then ``update`` per iteration."""

    def __init__(self, cfg: RLConfig) -> None:
        self.cfg = cfg
        self.device = check_device(cfg.device)
        self.env = make_vector_env(
            cfg.env.id, cfg.env.num_envs, self.device, cfg.env.batched, **cfg.env.kwargs
        )
        self.model = ActorCritic(
            self.env.single_observation_space, self.env.single_action_space, cfg.core, cfg.agent
        ).to(self.device)
        warn_if_no_twin(self.env, cfg.env.id, cfg.env.batched)  # once the agent fits the env
        # Data-parallel ranks seed differently, so all start from rank 0's weights.
        distributed.broadcast_params(self.model)
        # Keep ``self.model`` uncompiled: checkpoints and evaluation use its state_dict as is.
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.autocast = cfg.autocast == "bf16" and self.device.type == "cuda"
        # A tensor twin that never truncates needs no truncation bootstrap, and so no host
        # sync per step; host envs (numpy) sync anyway, so they keep the cheap ``any()`` test.
        self.host_env = not isinstance(self.env, TensorVectorEnv)
        self.can_truncate = bool(getattr(self.env, "can_truncate", True))
        self.optimizer = torch.optim.Adam(  # foreach: as agents/lm/train.py's make_optimizer
            self.model.parameters(), lr=cfg.ppo.lr, eps=cfg.ppo.adam_eps, foreach=True
        )
        self.generator = torch.Generator().manual_seed(cfg.seed)
        n = cfg.env.num_envs
        self.obs, _ = self.env.reset(seed=cfg.seed)
        self.acting = self.model.initial_acting_state(n, self.device)
        self.stats = EpisodeStats(
            torch.zeros(n, device=self.device),
            torch.zeros(n, dtype=torch.long, device=self.device),
            cfg.env.success_return,
        )
        self.global_step = 0
        self.update_idx = 0

    def trainer_state(self) -> dict[str, Any]:
        """Everything besides model and optimizer needed to continue bit-identically."""
        return {
            "obs": self.obs,
            "core_state": self.acting.core,
            "prev_action": self.acting.prev_action,
            "prev_reward": self.acting.prev_reward,
            "episode_start": self.acting.episode_start,
            "episode_return": self.stats.ret,
            "episode_length": self.stats.length,
            "global_step": self.global_step,
            "update_idx": self.update_idx,
            "generator": self.generator.get_state(),
            "env": self.env.get_state(),
        }

    def load_trainer_state(self, st: dict[str, Any], trusted: tuple[str, ...] = ()) -> None:
        """Put back ``trainer_state()``; ``trusted`` module prefixes may appear in pickled
        gymnasium envs besides env, space and numpy classes (see ``safe_unpickle``)."""
        to = self.device
        self.obs = st["obs"].to(to)
        self.acting = tree_map(
            lambda t: t.to(to),
            ActingState(
                st["core_state"], st["prev_action"], st["prev_reward"], st["episode_start"]
            ),
        )
        self.stats.ret = st["episode_return"].to(to)
        self.stats.length = st["episode_length"].to(to)
        self.global_step = st["global_step"]
        self.update_idx = st["update_idx"]
        self.generator.set_state(st["generator"])
        if isinstance(st["env"], bytes):  # pickled gymnasium envs
            self.env.set_state(st["env"], trusted)
        else:
            self.env.set_state(st["env"])

    @property
    def state(self) -> State:
        """The core state acting has reached (``self.acting.core``)."""
        return self.acting.core

    def check_finite_state(self) -> None:
        finite = all(bool(torch.isfinite(leaf).all()) for leaf in tree_leaves(self.state))
        # Under torchrun every rank must stop, or the others would wait in the all-reduce.
        if distributed.any_rank(not finite):
            raise NonFiniteError(f"non-finite core state {self._where()}")

    def _explain_failed_act(self, acting: ActingState, t: int) -> None:
        """Raise ``NonFiniteError`` if acting failed on a NaN or inf (this rank only: the run
        is ending anyway)."""
        out = self.model.step(self.obs, acting, self._forward)
        if bool(torch.isfinite(out.logits).all()):
            return
        state_ok = all(bool(torch.isfinite(leaf).all()) for leaf in tree_leaves(acting.core))
        what = "policy logits" if state_ok else "core state"
        step = self.global_step + t * self.cfg.env.num_envs * distributed.world_size()
        raise NonFiniteError(
            f"non-finite {what} at step {step} (rollout of update {self.update_idx + 1})"
        ) from None

    @property
    def steps_per_update(self) -> int:
        """Env steps per update, all data-parallel ranks together."""
        return self.cfg.env.num_envs * self.cfg.ppo.rollout_len * distributed.world_size()

    def amp(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for forward passes when configured (cuda only), else a no-op."""
        if self.autocast:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(
        self,
        obs: Tensor,
        prev_action: Tensor,
        prev_reward: Tensor,
        state: State,
        episode_start: Tensor,
    ) -> ACOutput:
        """``self.forward`` (compiled or not) under ``amp``; the acting path's ``Forward``."""
        with self.amp():
            out = self.forward(obs, prev_action, prev_reward, state, episode_start)
        if self.autocast:
            # Autocast can hand back a bf16 state (nn.LSTM does); the contract and the stored
            # chunk states keep the dtype they came in with.
            out = out._replace(state=tree_map2(lambda y, x: y.to(x.dtype), out.state, state))
        return out

    @torch.no_grad()
    def collect(self) -> tuple[Rollout, Tensor]:
        """Step all envs ``rollout_len`` times; returns the rollout and the last values."""
        cfg = self.cfg.ppo
        n, length = self.cfg.env.num_envs, cfg.rollout_len
        obs_shape, action_shape = tuple(self.obs.shape[1:]), self.model.action_shape
        ro = Rollout.empty(n, length, obs_shape, self.obs.dtype, self.device, action_shape)
        for t in range(length):
            acting = self.acting
            if t % cfg.bptt_len == 0:
                ro.chunk_states.append(acting.core)
            try:
                acted = self.model.act(self.obs, acting, forward=self._forward)
            except RuntimeError:  # sampling from NaN probabilities (CPU): say what diverged
                self._explain_failed_act(acting, t)
                raise
            ro.obs[:, t] = self.obs
            ro.prev_action[:, t] = acting.prev_action
            ro.prev_reward[:, t] = acting.prev_reward
            ro.episode_start[:, t] = acting.episode_start
            ro.action[:, t] = acted.action
            ro.logprob[:, t] = acted.logprob
            ro.value[:, t] = acted.value
            obs, reward, term, trunc, info = self.env.step(acted.action)
            done = term | trunc
            self.stats.step(reward, done, info["success"])
            bootstrap = reward
            # minigrid sets both when the goal is reached at max_steps: that end is terminal.
            cut = trunc & ~term
            if self.can_truncate and (not self.host_env or bool(cut.any())):
                # A time limit is not a terminal state: bootstrap from the value of the final
                # observation, seen through the state that led to it.
                going_on = acting.advance(acted.state, acted.action, reward, torch.zeros_like(done))
                final = self.model.step(info["final_obs"], going_on, self._forward).value[:, 0]
                bootstrap = reward + cfg.gamma * final * cut.float()
            ro.reward[:, t] = bootstrap
            ro.done[:, t] = done
            self.obs = obs
            self.acting = acting.advance(acted.state, acted.action, reward, done)
        last_value = self.model.step(self.obs, self.acting, self._forward).value[:, 0].float()
        self.global_step += self.steps_per_update
        return ro, last_value

    def update(self, ro: Rollout, last_value: Tensor) -> dict[str, float]:
        cfg = self.cfg.ppo
        recon_coef = self.cfg.agent.recon_coef
        adv, ret = compute_gae(ro.reward, ro.value, ro.done, last_value, cfg.gamma, cfg.gae_lambda)
        logs: dict[str, list[float]] = {}
        steps, too_far = 0, False
        for _ in range(cfg.epochs):
            if too_far:
                break
            for mb in sequence_minibatches(ro, adv, ret, cfg.minibatches, self.generator):
                with self.amp():
                    out = self.forward(
                        mb.obs, mb.prev_action, mb.prev_reward, mb.state, mb.episode_start
                    )
                recon = None
                if recon_coef > 0:
                    recon = self.model.reconstruction_loss(out.features, mb.obs)
                outputs = LossOutputs(out.logits, out.value, out.aux_loss, recon, self.model.nvec)
                loss, metrics = ppo_loss(outputs, mb, cfg, recon_coef)
                self._check_loss(loss, metrics, outputs)
                for k, v in metrics.items():
                    logs.setdefault(k, []).append(float(v.detach()))
                if cfg.target_kl > 0:  # every rank stops at the same minibatch
                    kl = float(metrics["losses/approx_kl"])
                    too_far = distributed.any_rank(kl > 1.5 * cfg.target_kl)
                    if too_far:
                        break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.all_reduce_grads(self.model)
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                divergence.check_before_step(self.model, norm, self._where())
                self.optimizer.step()
                steps += 1
        self.check_outputs()  # the last step's weights, before any checkpoint holds them
        y, v = ret.flatten(), ro.value.flatten()
        var_y = y.var()
        explained = float(1 - (y - v).var() / var_y) if var_y > 0 else float("nan")
        self.update_idx += 1
        result = {k: float(np.mean(v)) for k, v in logs.items()}
        result["losses/explained_variance"] = explained
        result["losses/minibatch_steps"] = float(steps)
        return result

    def _where(self) -> str:
        return f"at step {self.global_step} (update {self.update_idx + 1})"

    def _check_loss(self, loss: Tensor, metrics: dict[str, Tensor], out: LossOutputs) -> None:
        """Stop before ``backward`` when the loss is not finite, naming where it starts: the
        model's outputs, else the loss parts, else their sum. One host sync for all."""
        parts = {
            "policy logits": out.logits,
            "value": out.value,
            "aux loss": out.aux_loss,
            "reconstruction loss": out.recon_loss,
            "policy loss": metrics["losses/policy"],
            "value loss": metrics["losses/value"],
            "entropy": metrics["losses/entropy"],
        }
        parts = {k: v for k, v in parts.items() if v is not None}
        flags = torch.stack(
            [torch.isfinite(loss), *(torch.isfinite(v).all() for v in parts.values())]
        )
        ok = flags.tolist()
        # Under torchrun every rank must stop, or the others would wait in the all-reduce.
        if distributed.any_rank(not all(ok)):
            bad = [name for name, good in zip(parts, ok[1:]) if not good]
            outputs = [b for b in bad if not b.endswith(("policy loss", "value loss", "entropy"))]
            if not bad and not ok[0]:
                bad = ["their finite sum overflowed"]
            raise NonFiniteError(
                f"non-finite loss ({divergence.named(outputs or bad)}) {self._where()}"
            )

    @torch.no_grad()
    def check_outputs(self) -> None:
        """Stop if the weights are not finite or, finite but too large, give non-finite
        outputs from where acting stands: a checkpoint of them could never be resumed (its
        first rollout would fail). One forward step of the envs; no action is sampled."""
        if not bool(divergence.weights_finite(self.model)):
            names = divergence.named(divergence.nonfinite_parameters(self.model))
            raise NonFiniteError(f"non-finite weights ({names}) after update {self.update_idx + 1}")
        out = self.model.step(self.obs, self.acting, self._forward)
        leaves = [out.logits, out.value, *tree_leaves(out.state)]
        finite = bool(torch.stack([torch.isfinite(x).all() for x in leaves]).all())
        if distributed.any_rank(not finite):
            name, size = divergence.largest_weight(self.model)
            raise NonFiniteError(
                f"non-finite policy output after update {self.update_idx + 1} (step "
                f"{self.global_step}): the weights grew too large (|{name}| up to {size:.3g}); "
                "lower ppo.lr or ppo.max_grad_norm"
            )

    def set_lr(self, frac_left: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.ppo.lr * frac_left

    def iterate(self) -> dict[str, Any]:
        """One rollout + update; returns scalars and the finished episodes' stats."""
        t0 = time.perf_counter()
        if self.cfg.ppo.anneal_lr:
            self.set_lr(max(0.0, 1 - self.global_step / self.cfg.ppo.total_steps))
        ro, last_value = self.collect()
        self.check_finite_state()
        scalars = self.update(ro, last_value)
        episodes = self.stats.flush()
        scalars["charts/SPS"] = self.steps_per_update / (time.perf_counter() - t0)
        scalars["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        if len(episodes["return"]):
            scalars["charts/episodic_return"] = float(episodes["return"].mean())
            scalars["charts/episodic_length"] = float(episodes["length"].mean())
            success = episodes["success"][~np.isnan(episodes["success"])]
            if len(success):  # not written where the env reports none: never a false 0
                scalars["charts/success_rate"] = float(success.mean())
            scalars["charts/episodes"] = float(len(episodes["return"]))
        return scalars
