"""The training config of ``mnemo train``: typed sections, each field's docstring is its help.

The core, run and device/seed/threads parts are the shared ones of agents/config_sections.py.

Load with ``load_rl_config(path, overrides)``; every section and key is checked before any
work starts (see agents/config_loader.py for the one-line errors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mnemo.agents.config_loader import ConfigError, load_config
from mnemo.agents.config_sections import CoreSection, MachineSection, RunSection
from mnemo.agents.memory_budget import build_on_meta, check_memory, state_bytes, training_bytes


@dataclass
class EnvConfig:
    id: str = "mnemo/Recall-D16-v0"
    """Any registered gymnasium env id (``mnemo envs`` lists mnemo's own), or ``package:EnvId``
    to import the package that registers it first (gymnasium's convention)."""
    num_envs: int = 128
    """Envs stepped in parallel."""
    batched: bool = True
    """Use the env's tensor twin when it has one (``mnemo envs`` marks them)."""
    kwargs: dict = field(default_factory=dict)
    """Extra env constructor kwargs, e.g. ``{delay: 64}``."""
    success_return: float | None = None
    """Count an episode as a success when its return reaches this. Unset, success is what the
    env reports in ``info["success"]``, and "not available" (NaN, n/a) on envs that report none."""

    def validate(self) -> None:
        if self.num_envs < 1:
            raise ConfigError(f"env.num_envs must be >= 1, got {self.num_envs}")


@dataclass
class CoreConfig(CoreSection):
    """The shared ``core:`` section with its defaults (d_model 64)."""


@dataclass
class AgentConfig:
    encoder_hidden: int = 64
    """Hidden width of the observation encoder (MLP or CNN head)."""
    prev_action: bool = False
    """Feed the previous action (one-hot) to the core. Off by default: where actions are free
    (Recall's delay, KeyChest's distractor room) a policy can keep the cue in its own actions and
    read it back one step later, a memory that needs no core. The memoryless control ``none``
    refuses it, and ``mnemo compare`` never feeds it to any core."""
    prev_reward: bool = False
    """Feed the previous reward to the core (off by default, refused by ``none``, never fed in
    ``mnemo compare``: a policy that chooses to eat an apple or not writes into it)."""
    recon_coef: float = 0.0
    """Weight of the observation-reconstruction auxiliary loss (0 = off)."""

    def validate(self) -> None:
        if self.encoder_hidden < 1:
            raise ConfigError(f"agent.encoder_hidden must be >= 1, got {self.encoder_hidden}")
        if self.recon_coef < 0:
            raise ConfigError(f"agent.recon_coef must be >= 0, got {self.recon_coef}")


@dataclass
class PPOConfig:
    total_steps: int = 1_000_000
    """Env steps to train for (all envs together)."""
    rollout_len: int = 128
    """Steps per env per rollout."""
    bptt_len: int = 128
    """Truncated-BPTT length: rollouts are cut into sequences of this many steps, each starting
    from the core state stored during the rollout. Must divide ``rollout_len``."""
    epochs: int = 4
    """Passes over each rollout."""
    minibatches: int = 4
    """Minibatches per epoch (of whole env x sequence chunks, never shuffled timesteps)."""
    lr: float = 1e-3
    """Adam learning rate."""
    adam_eps: float = 1e-5
    """Adam's epsilon (1e-5, as CleanRL's and SB3's PPO use)."""
    anneal_lr: bool = False
    """Decay the learning rate linearly to 0."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE's lambda: 0 is the one-step TD error, 1 the Monte-Carlo return."""
    clip: float = 0.2
    """PPO ratio clip."""
    clip_value: bool = False
    """Clip the value update as in PPO2."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    aux_coef: float = 1.0
    """Weight of the core's aux_loss (e.g. compressive reconstruction)."""
    max_grad_norm: float = 0.5
    """Clip the gradient's global norm to this."""
    norm_adv: bool = True
    """Normalise the advantages of each minibatch to mean 0, std 1."""
    target_kl: float = 0.0
    """When > 0, an update ends early, before the optimizer step of the first minibatch whose
    approximate KL from the acting policy exceeds 1.5 x this (Stable-Baselines3's rule; 0 =
    off, the default there and in CleanRL). ``losses/minibatch_steps`` logs the steps each
    update took. A Titans run on Recall-D1024 had updates of KL 0.3-0.5 (clipfrac 0.7) for
    millions of steps; typical updates stay near 0.01."""
    target_success: float = 0.0
    """Stop early once the recent success rate reaches this (0 = never). Needs an env that
    reports success, or ``env.success_return``."""
    target_return: float | None = None
    """Stop early once the recent mean episodic return reaches this (unset = never)."""
    target_episodes: int = 100
    """``target_success`` and ``target_return`` are judged over the last updates holding at
    least this many finished episodes, not one update's: with 32 envs and 258-step episodes one
    update holds 32 episodes, and a lucky one reached 0.9 while greedy eval gave 0.725."""
    target_check_episodes: int = 0
    """When > 0, ``target_success`` counts as reached only if, besides the training episodes,
    the current weights' greedy policy also reaches it on this many validation episodes (env
    seeds apart from training's and from ``mnemo eval``'s held-out ones), run each update the
    training criterion holds. Training success at long delays swings between updates (a
    Recall-D256 Titans run: 0.65, 0.99, 0.96, 0.98 on its last four), so the run could stop on
    weights whose greedy policy scored 0.755 held out."""

    def validate(self) -> None:
        for name in (
            "total_steps",
            "rollout_len",
            "bptt_len",
            "epochs",
            "minibatches",
            "target_episodes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"ppo.{name} must be >= 1, got {getattr(self, name)}")
        if self.target_check_episodes < 0:
            raise ConfigError(
                "ppo.target_check_episodes must be >= 0 (0 = off), "
                f"got {self.target_check_episodes}"
            )
        if self.rollout_len % self.bptt_len:
            raise ConfigError(
                f"ppo.bptt_len ({self.bptt_len}) must divide ppo.rollout_len ({self.rollout_len})"
            )
        for name in ("lr", "adam_eps", "max_grad_norm", "clip"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ppo.{name} must be > 0, got {getattr(self, name)}")
        if self.target_kl < 0:  # inf and nan: the config loader refuses non-finite numbers
            raise ConfigError(f"ppo.target_kl must be >= 0 (0 = off), got {self.target_kl}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"ppo.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.target_success <= 1:  # a rate: above 1 the run could never stop on it
            raise ConfigError(
                f"ppo.target_success must be in [0, 1] (0 = off), got {self.target_success}"
            )


@dataclass
class RunConfig(RunSection):
    name: str = ""
    """Run name; default ``<core>-<env>``."""
    video_every: int = 0
    """Record an evaluation episode as a TensorBoard video every N updates (0 = never)."""
    init_from: str | None = None
    """Start from the weights of another run (a run folder or checkpoint file): a warm start or
    a curriculum step, e.g. from a Recall-D256 solution to D1024. Only the weights are taken
    (not the optimizer, step or envs); the architecture must match."""

    def validate(self) -> None:
        super().validate()
        if self.video_every < 0:
            raise ConfigError(f"run.video_every must be >= 0, got {self.video_every}")


MEMORYLESS = "none"
"""The control core: it has no state, and must see nothing that could stand in for one."""


@dataclass
class RLConfig(MachineSection):
    env: EnvConfig = field(default_factory=EnvConfig)
    core: CoreConfig = field(default_factory=CoreConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    run: RunConfig = field(default_factory=RunConfig)
    compile: bool = False
    """Run the actor-critic's forward through ``torch.compile`` (first updates are slower)."""
    autocast: str = "none"
    """``none`` or ``bf16``: bfloat16 autocast for the forward passes, on cuda only (ignored on
    CPU, where bf16 matmuls are not faster); losses and rollout storage stay float32."""

    def validate(self) -> None:
        super().validate()  # device
        if self.env.num_envs % self.ppo.minibatches:
            raise ConfigError(
                f"ppo.minibatches ({self.ppo.minibatches}) must divide env.num_envs "
                f"({self.env.num_envs}): minibatches are whole env sequences"
            )
        if self.autocast not in ("none", "bf16"):
            raise ConfigError(f"autocast must be 'none' or 'bf16', got {self.autocast!r}")
        for key in ("prev_action", "prev_reward"):
            if self.core.name == MEMORYLESS and getattr(self.agent, key):
                raise ConfigError(
                    f"agent.{key}: the memoryless control 'none' cannot take it (a policy can "
                    f"carry the cue in its own actions and read them back); set agent.{key}=false"
                )


OWN_RENDER_MODE = (
    "render_mode is mnemo's to set (rgb_array frames for run.video_every and eval --video), not "
    "an env kwarg"
)


def load_rl_config(path: str | None, overrides: list[str] | None = None) -> RLConfig:
    cfg = load_config(RLConfig, path, overrides)
    check_names(cfg)
    return cfg


def check_names(cfg: RLConfig) -> None:
    """Fail early, in one line, on an unknown env id, core name or core option, or a success
    target on an env that cannot say what success is."""
    import gymnasium as gym

    from mnemo import envs, memory
    from mnemo.agents.rl.vector_env import (
        _unwrap_image,
        accepted_kwargs,
        reports_success,
        resolve_env_id,
    )

    try:
        name = resolve_env_id(cfg.env.id)
    except ImportError as e:
        package = cfg.env.id.rpartition(":")[0]
        hint = ""
        if isinstance(e, ModuleNotFoundError) and e.name == package.split(".")[0]:
            # the `mnemo` command, unlike `python script.py`, does not look in the current folder
            hint = " (install it, or add its folder to PYTHONPATH)"
        raise ConfigError(f"env.id {cfg.env.id!r}: cannot import {package!r}: {e}{hint}") from e
    if name not in gym.registry:
        import difflib

        ours = ", ".join(envs.mnemo_env_ids())
        near = difflib.get_close_matches(name, list(gym.registry), n=3, cutoff=0.8)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise ConfigError(
            f"env.id: unknown env {cfg.env.id!r}; {hint}mnemo envs: {ours}; or any registered "
            "gymnasium id, or 'package:EnvId' to import the package that registers it"
        )
    if cfg.ppo.target_success and cfg.env.success_return is None and not reports_success(name):
        raise ConfigError(
            f"ppo.target_success: {cfg.env.id} does not report success; set "
            "env.success_return=<return that counts as a success> or use ppo.target_return"
        )
    try:  # core name, option names, types and values, and the width: one line if wrong
        memory.validate_core(cfg.core.name, cfg.core.options, cfg.core.d_model)
    except memory.CoreConfigError as e:
        raise ConfigError(str(e)) from e
    if "render_mode" in cfg.env.kwargs:
        raise ConfigError(f"env.kwargs.render_mode: {OWN_RENDER_MODE}")
    try:
        env = gym.make(cfg.env.id, **cfg.env.kwargs)
    except TypeError as e:
        raise ConfigError(f"env.kwargs for {cfg.env.id}: {e}{accepted_kwargs(name)}") from e
    except ValueError as e:
        raise ConfigError(f"env.kwargs for {cfg.env.id}: {e}") from e
    except (ImportError, gym.error.Error, AssertionError) as e:
        # a missing extra (Box2D, MuJoCo), or gymnasium's env checker refusing the env's spaces
        what = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"env.id {cfg.env.id!r}: gymnasium cannot make it: {what}") from e
    try:  # as the agent sees it: minigrid's image as its cell grid
        obs_size = gym.spaces.flatdim(_unwrap_image(env).observation_space)
    except (ValueError, NotImplementedError, TypeError):  # e.g. a Text leaf the agent packs
        obs_size = 1
    env.close()
    if cfg.run.video_every:
        from mnemo.agents.rl.video import check_renders

        check_renders(cfg, "run.video_every")
    check_run_memory(cfg, obs_size)


def check_run_memory(cfg: RLConfig, obs_size: int) -> float:
    """Estimate the run's memory from its sizes, before anything is allocated, and refuse
    what would not fit (agents/memory_budget.py). Returns the estimate in bytes.

    The core is built on the meta device; the encoder (an MLP or CNN, not buildable there)
    counts as its two widest matrices. Observations are counted as float32 (a floor for
    none). Activations are a floor: the inputs, encoder and core widths of one minibatch's
    steps, and the core state each of its sequences starts from.
    """
    from mnemo import memory

    core = build_on_meta(
        lambda: memory.make_core(cfg.core.name, cfg.core.d_model, **cfg.core.options),
        f"core {cfg.core.name!r}",
    )
    hidden, width = cfg.agent.encoder_hidden, cfg.core.d_model
    n, length, chunk = cfg.env.num_envs, cfg.ppo.rollout_len, cfg.ppo.bptt_len
    chunks = length // chunk
    state = state_bytes(core)
    sequences = n * chunks // cfg.ppo.minibatches
    per_step = 4 * (obs_size + 2 * hidden + 16 * width)
    parts = {
        "weights, gradients and Adam's moments": training_bytes(core)
        + 16 * (obs_size + width) * hidden,
        "rollout storage": n * length * (4 * obs_size + 34),
        "core states": n * (chunks + 2) * state,
        "activations": sequences * (chunk * per_step + state),
    }
    keys = "env.num_envs, ppo.rollout_len, agent.encoder_hidden, core.d_model or the core's sizes"
    return check_memory(parts, keys, cfg.device, cfg.memory_check)


def describe(cfg: Any) -> str:
    """The resolved config as YAML, for logs and TensorBoard."""
    import yaml

    from mnemo.agents.config_loader import to_dict

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
