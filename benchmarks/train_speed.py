"""End-to-end PPO training speed per memory core, the tensor twin alone, and the peers beside us.

For each core (every registered one, or ``--cores``): env steps/s of whole PPO iterations
(rollout + update, as ``mnemo train`` runs them) with ``--num-envs`` envs of the env's tensor twin,
and peak GPU memory on cuda. Then the twin alone with random actions at the same N. On CPU, in
the same run, SB3's PPO and sb3-contrib's RecurrentPPO train on the minigrid version of the same
env (8 envs, ``ImgObsWrapper``, same rollout length, epochs, minibatches, learning rate and
hidden width as ours), followed by our LSTM on those same 8 minigrid envs, and the ratios print.

The env is KeyChest-Match (delay 16) when it has a tensor twin, else the recall task.

    python benchmarks/train_speed.py                          # CPU: all cores + twin + peers
    python benchmarks/train_speed.py --cores lstm --updates 5
    python benchmarks/train_speed.py --quick                  # a smoke run: tiny N, width 16
    python benchmarks/train_speed.py --device cuda --num-envs 16384 --autocast bf16 \
        --twin-envs 16384 1048576                             # the GPU targets
    pip install -e .[bench]                                   # the peers (sb3-contrib)

The machine's load average prints beside every figure: on a shared machine, compare only
figures from the same run.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import torch

from mnemo import memory
from mnemo.agents.rl.config import load_rl_config
from mnemo.agents.rl.ppo import PPO  # importing agents registers mnemo's envs
from mnemo.envs.batched import has_twin, make_batched

KEYCHEST = "mnemo/KeyChest-Match-D16-v0"
RECALL = "mnemo/Recall-D16-v0"


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ppo_config(args: argparse.Namespace, core: str, env_id: str, n: int, batched: bool) -> Any:
    return load_rl_config(
        None,
        [
            f"env.id={env_id}",
            f"env.num_envs={n}",
            f"env.batched={str(batched).lower()}",
            f"core.name={core}",
            f"core.d_model={args.hidden}",
            f"agent.encoder_hidden={args.hidden}",
            f"ppo.rollout_len={args.rollout_len}",
            f"ppo.bptt_len={args.rollout_len}",
            "ppo.epochs=4",
            "ppo.minibatches=4",
            "ppo.lr=0.001",
            f"device={args.device}",
            f"compile={str(args.compile).lower()}",
            f"autocast={args.autocast}",
        ],
    )


def ours_sps(args: argparse.Namespace, core: str, env_id: str, n: int, batched: bool = True):
    """(env steps/s of whole PPO iterations, peak GPU MiB or None)."""
    torch.manual_seed(0)
    ppo = PPO(ppo_config(args, core, env_id, n, batched))
    device = ppo.device
    ppo.iterate()  # warm-up: allocations, lazy init, compilation
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.updates):
        ppo.iterate()
    sync(device)
    sps = args.updates * ppo.steps_per_update / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return sps, peak


def twin_sps(env_id: str, n: int, seconds: float, device: torch.device) -> float:
    """Env steps/s of the tensor twin alone with random actions."""
    env = make_batched(env_id, n, device=device)
    env.reset(seed=0)
    gen = torch.Generator(device=device).manual_seed(0)
    actions = torch.randint(
        0, int(env.single_action_space.n), (32, n), generator=gen, device=device
    )
    for a in actions[:4]:
        env.step(a)
    sync(device)
    steps, t0 = 0, time.perf_counter()
    while True:
        for a in actions:
            env.step(a)
        steps += len(actions)
        sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed > seconds:
            return steps * n / elapsed


def peer_sps(kind: str, env_id: str, args: argparse.Namespace) -> float:
    """Env steps/s of SB3 PPO (``kind="ppo"``) or sb3-contrib RecurrentPPO (``"recurrent"``)."""
    from minigrid.wrappers import ImgObsWrapper
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from torch import nn

    class MinigridCNN(BaseFeaturesExtractor):
        """minigrid's documented SB3 extractor: three 2x2 convs (NatureCNN needs >= 36x36)."""

        def __init__(self, space: gym.spaces.Box, features_dim: int) -> None:
            super().__init__(space, features_dim)
            c = space.shape[0]
            self.cnn = nn.Sequential(
                *(nn.Conv2d(c, 16, 2), nn.ReLU(), nn.Conv2d(16, 32, 2), nn.ReLU()),
                *(nn.Conv2d(32, 64, 2), nn.ReLU(), nn.Flatten()),
            )
            with torch.no_grad():
                n_flat = self.cnn(torch.as_tensor(space.sample()[None]).float()).shape[1]
            self.linear = nn.Sequential(nn.Linear(n_flat, features_dim), nn.ReLU())

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.linear(self.cnn(obs))

    venv = make_vec_env(lambda: ImgObsWrapper(gym.make(env_id)), n_envs=args.peer_envs, seed=0)
    extractor = {"features_extractor_class": MinigridCNN}
    extractor["features_extractor_kwargs"] = {"features_dim": args.hidden}
    shared = {
        "n_steps": args.rollout_len,
        "batch_size": args.rollout_len * args.peer_envs // 4,
        "n_epochs": 4,
        "learning_rate": 1e-3,
        "device": "cpu",
        "seed": 0,
        "verbose": 0,
    }
    if kind == "ppo":
        from stable_baselines3 import PPO as SB3PPO

        model = SB3PPO("CnnPolicy", venv, policy_kwargs=extractor, **shared)
    else:
        from sb3_contrib import RecurrentPPO

        kwargs = {**extractor, "lstm_hidden_size": args.hidden}
        model = RecurrentPPO("CnnLstmPolicy", venv, policy_kwargs=kwargs, **shared)
    per_rollout = args.rollout_len * args.peer_envs
    model.learn(per_rollout)  # warm-up
    t0 = time.perf_counter()
    model.learn(args.peer_steps, reset_num_timesteps=False)
    steps = model.num_timesteps - per_rollout
    return steps / (time.perf_counter() - t0)


def run_peers(args: argparse.Namespace, env_id: str, ours_lstm: float | None) -> bool:
    """Print the peers' rows (those installed) and ours on their envs; False if ours failed."""
    print(
        f"\nPeers on minigrid {env_id} ({args.peer_envs} envs, ImgObsWrapper; rollout "
        f"{args.rollout_len}, 4 epochs x 4 minibatches, lr 1e-3, hidden {args.hidden}):"
    )
    rows: list[tuple[str, float]] = []
    for name, kind in (("SB3 PPO (CNN)", "ppo"), ("sb3-contrib RecurrentPPO (CNN+LSTM)", "rec")):
        try:
            sps = peer_sps(kind, env_id, args)
        except ImportError as e:
            print(f"  {name}: not installed ({e.name}); pip install -e .[bench]")
            continue
        rows.append((name, sps))
        print(f"  {name:44s} {sps:>12,.0f} steps/s  ({load()})", flush=True)
    label = f"mnemo PPO+lstm, same {args.peer_envs} minigrid envs"
    try:
        sync_lstm, _ = ours_sps(args, "lstm", env_id, args.peer_envs, batched=False)
        print(f"  {label:44s} {sync_lstm:>12,.0f} steps/s  ({load()})")
    except Exception as e:  # still print the twin ratio below
        sync_lstm = None
        print(f"  {label:44s} error: {type(e).__name__}: {str(e).splitlines()[0][:60]}")
    recurrent = dict(rows).get("sb3-contrib RecurrentPPO (CNN+LSTM)")
    if recurrent:
        if sync_lstm:
            print(f"  ours (minigrid envs) / RecurrentPPO: {sync_lstm / recurrent:.1f}x")
        if ours_lstm:
            print(
                f"  ours (twin, N={args.num_envs}) / RecurrentPPO: {ours_lstm / recurrent:.1f}x"
                "  (target on this CPU: >= 10x)"
            )
    return sync_lstm is not None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", nargs="+", default=None, help="default: every registered core")
    p.add_argument("--env", default=None, help=f"default: {KEYCHEST} if it has a twin")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-envs", type=int, default=None, help="default: 128 on CPU, 8192 on cuda")
    p.add_argument("--rollout-len", type=int, default=128)
    p.add_argument(
        "--hidden", type=int, default=64, help="core, encoder and peers' LSTM width (configs: 64)"
    )
    p.add_argument("--updates", type=int, default=2, help="timed PPO updates per core")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, ours and the peers' alike (default: 2, this project's CPU; "
        "1 with --quick)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the actor-critic")
    p.add_argument("--autocast", default="none", choices=("none", "bf16"))
    p.add_argument("--twin-seconds", type=float, default=3.0)
    p.add_argument("--twin-envs", type=int, nargs="+", help="N for the twin alone (default: N)")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--peer-envs", type=int, default=8)
    p.add_argument("--peer-steps", type=int, default=8192, help="timed env steps per peer")
    p.add_argument("--quick", action="store_true", help="N=8, rollout 16, width 16: a smoke run")
    args = p.parse_args()
    if args.quick:
        args.num_envs, args.rollout_len, args.hidden, args.updates = 8, 16, 16, 1
        args.twin_seconds, args.twin_envs, args.peer_envs, args.peer_steps = 0.2, [8], 4, 64
    # A smoke run times nothing worth a second thread; one avoids oversubscribing a busy CPU.
    args.threads = args.threads or (1 if args.quick else min(2, os.cpu_count() or 1))
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    args.num_envs = args.num_envs or (8192 if device.type == "cuda" else 128)
    env_id = args.env or (KEYCHEST if KEYCHEST in gym.registry and has_twin(KEYCHEST) else RECALL)
    peers = args.peers if args.peers is not None else device.type == "cpu"
    cores = args.cores or memory.core_names()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{env_id}: PPO env steps/s on {name} ({os.cpu_count()} cores, torch threads "
        f"{args.threads}), N={args.num_envs}, rollout {args.rollout_len}, hidden {args.hidden}, "
        f"compile {args.compile}, autocast {args.autocast}, {args.updates} timed updates"
    )
    print(f"{'core':12s} {'steps/s':>12s} {'peak GPU MiB':>13s}  load")
    results: dict[str, float] = {}
    failed: list[str] = []
    for core in cores:
        try:
            sps, peak = ours_sps(args, core, env_id, args.num_envs)
        except Exception as e:  # one broken core must not hide the others' figures
            failed.append(core)
            print(f"{core:12s} error: {type(e).__name__}: {str(e).splitlines()[0][:80]}")
            continue
        results[core] = sps
        mem = f"{peak:,.0f}" if peak is not None else "-"
        print(f"{core:12s} {sps:>12,.0f} {mem:>13s}  {load()}", flush=True)
    for n in args.twin_envs or [args.num_envs]:
        twin = twin_sps(env_id, n, args.twin_seconds, device)
        print(f"{'twin alone':12s} {twin:>12,.0f} {'':>13s}  {load()}  (random actions, N={n})")
    if peers and not run_peers(args, env_id, results.get("lstm")):
        failed.append("lstm on minigrid envs")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
