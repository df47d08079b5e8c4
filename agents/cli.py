"""The ``mnemo`` command line: train, eval, envs, cores (and ``lm`` for language models)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)
"""Errors that mean the user must change something: one line, exit code 2, no traceback."""


def _friendly(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except USER_ERRORS as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"error: {msg}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted: last checkpoint written", file=sys.stderr)
            return 130

    return run


@_friendly
def cmd_train(args: argparse.Namespace) -> int:
    from agents.config import load_train_config
    from agents.train import train

    cfg = load_train_config(args.config, args.overrides)
    result = train(cfg)
    print(
        f"run {result.run_dir}: {result.steps} steps in {result.wall_s:.1f} s "
        f"({result.sps:.0f} SPS), final success {result.final_success:.3f}"
        + (f", target reached at {result.steps_to_target} steps" if result.steps_to_target else "")
    )
    return 0


@_friendly
def cmd_eval(args: argparse.Namespace) -> int:
    from agents.evaluate import evaluate, load_agent

    model, cfg = load_agent(args.checkpoint, args.device)
    res = evaluate(
        model, cfg, args.episodes, greedy=not args.stochastic, seed=args.seed, device=args.device
    )
    print(
        f"{cfg.core.name} on {cfg.env.id}: success {res.success_rate:.3f} "
        f"(95% CI {res.ci_low:.3f}-{res.ci_high:.3f}) over {res.episodes} held-out episodes, "
        f"mean return {res.mean_return:.3f}"
    )
    return 0


@_friendly
def cmd_envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import envs
    from envs.batched import has_twin

    for env_id in envs.mnemo_env_ids():
        spec = gym.spec(env_id)
        twin = "  [tensor twin]" if has_twin(env_id) else ""
        print(f"{env_id:36s} {spec.kwargs}{twin}")
    return 0


@_friendly
def cmd_cores(args: argparse.Namespace) -> int:
    import memory

    for name in memory.core_names():
        opts = ", ".join(f"{k}={v!r}" for k, v in memory.core_options(name).items())
        print(f"{name:14s} {opts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mnemo", description="RL agents and language models with long-range memory."
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a PPO agent from a YAML config")
    t.add_argument("config", help="YAML config, e.g. configs/recall_lstm.yaml")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. core.name=gru")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on held-out env seeds")
    e.add_argument("checkpoint", help="a checkpoint file or a run folder")
    e.add_argument("--episodes", type=int, default=100)
    e.add_argument("--device", default="cpu")
    e.add_argument("--seed", type=int, default=None, help="base seed (default: the run's)")
    e.add_argument("--stochastic", action="store_true", help="sample actions (default: argmax)")
    e.set_defaults(func=cmd_eval)

    sub.add_parser("envs", help="list mnemo's environments").set_defaults(func=cmd_envs)
    sub.add_parser("cores", help="list memory cores and their options").set_defaults(func=cmd_cores)
    try:
        from agents.lm.cli import add_lm_parser
    except ImportError:
        pass
    else:
        add_lm_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
