"""The ``mnemo`` command line: train, eval, envs, cores (and ``lm`` for language models)."""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

from mnemo.agents.errors import UserError, exit_codes


@exit_codes
def cmd_train(args: argparse.Namespace) -> int:
    from mnemo.agents.checkpoint import (
        check_frozen,
        check_head,
        check_steps_left,
        load_checkpoint,
        resume_run_dir,
    )
    from mnemo.agents.config_loader import apply_overrides, from_dict, to_dict
    from mnemo.agents.config_sections import check_device
    from mnemo.agents.rl.config import RLConfig, check_names, describe, load_rl_config
    from mnemo.agents.rl.curriculum import load_curriculum, run_curriculum
    from mnemo.agents.rl.train import FROZEN, train
    from mnemo.agents.rl.vector_env import check_checkpoint_import
    from mnemo.agents.run_loop import check_fresh_run_dir

    overrides = list(args.overrides)
    if args.config and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        overrides.insert(0, args.config)  # `mnemo train --resume DIR key=value`
        args.config = None
    resume, trusted = None, None  # None: the env.id is the user's own
    if args.resume:
        resume = load_checkpoint(args.resume)
        check_head(resume, args.resume, lm=False, use_instead="mnemo lm train --resume")
        if not args.config and not any(o.startswith("env.id=") for o in overrides):
            env_id = resume["config"]["env"]["id"]
            trusted = check_checkpoint_import(env_id, args.imports, args.resume)
        if args.config is not None:  # the file's keys that may change; frozen ones must match
            cfg = load_rl_config(args.config, overrides)
        else:
            cfg = from_dict(RLConfig, apply_overrides(copy.deepcopy(resume["config"]), overrides))
            check_names(cfg)
        check_frozen(resume["config"], to_dict(cfg), FROZEN, to_dict(RLConfig()))
    elif args.config is None:
        raise UserError("give a config file (e.g. configs/recall_lstm.yaml) or --resume RUN_DIR")
    else:
        cfg, stages = load_curriculum(args.config, overrides)
        if stages:  # the config's earlier stages, then the config itself
            if args.check:  # as training would refuse it, before any stage
                for stage in stages:
                    check_device(stage.cfg.device)
            return run_curriculum(stages, check=args.check)
    if args.check:
        check_device(cfg.device)  # training refuses a device this machine lacks: so does --check
        if resume is None:
            check_fresh_run_dir(cfg.run.dir, cfg.run)  # and a run.dir that holds a run
        print(describe(cfg), end="")
        return 0
    run_dir = None
    if resume is not None:
        run_dir = resume_run_dir(args.resume, resume, cfg.run.dir, args.config)
        cfg.run.dir = str(run_dir)  # its checkpoints say where the run now is
        check_steps_left(resume, cfg.ppo.total_steps, "ppo.total_steps")
    result = train(cfg, resume=resume, run_dir=run_dir, trusted=trusted)
    from mnemo.agents import distributed

    if not distributed.is_main():
        return 0
    print(result.summary())
    return 0


@exit_codes
def cmd_eval(args: argparse.Namespace) -> int:
    from mnemo.agents.rl.evaluate import evaluate, load_agent, with_env_kwargs

    for flag, n in (("--episodes", args.episodes), ("--video-episodes", args.video_episodes)):
        if n < 1:
            raise UserError(f"{flag} must be >= 1, got {n}")
    video = None
    if args.video is not None:  # checked before a long evaluation, not after it
        from mnemo.agents.rl.video import video_folder

        video = video_folder(args.video)
    model, cfg = load_agent(args.checkpoint, args.device, args.imports)
    cfg = with_env_kwargs(cfg, args.env)
    if video is not None:
        from mnemo.agents.rl.video import check_renders

        check_renders(cfg, "--video")
    from mnemo.agents.config_sections import use_threads

    use_threads(cfg.threads)
    res = evaluate(
        model, cfg, args.episodes, greedy=not args.stochastic, seed=args.seed, device=args.device
    )
    variant = f" ({' '.join(args.env)})" if args.env else ""
    print(f"{cfg.core.name} on {cfg.env.id}{variant}: {res.summary()}")
    if video is not None:
        from mnemo.agents.rl.evaluate import HELD_OUT_SEED_OFFSET
        from mnemo.agents.rl.video import write_episode_gifs

        base = (cfg.seed if args.seed is None else args.seed) + HELD_OUT_SEED_OFFSET
        paths = write_episode_gifs(
            model, cfg, video, args.video_episodes, base, greedy=not args.stochastic
        )
        print(f"wrote {len(paths)} episode GIFs to {video} (tensorboard --logdir {video})")
    return 0


@exit_codes
def cmd_compare(args: argparse.Namespace) -> int:
    from mnemo.agents.checkpoint import check_folder
    from mnemo.agents.experiments.compare import compare

    args.out = str(check_folder(args.out, "--out"))
    results, errors = compare(
        args.cores,
        args.envs,
        args.seeds,
        args.out,
        steps=args.steps,
        jobs=args.jobs,
        config=args.config,
        overrides=args.overrides,
        eval_episodes=args.eval_episodes,
    )
    for line in errors:
        print(f"run failed: {line}", file=sys.stderr)
    if results:
        plots = "curves.png, delay.png" if Path(args.out, "delay.png").exists() else "curves.png"
        print(f"{len(results)} runs: {args.out}/results.md, results.csv, {plots}")
    return 1 if errors else 0


def _count(text: str) -> int:
    """``'4e6'`` or ``'4000000'`` -> 4000000 (argparse type for step budgets)."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _whole(text: str) -> int:
    """``'2e4'`` -> 20000: a whole number written either way (the range is checked later)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of env steps, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(value)


def _delays(text: str) -> list[int]:
    try:
        return [int(d) for d in text.split(",") if d]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected delays like 16,64,256, got {text!r}") from None


@exit_codes
def cmd_ladder(args: argparse.Namespace) -> int:
    from mnemo.agents.checkpoint import check_folder
    from mnemo.agents.experiments.ladder import ladder

    args.out = str(check_folder(args.out, "--out"))
    cores = [c for c in args.cores.split(",") if c]
    paths, errors = ladder(
        cores,
        args.delays,
        args.seeds,
        args.out,
        args.steps,
        jobs=args.jobs,
        config=args.config,
        overrides=args.overrides,
        eval_episodes=args.eval_episodes,
        command="mnemo " + " ".join(sys.argv[1:]),
        cost_only=args.cost_only,
        climb=args.climb,
    )
    for line in errors:
        print(f"run failed: {line}", file=sys.stderr)
    if paths:
        print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if errors else 0


@exit_codes
def cmd_envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from mnemo import envs
    from mnemo.envs.batched import has_twin

    for env_id in envs.mnemo_env_ids():
        spec = gym.spec(env_id)
        twin = "  [tensor twin]" if has_twin(env_id) else ""
        print(f"{env_id:36s} {spec.kwargs}{twin}")
    return 0


@exit_codes
def cmd_cores(args: argparse.Namespace) -> int:
    from mnemo import memory

    if args.name is None:
        for name in memory.core_names():
            opts = ", ".join(f"{k}={v!r}" for k, v in memory.core_options(name).items())
            print(f"{name:14s} {opts}")
        return 0
    from mnemo.agents.config_help import config_keys, keys_help
    from mnemo.memory.registry import core_options_type

    try:
        accepted = memory.core_options(args.name)
    except memory.CoreConfigError as e:
        raise UserError(str(e)) from None
    keys = config_keys(core_options_type(args.name), "core.")
    # This core's defaults (a preset may change them), without the options it ignores.
    keys = [k._replace(default=accepted[k.key[5:]]) for k in keys if k.key[5:] in accepted]
    print(f"core {args.name}: core.name={args.name} core.d_model=<width>, and its own options:")
    print(keys_help(keys) if keys else "  (none)")
    return 0


IMPORT = "allow the checkpoint's env.id PKG:EnvId to import PKG (a checkpoint alone never does)"


def build_parser() -> argparse.ArgumentParser:
    from mnemo.agents.config_help import KeysHelpParser

    p = KeysHelpParser(
        prog="mnemo", description="RL agents and language models with long-range memory."
    )
    from mnemo.agents.rl.config import RLConfig
    from mnemo.agents.rl.curriculum import HELP as CURRICULUM_HELP

    sub = p.add_subparsers(dest="command", required=True, parser_class=KeysHelpParser)

    t = sub.add_parser(
        "train",
        help="train a PPO agent from a YAML config",
        description="Train a PPO agent from a YAML config (configs/*.yaml), with overrides.",
        config_keys=RLConfig,
        extra_keys=(CURRICULUM_HELP,),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("config", nargs="?", help="YAML config, e.g. configs/recall_lstm.yaml")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. core.name=gru")
    t.add_argument(
        "--resume", metavar="RUN_DIR", help="continue RUN_DIR/checkpoints/last.pt exactly"
    )
    t.add_argument("--check", action="store_true", help="validate and print the config, then exit")
    t.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="PKG", help=IMPORT
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on held-out env seeds")
    e.add_argument("checkpoint", help="a checkpoint file or a run folder")
    e.add_argument("--episodes", type=int, default=100)
    e.add_argument("--device", default="cpu")
    e.add_argument("--seed", type=int, default=None, help="base seed (default: the run's)")
    e.add_argument("--stochastic", action="store_true", help="sample actions (default: argmax)")
    e.add_argument("--video", metavar="DIR", help="also write episodes as GIFs (and TB events)")
    e.add_argument("--video-episodes", type=int, default=4, help="episodes to record (--video)")
    e.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="evaluate on a variant of the run's env: an env kwarg (repeatable), e.g. delay=512",
    )
    e.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="PKG", help=IMPORT
    )
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("compare", help="train and evaluate cores x envs x seeds; table + plots")
    c.add_argument("--cores", required=True, help="comma-separated, e.g. lstm,gru,gtrxl")
    c.add_argument("--envs", required=True, help="comma-separated env ids")
    c.add_argument("--seeds", type=int, default=5, help="seeds per (core, env)")
    c.add_argument(
        "--steps", type=_whole, default=None, help="env steps per run (ppo.total_steps), e.g. 2e4"
    )
    c.add_argument("--out", required=True, help="output folder (rerun it to resume)")
    c.add_argument("--jobs", type=int, default=1, help="runs at a time (processes)")
    c.add_argument("--config", default=None, help="base YAML config (default: built-in)")
    c.add_argument("--eval-episodes", type=int, default=100, help="held-out episodes per run")
    c.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run")
    c.set_defaults(func=cmd_compare)

    lad = sub.add_parser(
        "ladder", help="success and cost per env step against delay, per core (recall task)"
    )
    lad.add_argument("--cores", default="lstm,gru,none", help="comma-separated cores")
    lad.add_argument(
        "--delays", type=_delays, default=[16, 64, 256, 1024], help="e.g. 16,64,256,1024"
    )
    lad.add_argument("--steps", type=_count, required=True, help="env steps per run, e.g. 4e6")
    lad.add_argument("--seeds", type=int, default=3, help="seeds per (core, delay)")
    lad.add_argument("--out", required=True, help="output folder (rerun it to resume)")
    lad.add_argument("--jobs", type=int, default=1, help="runs at a time (processes)")
    lad.add_argument("--config", default=None, help="base YAML config (default: built-in)")
    lad.add_argument("--eval-episodes", type=int, default=100, help="held-out episodes per run")
    lad.add_argument(
        "--cost-only", action="store_true", help="measure the cost per env step only (no training)"
    )
    lad.add_argument(
        "--climb",
        action="store_true",
        help="each (core, seed) climbs the delays in the order given: the run at each delay "
        "starts from the weights of the same core and seed's finished run at the previous one, "
        "with the same --steps per rung (the first from scratch); not with --cost-only",
    )
    lad.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run")
    lad.set_defaults(func=cmd_ladder)

    sub.add_parser("envs", help="list mnemo's environments").set_defaults(func=cmd_envs)
    cores = sub.add_parser("cores", help="list memory cores and their options")
    cores.add_argument("name", nargs="?", help="one core: its options' types, defaults and docs")
    cores.set_defaults(func=cmd_cores)
    from mnemo.agents.lm.cli import add_lm_parser

    add_lm_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except BrokenPipeError:  # `mnemo cores | head`: the reader left; stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the exit's flush of stdout would raise again
        return 128 + 13  # killed by SIGPIPE, as the shell reports it


if __name__ == "__main__":
    sys.exit(main())
