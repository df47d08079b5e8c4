"""``mnemo lm train | eval | sample``: the language model's commands.

``add_lm_parser(subparsers)`` is called by agents/cli.py. Every command returns an exit code
(agents/errors.py): a user error (bad config, bad data, missing checkpoint) prints one line
``error: ...`` to stderr and returns 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import yaml

from mnemo.agents.config_sections import use_threads
from mnemo.agents.errors import UserError, exit_codes


def parse_options(items: list[str], flag: str) -> dict[str, Any]:
    """``['mem_len=512']`` -> ``{'mem_len': 512}`` (values read as YAML); ``flag`` names the
    option they came from in an error."""
    from mnemo.agents.config_loader import parse_override

    out: dict[str, Any] = {}
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} {item!r} must look like NAME=VALUE")
        out[key] = parse_override(item)[1]  # read as a config override is (1e5: a number)
    return out


def load_model(path: str, device: str, core_overrides: dict[str, Any] | None = None, rows: int = 1):
    """A trained ByteLM and its LMConfig from a checkpoint file or run folder.

    ``core_overrides`` (e.g. a longer ``mem_len``) are applied only where the core has that
    option; the others are reported on stderr and ignored. The weights and ``rows`` streams'
    core states must fit in half the machine's memory, or it is refused in one line.
    """
    from mnemo import memory
    from mnemo.agents.checkpoint import load_weights
    from mnemo.agents.config_loader import from_dict
    from mnemo.agents.config_sections import check_device
    from mnemo.agents.lm.config import LMConfig
    from mnemo.agents.lm.model import build_model
    from mnemo.agents.lm.resume import load_lm_checkpoint
    from mnemo.agents.memory_budget import build_on_meta, check_memory, state_bytes, training_bytes

    ckpt = load_lm_checkpoint(path)
    cfg = from_dict(LMConfig, ckpt["config"])
    valid = memory.core_options(cfg.core.name)
    for key, value in (core_overrides or {}).items():
        if key in valid:
            cfg.core.options[key] = value
        else:
            print(f"note: core {cfg.core.name!r} has no option {key!r}; ignored", file=sys.stderr)
    dev = check_device(device)
    build = lambda: build_model(cfg.core.name, cfg.core.d_model, cfg.core.options)  # noqa: E731
    meta = build_on_meta(build, f"the {cfg.core.name!r} language model")
    parts = {
        "weights": training_bytes(meta) / 4,
        "core states": 2 * rows * state_bytes(meta.core),
    }
    check_memory(parts, "--core-option sizes or --batch-size", str(dev), True, insist=None)
    model = build()
    load_weights(model, ckpt["model"], str(path))
    return model.to(dev).eval(), cfg


@exit_codes
def cmd_train(args: argparse.Namespace) -> int:
    from mnemo.agents import distributed
    from mnemo.agents.checkpoint import check_steps_left, resume_run_dir
    from mnemo.agents.lm.config import load_lm_config
    from mnemo.agents.lm.resume import load_lm_checkpoint, resume_config
    from mnemo.agents.lm.train import train

    overrides = list(args.overrides)
    if args.config and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        overrides.insert(0, args.config)  # `mnemo lm train --resume DIR key=value`
        args.config = None
    resume, run_dir = None, None
    if args.resume:
        resume = load_lm_checkpoint(args.resume, use_instead="mnemo train --resume")
        cfg = resume_config(resume, args.config, overrides)
        run_dir = resume_run_dir(args.resume, resume, cfg.run.dir, args.config)
        cfg.run.dir = str(run_dir)  # its checkpoints say where the run now is
        check_steps_left(resume, cfg.train.steps, "train.steps")
    elif args.config is None:
        raise UserError("give a config file (e.g. configs/lm_lstm.yaml) or --resume RUN_DIR")
    else:
        cfg = load_lm_config(args.config, overrides)
    if args.check:
        return check(cfg, resumed=resume is not None)
    result = train(cfg, resume=resume, run_dir=run_dir)
    if not distributed.is_main():
        return 0
    line = (
        f"run {result.run_dir}: {result.steps} steps in {result.wall_s:.1f} s "
        f"({result.tokens_per_s:.0f} bytes/s), train bits/byte {result.train_bits_per_byte:.4f}"
    )
    if result.val is not None:
        line += f", val bits/byte {result.val.bits_per_byte:.4f}"
    print(line)
    return 0


def check(cfg, resumed: bool = False) -> int:
    """Build what training would (corpora, streams, model) without training, refuse what it
    would (the device, a fresh run's folder); print the config."""

    from mnemo.agents.config_loader import to_dict
    from mnemo.agents.config_sections import check_device
    from mnemo.agents.lm.model import build_model
    from mnemo.agents.lm.train import load_corpora, make_training_streams
    from mnemo.agents.run_loop import check_fresh_run_dir

    check_device(cfg.device)
    if not resumed:
        check_fresh_run_dir(cfg.run.dir, cfg.run)
    train_corpus, val_corpus = load_corpora(cfg.data)
    make_training_streams(cfg, train_corpus, val_corpus)
    build_model(cfg.core.name, cfg.core.d_model, cfg.core.options)
    sys.stdout.write(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return 0


@exit_codes
def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from mnemo.agents.config_loader import from_dict
    from mnemo.agents.config_sections import MAX_THREADS
    from mnemo.agents.lm.config import SyntheticConfig
    from mnemo.agents.lm.data import SPLITS, document_streams, load_corpus
    from mnemo.agents.lm.evaluate import evaluate
    from mnemo.agents.lm.train import run_corpus

    if not 0 <= args.threads <= MAX_THREADS:
        raise UserError(
            f"--threads must be 0 (torch's default) to {MAX_THREADS}, got {args.threads}"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size < 1 or args.segment_len < 0:
        raise UserError("--batch-size must be >= 1 and --segment-len >= 0")
    if args.data is not None and not args.data.strip():
        from mnemo.agents.lm.config import DATA_CHOICES

        raise UserError(f"--data is empty; give {DATA_CHOICES} (leave it out for the run's)")
    if args.max_bytes is not None and args.max_bytes < 1:
        raise UserError(f"--max-bytes must be >= 1 (leave it out for all), got {args.max_bytes}")
    core_options = parse_options(args.core_option, "--core-option")
    model, cfg = load_model(args.checkpoint, args.device, core_options, args.batch_size)
    if not args.threads:
        use_threads(cfg.threads)
    syn = dataclasses.asdict(cfg.data.synthetic)
    for key, value in parse_options(args.synthetic, "--synthetic").items():
        if key not in syn:
            raise UserError(f"--synthetic: no option {key!r}; valid: {', '.join(sorted(syn))}")
        syn[key] = value
    # Typed and checked as data.synthetic is (compact=maybe was taken as true, seed=x and
    # distances=5 raised tracebacks, docs_per_distance=1e9 ran without end).
    syn = dataclasses.asdict(from_dict(SyntheticConfig, syn, prefix="--synthetic "))
    if args.split not in SPLITS:
        raise UserError(f"--split must be one of {', '.join(SPLITS)}, got {args.split!r}")
    if args.data is None:  # the run's own split: not the bytes it trained on as validation
        for path in (cfg.data.path, cfg.data.val_path):
            if (
                path
                and not path.startswith("synthetic:")
                and not os.path.lexists(os.path.expanduser(path))
            ):
                raise UserError(
                    f"the run's data {path} is not here (a relative path is read from the "
                    f"current folder, {os.getcwd()}); give --data"
                )
        corpus = run_corpus(cfg.data, args.split, syn)
    else:
        corpus = load_corpus(args.data, args.split, syn)
    if len(corpus) - corpus.n_docs < 1:
        raise UserError(f"{corpus.name}: every document is one byte long; nothing to predict")
    seg_len = args.segment_len or cfg.train.segment_len
    streams = document_streams(corpus, args.batch_size, args.max_bytes)
    res = evaluate(model, streams, seg_len, args.device, cfg.train.amp, progress=args.progress)
    print(
        f"{cfg.core.name} on {corpus.name}: {corpus.n_docs} documents, {res.bytes} bytes predicted"
    )
    if res.recall_bytes:
        print(
            f"recall: {res.recall_bytes} bytes, accuracy {res.recall_accuracy:.4f}, "
            f"bits/byte {res.recall_bits_per_byte:.4f}"
        )
        print(res.table())
    print(f"bits_per_byte {res.bits_per_byte:.6f}")
    return 0


@exit_codes
def cmd_sample(args: argparse.Namespace) -> int:
    from mnemo.agents.lm.sample import generate, printable

    if args.bytes < 0:
        raise UserError(f"--bytes must be >= 0, got {args.bytes}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise UserError(
            f"--temperature must be a finite number >= 0 (0 = always the likeliest byte), "
            f"got {args.temperature}"
        )
    if args.top_k < 0:
        raise UserError(f"--top-k must be >= 0 (0 = all 256 bytes), got {args.top_k}")
    model, cfg = load_model(args.checkpoint, args.device)
    use_threads(cfg.threads)
    # The bytes as typed: argv that is not UTF-8 arrives as surrogates, which .encode() refuses.
    prompt = os.fsencode(args.prompt)
    out = generate(
        model,
        prompt,
        args.bytes,
        args.temperature,
        args.top_k,
        args.device,
        args.seed,
        amp=cfg.train.amp,
    )
    sys.stdout.write(printable(prompt + out) + "\n")
    return 0


def add_lm_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lm`` with ``train``, ``eval`` and ``sample`` to the ``mnemo`` command line."""
    lm = subparsers.add_parser("lm", help="byte-level language models on the memory cores")
    from mnemo.agents.config_help import KeysHelpParser
    from mnemo.agents.lm.config import LMConfig

    sub = lm.add_subparsers(dest="lm_command", required=True, parser_class=KeysHelpParser)

    t = sub.add_parser(
        "train",
        help="train a byte-level LM from a YAML config",
        description="Train a byte-level LM from a YAML config (configs/lm_*.yaml).",
        config_keys=LMConfig,  # listed in --help
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("config", nargs="?", help="YAML config, e.g. configs/lm_lstm.yaml")
    t.add_argument(
        "overrides", nargs="*", help="key.sub=value, e.g. data.path=book.txt train.steps=100"
    )
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR/checkpoints/last.pt exactly (its config unless one is given)",
    )
    t.add_argument(
        "--check", action="store_true", help="validate config and data, print the config, exit"
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="bits per byte with memory carried over whole documents")
    e.add_argument("checkpoint", help="a checkpoint file or a run folder")
    e.add_argument(
        "--data", help="file, folder, PG-19 root or synthetic:needle (default: the run's)"
    )
    e.add_argument(
        "--split",
        default="validation",
        help="train, validation or test: a PG-19 root's folder, a synthetic set's seed; of the "
        "run's own file or folder, the bytes it trained on or those it held out (validation)",
    )
    e.add_argument(
        "--core-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a core option at evaluation, e.g. mem_len=512 (only if the core has it)",
    )
    e.add_argument(
        "--synthetic",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a synthetic-set option, e.g. distances=[256,512] or docs_per_distance=8",
    )
    e.add_argument(
        "--segment-len", type=int, default=0, help="bytes per call (default: training's)"
    )
    e.add_argument("--batch-size", type=int, default=16, help="documents evaluated in parallel")
    e.add_argument("--max-bytes", type=int, default=None, help="evaluate only the first N bytes")
    e.add_argument("--device", default="cpu")
    e.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: the run's `threads`)"
    )
    e.add_argument("--progress", action="store_true", help="show a progress bar")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sample", help="generate bytes one at a time with memory carried")
    s.add_argument("checkpoint", help="a checkpoint file or a run folder")
    s.add_argument("--prompt", default="", help="text to continue")
    s.add_argument("--bytes", type=int, default=200, help="bytes to generate")
    s.add_argument("--temperature", type=float, default=0.8, help="0 = always the likeliest byte")
    s.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest (0 = all)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_sample)
