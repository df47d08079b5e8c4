"""``mnemo ladder``: how far each core's memory reaches, and what it costs per env step.

For every core and every delay D of the recall task, one ordinary ``mnemo compare`` run per
seed at the same env-step budget (so runs, result files and resume behave exactly as there),
then, in a fresh process per (core, delay), the cost of a PPO iteration: seconds per env step
and the peak memory it adds. Outputs in OUT: ``ladder.md`` (success and steps to 0.9 per core
and delay, cost per core and delay), ``ladder.png`` (success against delay; cost against
delay), and compare's ``results.csv`` with every run.

Each core is given memory that spans the delay, by one rule per family (``ladder_overrides``):
the recurrent cores get chrono initialisation up to D steps and one-episode rollout windows
(D + 2 steps); Transformer-XL keeps D + 2 steps of memory (16-step segments); the compressive
transformer keeps a quarter in its FIFO memory and compresses the rest 4:1; Titans keeps its
attention span and gets one-episode windows, so its neural memory carries the rest. The rest
of the config is the built-in default (or ``--config``) plus overrides, as in ``mnemo
compare``.

With ``climb`` (``--climb``, agents/experiments/climb.py) each (core, seed) climbs the delays in
the order given: the run at each delay starts from the same core and seed's finished run at
the previous one, with the same budget per rung.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mnemo.agents.checkpoint import make_folder
from mnemo.agents.config_loader import ConfigError, from_dict
from mnemo.agents.experiments.compare import (
    RunSpec,
    execute,
    load_result,
    plan_runs,
    summarize,
    write_csv,
)
from mnemo.agents.rl.config import RLConfig

COST_ENVS = 32
"""Envs per cost measurement: enough to amortise per-step overheads, small at D = 1024."""


def recall_id(delay: int) -> str:
    import gymnasium as gym

    from mnemo import envs

    env_id = f"mnemo/Recall-D{delay}-v0"
    if env_id not in gym.registry:
        known = sorted(
            int(i.split("-D")[1].split("-")[0]) for i in envs.mnemo_env_ids() if "Recall" in i
        )
        raise ConfigError(f"--delays: no recall task at delay {delay}; registered: {known}")
    return env_id


def ladder_overrides(core: str, delay: int) -> list[str]:
    """The config keys that give ``core`` memory spanning ``delay`` (see the module docstring)."""
    episode = delay + 2
    windows = [f"ppo.rollout_len={episode}", f"ppo.bptt_len={episode}"]
    if core in ("lstm", "gru"):
        return [*windows, f"core.chrono={max(delay, 3)}"]
    # Transformers carry the episode in their memory: 16-step segments, windows that fit them.
    segments = ["ppo.bptt_len=16", f"ppo.rollout_len={16 * math.ceil(episode / 16)}"]
    if core in ("trxl", "gtrxl"):
        return [f"core.mem_len={episode}", *segments]
    if core == "compressive":
        n_mem = math.ceil(episode / 4)
        n_cmem = math.ceil((episode - n_mem) / 4)
        return [
            f"core.n_mem={n_mem}",
            f"core.n_cmem={n_cmem}",
            "core.compression_rate=4",
            *segments,
        ]
    return windows  # none, titans_*: one-episode windows


def plan_ladder(
    cores: Sequence[str],
    delays: Sequence[int],
    seeds: int,
    out: Path,
    steps: int,
    config: str | None = None,
    overrides: Sequence[str] = (),
    eval_episodes: int = 100,
    climb: bool = False,
) -> list[RunSpec]:
    """Every (core, delay, seed) run, delay by delay, each config checked before anything
    trains; with ``climb`` each run after the first delay warm-starts from its previous rung."""
    from mnemo.agents.experiments.climb import climb_configs

    if not cores or not delays:
        raise ConfigError("give at least one core (--cores) and one delay (--delays)")
    if len(set(delays)) != len(delays):
        raise ConfigError(f"--delays names a delay twice: {','.join(map(str, delays))}")
    specs: list[RunSpec] = []
    for delay in delays:
        for core in cores:
            specs += plan_runs(
                [core],
                [recall_id(delay)],
                seeds,
                out,
                steps,
                config,
                [*overrides, *ladder_overrides(core, delay)],
                eval_episodes,
            )
    if climb:
        climb_configs(specs)
    return specs


def _measure(config: dict[str, Any], iterations: int) -> tuple[float, float]:
    """(seconds per env step, MB that grow with the run) of PPO iterations, in this process.

    Memory is counted, not sampled from the process: the rollout storage (with the core states
    stored at every BPTT chunk) plus the largest minibatch's tensors saved for backward (the
    activations), found with ``saved_tensors_hooks``. That is what scales with delay, memory
    length and batch; the process's RSS is dominated by torch itself. (Without
    ``agent.recon_coef``'s head: the ladder does not use it.)
    """
    import torch

    from mnemo.agents.rl.ppo import PPO
    from mnemo.agents.rl.ppo_loss import LossOutputs, ppo_loss
    from mnemo.agents.rl.rollout import compute_gae, sequence_minibatches
    from mnemo.memory.base import tree_leaves

    cfg = from_dict(RLConfig, config)
    cfg.env.num_envs = COST_ENVS
    torch.set_num_threads(cfg.threads or 1)
    torch.manual_seed(cfg.seed)
    ppo = PPO(cfg)
    ppo.iterate()  # warm-up: first-call allocations and lazy inits, not timed
    t0 = time.perf_counter()
    for _ in range(iterations):
        ppo.iterate()
    per_step = (time.perf_counter() - t0) / (iterations * ppo.steps_per_update)

    ro, last_value = ppo.collect()
    stored = [v for k, v in vars(ro).items() if k != "chunk_states"] + [
        leaf for s in ro.chunk_states for leaf in tree_leaves(s)
    ]
    rollout_bytes = sum(x.numel() * x.element_size() for x in stored)
    # One minibatch's forward and loss, as ``PPO.update`` runs them (all minibatches have the
    # same shape): the tensors autograd saves for backward are the activations it must hold.
    p = cfg.ppo
    adv, ret = compute_gae(ro.reward, ro.value, ro.done, last_value, p.gamma, p.gae_lambda)
    mb = next(iter(sequence_minibatches(ro, adv, ret, p.minibatches, ppo.generator)))
    saved: dict[int, int] = {}  # storage -> bytes

    def pack(x: torch.Tensor) -> torch.Tensor:
        saved[x.untyped_storage().data_ptr()] = x.untyped_storage().nbytes()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = ppo.model(mb.obs, mb.prev_action, mb.prev_reward, mb.state, mb.episode_start)
        ppo_loss(LossOutputs(out.logits, out.value, out.aux_loss, None), mb, p)
    peak = sum(saved.values())
    return per_step, (rollout_bytes + peak) / 2**20


def measure_costs(specs: list[RunSpec], iterations: int = 3) -> dict[tuple[str, int], dict]:
    """Cost per (core, delay) from the first seed's config, each in a fresh process."""
    from mnemo.agents.experiments.plots import env_delay

    firsts = {}
    for s in specs:
        firsts.setdefault((s.core, env_delay(s.env)), s)
    costs = {}
    ctx = get_context("spawn")
    for key, spec in firsts.items():
        with ctx.Pool(1) as pool:
            per_step, mb = pool.apply(_measure, (spec.config, iterations))
        costs[key] = {"us_per_step": per_step * 1e6, "mb": mb}
    return costs


def _cells(results: list[dict[str, Any]], costs: dict[tuple[str, int], dict]) -> list[dict]:
    """One row per (core, delay): compare's summary of the runs (if any) and the cost."""
    from mnemo.agents.experiments.plots import env_delay

    rows = {}
    for r in summarize(results):
        rows[(r["core"], env_delay(r["env"]))] = r
    for key, cost in costs.items():
        rows.setdefault(key, {"core": key[0]}).update(cost)
    for (_, delay), r in rows.items():
        r["delay"] = delay
    return list(rows.values())


def budget_words(results: list[dict[str, Any]]) -> str:
    """The runs' budget in words: "N env steps per run", or, when the runs stop at a target
    (``ppo.target_success``), "up to N ..." and the rule they stopped by."""
    ppo = results[0]["config"]["ppo"]  # one config for every run (plan_runs)
    if not ppo.get("target_success"):
        return f"{max(r['steps'] for r in results):,} env steps per run"
    words = (
        f"up to {ppo['total_steps']:,} env steps per run, each run stopping once its training "
        f"success reached {ppo['target_success']} over its last {ppo['target_episodes']} "
        "episodes"
    )
    check = ppo.get("target_check_episodes", 0)
    return words + (f" and its greedy policy's on {check} validation episodes" if check else "")


def write_ladder(
    results: list[dict[str, Any]],
    costs: dict[tuple[str, int], dict],
    out: Path,
    command: str,
    climb: bool = False,
) -> list[Path]:
    """ladder.md and ladder.png from the runs' results (none with --cost-only) and the costs;
    ``climb``: the runs climbed the delays (each warm-started from the previous delay's)."""
    from mnemo.agents.experiments.plots import plot_ladder

    rows = _cells(results, costs)
    cores = list(dict.fromkeys(r["core"] for r in rows))
    delays = sorted({r["delay"] for r in rows})
    cell = {(r["core"], r["delay"]): r for r in rows}
    head = "| core | " + " | ".join(f"D={d}" for d in delays) + " |"
    rule = "|---|" + "---|" * len(delays)
    success = [head, rule]
    cost = [head, rule]
    for core in cores:
        marks, prices = [], []
        for d in delays:
            r = cell.get((core, d), {})
            mark = ""
            if "iqm" in r:
                s90 = r["median_steps_to_90"]
                reach = "-" if s90 is None else f"{s90 / 1e6:.2g}M"
                mark = f"{r['iqm']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({reach})"
            marks.append(mark)
            prices.append(f"{r['us_per_step']:.0f} us, {r['mb']:.0f} MB" if "mb" in r else "")
        success.append(f"| {core} | " + " | ".join(marks) + " |")
        cost.append(f"| {core} | " + " | ".join(prices) + " |")
    plot = plot_ladder(rows, out / "ladder.png", climb)
    text = ["# mnemo ladder", "", f"`{command}`", ""]
    if results:
        seeds = max(r["seeds"] for r in rows if "seeds" in r)
        text += [
            f"Recall at each delay, {budget_words(results)}, {seeds} seed(s) per cell. Eval "
            "success of the final greedy policy on held-out seeds (IQM across seeds, 95% "
            "bootstrap CI), then the median env steps at which the training success rate "
            "reached 0.9 (- : never), over the seeds that reached it. Chance is 0.25.",
            "",
        ]
        if climb:
            text += [
                "Climbed (--climb): each delay warm-started from the same core's run at the "
                "previous delay, the same budget per rung (the first delay from scratch); "
                "steps to 0.9 count from the start of each rung.",
                "",
            ]
        text += [
            *success,
            "",
        ]
    text += [
        f"Cost of a PPO iteration ({COST_ENVS} envs, the same config, one process each): "
        "microseconds per env step, and the memory that grows with the run: the rollout "
        "storage (with the stored core states) plus the largest minibatch's activations "
        "saved for backward.",
        "",
        *cost,
        "",
        f"![ladder]({plot.name})",
    ]
    (out / "ladder.md").write_text("\n".join(text) + "\n")
    return [out / "ladder.md", plot]


def ladder(
    cores: Sequence[str],
    delays: Sequence[int],
    seeds: int,
    out: str | Path,
    steps: int,
    jobs: int = 1,
    config: str | None = None,
    overrides: Sequence[str] = (),
    eval_episodes: int = 100,
    progress: bool = True,
    command: str = "ladder()",
    cost_only: bool = False,
    climb: bool = False,
) -> tuple[list[Path], list[str]]:
    """Run the ladder (resuming what an earlier call left), write its table and plot.

    With ``cost_only`` nothing is trained: only the cost per (core, delay) is measured. With
    ``climb`` each (core, seed) climbs the delays (agents/experiments/climb.py).
    Returns the written paths and the error lines of runs that failed (rerun to retry them).
    """
    from mnemo.agents.experiments.climb import check_climb_mode, execute_climb

    if cost_only and climb:  # a cost per env step does not depend on the weights
        raise ConfigError(
            "--climb trains each delay from the previous one; --cost-only trains "
            "nothing: give one of them"
        )
    out = Path(out)
    specs = plan_ladder(cores, delays, seeds, out, steps, config, overrides, eval_episodes, climb)
    make_folder(out, "--out")  # /proc/x: one line, not a FileNotFoundError traceback
    if cost_only:  # one timed iteration: a cost table of every core in minutes
        return write_ladder([], measure_costs(specs, iterations=1), out, command), []
    check_climb_mode(specs, climb)
    errors = execute_climb(specs, jobs, progress) if climb else execute(specs, jobs, progress)
    results = [load_result(s.result_path) for s in specs if s.result_path.is_file()]
    if not results:
        return [], errors
    write_csv(results, out / "results.csv")
    costs = measure_costs(specs)
    return write_ladder(results, costs, out, command, climb), errors
