"""Steps/s of the KeyChest-Match tensor twin beside minigrid's SyncVectorEnv on the same task.

Random actions, same-step autoreset in both. The twin is timed at N = 1, 256, 4096, 65536 envs;
minigrid's vector env (the env behind ``ImgObsWrapper``, as the agent uses it) at fewer N,
because it steps one env at a time in Python. The last column is twin / minigrid at equal N.

    python benchmarks/envs.py                  # full table (~1 minute)
    python benchmarks/envs.py --quick          # small N, short runs (a smoke run)
    python benchmarks/envs.py --threads 2 --device cuda
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import torch

import mnemo.envs  # noqa: F401  (registers mnemo's envs)
from mnemo.envs.batched import make_batched


def twin_sps(env_id: str, n: int, seconds: float, device: str) -> float:
    """Env steps per second of the tensor twin with ``n`` envs."""
    env = make_batched(env_id, n, device=device)
    env.reset(seed=0)
    gen = torch.Generator(device=device).manual_seed(0)
    actions = torch.randint(0, 3, (64, n), generator=gen, device=device)
    for a in actions[:4]:  # warm-up
        env.step(a)
    steps, t0 = 0, time.perf_counter()
    while True:
        for a in actions:
            env.step(a)
        steps += len(actions)
        if device != "cpu":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if elapsed > seconds:
            return steps * n / elapsed


def minigrid_sps(env_id: str, n: int, seconds: float) -> float:
    """Env steps per second of gymnasium's SyncVectorEnv over ``n`` minigrid envs."""
    from gymnasium.vector import AutoresetMode, SyncVectorEnv
    from minigrid.wrappers import ImgObsWrapper

    def make() -> gym.Env:
        return ImgObsWrapper(gym.make(env_id))

    env = SyncVectorEnv([make] * n, autoreset_mode=AutoresetMode.SAME_STEP)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(rng.integers(0, 3, size=n))
        steps += 1
    elapsed = time.perf_counter() - t0
    env.close()
    return steps * n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="mnemo/KeyChest-Match-D16-v0")
    parser.add_argument("--twin-n", type=int, nargs="+", default=[1, 256, 4096, 65536])
    parser.add_argument("--minigrid-n", type=int, nargs="+", default=[1, 256, 4096])
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the twin")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="N <= 256, 0.5 s per row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.twin_n = [n for n in args.twin_n if n <= 256]
        args.minigrid_n = [n for n in args.minigrid_n if n <= 256]
        args.seconds = 0.5

    print(f"{args.env}: steps/s, random actions, torch threads {args.threads}, {args.device}")
    print(f"{'N':>7} | {'twin':>14} | {'minigrid Sync':>14} | {'twin / minigrid':>15}")
    for n in sorted(set(args.twin_n) | set(args.minigrid_n)):
        twin = twin_sps(args.env, n, args.seconds, args.device) if n in args.twin_n else None
        grid = minigrid_sps(args.env, n, args.seconds) if n in args.minigrid_n else None
        ratio = f"{twin / grid:.0f}x" if twin and grid else "-"
        t = f"{twin:,.0f}" if twin else "-"
        g = f"{grid:,.0f}" if grid else "-"
        print(f"{n:>7} | {t:>14} | {g:>14} | {ratio:>15}", flush=True)


if __name__ == "__main__":
    main()
