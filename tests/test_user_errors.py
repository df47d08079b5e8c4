"""One line and exit 2, never a traceback, for each user error of issue 18.7 and 18.8: the
other head's checkpoint, incomplete or unfitting checkpoints, bad flags, odd data paths, a
run folder that is a file, ``~``, resuming a backup, a full disk or read-only folder, and
sizes that would exhaust memory."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_checkpoint_safety import one_line
from test_lm_resume import lm_train_args
from test_reliability import TINY

from mnemo.agents import memory_budget
from mnemo.agents.checkpoint import load_checkpoint, save_atomic
from mnemo.agents.cli import main

RL = ["train", "configs/recall_lstm.yaml", *TINY]
COMPARE = ["compare", "--cores", "lstm", "--envs", "mnemo/Recall-D8-v0"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished tiny RL run and LM run, crafted checkpoints and odd data paths."""
    root = tmp_path_factory.mktemp("runs")
    paths = {"rl": root / "rl", "lm": root / "lm"}
    assert main([*RL, "ppo.total_steps=128", f"run.dir={paths['rl']}"]) == 0
    assert main(lm_train_args("lstm", paths["lm"], "train.steps=2")) == 0
    paths["lm_gtrxl"] = root / "lm_gtrxl"
    assert main(lm_train_args("gtrxl", paths["lm_gtrxl"], "train.steps=1")) == 0
    ckpt = load_checkpoint(paths["rl"])
    crafted = {
        "no_config": {k: v for k, v in ckpt.items() if k != "config"},
        "not_a_dict": [1, 2],
        "misfit": {**ckpt, "model": {k: v[:1] for k, v in ckpt["model"].items()}},
        "unregistered": {**ckpt, "config": {**ckpt["config"], "env": {"id": "mnemo/Nope-v0"}}},
    }
    for name, obj in crafted.items():
        paths[name] = root / f"{name}.pt"
        save_atomic(obj, paths[name])
    paths["loop"] = root / "loop"
    paths["loop"].symlink_to(paths["loop"])
    paths["dangling"] = root / "dangling"
    paths["dangling"].symlink_to(root / "nothing")
    paths["fifo"] = root / "fifo"
    os.mkfifo(paths["fifo"])
    paths["file"] = root / "a_file"
    paths["file"].write_text("not a folder")
    return paths


CASES = [
    (["eval", "{lm}"], "is a language-model run; use `mnemo lm eval`"),
    (["lm", "eval", "{rl}"], "is not a language-model checkpoint (it is an RL run"),
    (["lm", "sample", "{rl}"], "is not a language-model checkpoint (it is an RL run"),
    (["train", "--resume", "{lm}"], "is a language-model run; use `mnemo lm train --resume`"),
    (["lm", "train", "--resume", "{rl}"], "use `mnemo train --resume`"),
    # a run.dir given with --resume was ignored: the run went on in its own folder
    (["lm", "train", "--resume", "{lm}", "train.steps=9", "run.dir={lm}2"], "--resume continues"),
    (["train", "--resume", "{rl}", "ppo.total_steps=1e6", "run.dir={rl}2"], "--resume continues"),
    (["eval", "{no_config}"], "is not a complete mnemo checkpoint: it has no config"),
    (["eval", "{not_a_dict}"], "is not a mnemo checkpoint (it holds no dict)"),
    (["eval", "{misfit}"], "its weights do not fit this model"),
    (["eval", "{unregistered}"], "env.id: unknown env 'mnemo/Nope-v0'"),
    (["eval", "{rl}", "--episodes", "0"], "--episodes must be >= 1, got 0"),
    (["eval", "{rl}", "--video-episodes", "-1"], "--video-episodes must be >= 1, got -1"),
    (["eval", "{rl}", "--video", "{rl}/ep.mp4"], "--video takes a folder"),
    (["eval", "{rl}", "--env", "delay"], "--env 'delay' must look like KEY=VALUE"),
    (["eval", "{rl}", "--env", "a.b=1"], "--env 'a.b=1': KEY is one env kwarg, without dots"),
    (["eval", "{rl}", "--env", "delai=9"], "'delai'; it accepts delay, num_symbols, noise"),
    ([*RL, "env.kwargs.delai=9"], "'delai' was raised from the environment creator for"),
    ([*RL, "env.kwargs.delai=9"], "it accepts delay, num_symbols, noise"),
    (
        [*RL, "env.id=envs_for_tests:Tiny-EndsBoth-v0", "env.batched=false", "run.video_every=9"],
        "run.video_every: envs_for_tests:Tiny-EndsBoth-v0 cannot render rgb_array frames",
    ),
    ([*RL, "env.id=mnemo/Recall-D17-v0"], "unknown env 'mnemo/Recall-D17-v0'; did you mean mnemo/"),
    (
        [*RL, "env.id=envs_for_tests:Tiny-NeedsExtra-v0"],
        "gymnasium cannot make it: Tiny-NeedsExtra needs the 'extra' package",
    ),
    (
        [*RL, "env.id=envs_for_tests:Tiny-GridActions-v0", "env.batched=false"],
        "action space MultiDiscrete of shape (2, 2) is not supported",
    ),
    (["eval", "{rl}", "--env", "delay=-1"], "delay must be an integer >= 0, got -1"),
    # a width past 2**63: torch says TypeError ("Overflow when unpacking long"), found by fuzzing
    ([*RL, f"core.d_model={2**63}"], "cannot be built with these sizes"),
    (["lm", "train", "--check", "configs/lm_lstm.yaml", f"core.d_model={2**63}"], "be built"),
    (["eval", "{rl}", "--env", "num_symbols=6"], "observations would be"),
    (["eval", "{rl}", "--video", ""], "--video is empty; give a folder"),
    (["eval", "{rl}", "--video", "{file}"], "--video: {file} is a file, not a folder"),
    (["eval", "{rl}", "--video", "{file}/sub"], "--video: cannot create the folder"),
    (["lm", "sample", "{lm}", "--temperature", "nan"], "--temperature must be a finite number"),
    (["lm", "sample", "{lm}", "--temperature", "-1"], "--temperature must be a finite number"),
    (["lm", "sample", "{lm}", "--top-k", "-3"], "--top-k must be >= 0"),
    (["lm", "eval", "{lm}", "--max-bytes", "0"], "--max-bytes must be >= 1"),
    (["lm", "eval", "{lm}", "--threads", "-1"], "--threads must be 0 (torch's default) to 1024"),
    (["lm", "eval", "{lm_gtrxl}", "--core-option", "mem_len=1e11"], "this run would need ~"),
    (["lm", "eval", "{lm_gtrxl}", "--core-option", "mem_len=-4"], "mem_len must be >= 1"),
    (["lm", "eval", "{lm}", "--data", "{loop}"], "is a symlink loop"),
    (["lm", "eval", "{lm}", "--data", "{dangling}"], "is a symlink to"),
    (["lm", "eval", "{lm}", "--data", "{fifo}"], "is a FIFO (named pipe), not a text file"),
    ([*RL, "run.dir={file}"], "run.dir: {file} is a file, not a folder"),
    # /proc refuses new folders (ENOENT); where there is no /proc, making one is refused too
    ([*RL, "run.dir=/proc/mnemo-x/run"], "run.dir: cannot create the folder /proc/mnemo-x/run"),
    (["lm", "train", *lm_train_args("lstm", Path("x"))[2:], "run.dir=/proc/x"], "run.dir: cannot"),
    (["lm", "train", *lm_train_args("lstm", Path("x"))[2:], "run.dir={file}"], "is a file"),
    (["compare", "--cores", "lstm", "--envs", "mnemo/Recall-D8-v0", "--out", "{file}"], "--out"),
    (
        [*COMPARE, "--steps", "16384", "--out", "/proc/mnemo-x"],
        "--out: cannot create the folder /proc/mnemo-x",
    ),
    (
        ["ladder", "--delays", "8", "--steps", "128", "--cost-only", "--out", "/proc/mnemo-x"],
        "--out: cannot create the folder /proc/mnemo-x",
    ),
    ([*RL, "env.kwargs.render_mode=human"], "env.kwargs.render_mode: render_mode is mnemo's"),
    (["eval", "{rl}", "--env", "render_mode=human"], "render_mode is mnemo's to set"),
    ([*RL, "env.kwargs.noise=maybe"], "noise must be true or false, got 'maybe'"),
    ([*RL, "env.kwargs.delay=true"], "delay must be an integer >= 0, got True"),
    ([*RL, "seed=-1"], "seed must be 0 to 4294967295 (numpy's range), got -1"),
    ([*RL, "seed=1e20"], "seed must be 0 to 4294967295"),
    ([*RL, "ppo.target_success=1.5"], "ppo.target_success must be in [0, 1] (0 = off), got 1.5"),
    ([*RL, "threads=-1"], "threads must be 0 (torch's default) to 1024, got -1"),
    ([*RL, "threads=100000"], "threads must be 0 (torch's default) to 1024"),
]


@pytest.mark.parametrize(
    ("argv", "said"), CASES, ids=[" ".join(c[0][:2]) + f" {i}" for i, c in enumerate(CASES)]
)
def test_one_line_exit_2(
    argv: list[str], said: str, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    names = {k: str(v) for k, v in runs.items()}
    capsys.readouterr()
    assert main([a.format(**names) for a in argv]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: ") and said.format(**names) in line, line


NOT_A_CHECKPOINT = [
    ("", "the checkpoint path is empty; give a checkpoint file or a run folder"),
    ("/dev/null", "/dev/null is not a checkpoint file (it is a character device); give a"),
    ("fifo", "fifo is not a checkpoint file (it is a FIFO (named pipe)); give a checkpoint"),
    ("book.txt", "book.txt is not a readable mnemo checkpoint (not a file torch.save wrote)"),
    ("folder", "folder is a folder but not a run folder (no checkpoints/ in it); give a"),
    ("nope", "checkpoint not found: nope"),
]


@pytest.mark.parametrize(("path", "said"), NOT_A_CHECKPOINT, ids=[p for p, _ in NOT_A_CHECKPOINT])
@pytest.mark.parametrize("command", [["eval"], ["lm", "eval"], ["lm", "sample"]], ids=" ".join)
def test_what_is_not_a_checkpoint_says_so(
    command: list[str],
    path: str,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if path == "/dev/null" and not Path(path).exists():
        pytest.skip("no /dev/null here")
    monkeypatch.chdir(tmp_path)
    os.mkfifo("fifo")
    Path("book.txt").write_text("a book, not a checkpoint")
    Path("folder").mkdir()
    assert main([*command, path]) == 2
    assert said in one_line(capsys.readouterr().err)


@NO_CUDA
@pytest.mark.parametrize(
    "argv",
    [
        [*RL, "device=cuda", "ppo.total_steps=128"],
        ["lm", "train", *lm_train_args("lstm", Path("x"))[2:], "device=cuda"],
        ["eval", "{rl}", "--device", "cuda"],
        ["lm", "sample", "{lm}", "--device", "cuda"],
        ["train", "--check", *RL[1:], "device=cuda"],
        ["train", "--check", "configs/recall_d1024_gtrxl.yaml", "device=cuda"],  # a curriculum
        ["lm", "train", "--check", *lm_train_args("lstm", Path("x"))[2:], "device=cuda"],
    ],
)
def test_cuda_without_cuda(
    argv: list[str], runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {k: str(v) for k, v in runs.items()}
    argv = [a.format(**names).replace("run.dir=x", f"run.dir={tmp_path}/r") for a in argv]
    if argv[0] == "train":
        argv.append(f"run.dir={tmp_path}/r")
    capsys.readouterr()
    assert main(argv) == 2
    assert "CUDA is not available here; use device=cpu" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main([*RL, "ppo.total_steps=128", "run.dir=~/run"]) == 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert main(["train", "--resume", "~/run", "ppo.total_steps=256"]) == 0
    assert load_checkpoint(tmp_path / "run")["step"] == 256


def test_resume_from_a_backup_continues_its_run_folder(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["rl"], run)
    (run / "backups").mkdir()
    shutil.copy(run / "checkpoints" / "last.pt", run / "backups" / "x.pt")
    assert main(["train", "--resume", str(run / "backups" / "x.pt"), "ppo.total_steps=256"]) == 0
    assert load_checkpoint(run)["step"] == 256  # RUN/checkpoints/last.pt, not RUN/backups/...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    lone = tmp_path / "x.pt"
    shutil.copy(run / "backups" / "x.pt", lone)
    capsys.readouterr()
    assert main(["train", "--resume", str(lone)]) == 2
    assert "no run folder holds it" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("head", [RL, ["lm", "train", *lm_train_args("lstm", Path("x"))[2:]]])
def test_check_refuses_a_run_dir_that_holds_a_run(
    head: list[str], runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """As training would: --check said the config was fine, then training refused."""
    run = runs["lm" if head[0] == "lm" else "rl"]
    capsys.readouterr()
    assert main([*head, f"run.dir={run}", "--check"]) == 2
    assert "already holds a run" in one_line(capsys.readouterr().err)
    assert main([*head, f"run.dir={run}", "run.overwrite=true", "--check"]) == 0


def test_a_moved_run_resumes_where_it_now_is(runs: dict[str, Path], tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(runs["lm"], moved)  # its checkpoint's run.dir names the old folder
    assert main(["lm", "train", "--resume", str(moved), "train.steps=3", f"run.dir={moved}/"]) == 0
    assert load_checkpoint(moved)["config"]["run"]["dir"] == str(moved)


def fail_write(monkeypatch: pytest.MonkeyPatch, code: int, at_call: int) -> None:
    """The ``at_call``-th ``torch.save`` writes half a file, then fails as the disk would."""
    original, calls = torch.save, [0]

    def save(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == at_call:
            f.write(b"half a checkpoint")
            raise OSError(code, os.strerror(code))
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize(
    ("code", "said"),
    [(errno.ENOSPC, "no space left on device"), (errno.EROFS, "read-only file system")],
)
def test_a_failed_save_keeps_the_previous_checkpoint(
    code: int,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fail_write(monkeypatch, code, at_call=2)  # the second update's checkpoint
    assert main([*RL, "ppo.total_steps=512", f"run.dir={tmp_path}"]) == 2
    last = tmp_path / "checkpoints" / "last.pt"
    assert one_line(capsys.readouterr().err) == (
        f"error: cannot write {last}: {said}; the previous last.pt is kept\n"
    )
    assert [p.name for p in last.parent.iterdir()] == ["last.pt"]  # no .tmp left
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 128
    assert main(["train", "--resume", str(tmp_path), "ppo.total_steps=256"]) == 0


def test_a_read_only_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As root (which ignores permissions) a read-only file system is simulated at the lock.
    real_open = os.open

    def read_only(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert main([*RL, "ppo.total_steps=128", f"run.dir={tmp_path / 'run'}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == f"error: read-only file system: {tmp_path / 'run' / '.lock'}\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_folder_without_write_permission(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path.chmod(0o555)
    try:
        assert main([*RL, "ppo.total_steps=128", f"run.dir={tmp_path / 'run'}"]) == 2
        assert "permission denied" in one_line(capsys.readouterr().err)
    finally:
        tmp_path.chmod(0o755)


SIZES = [
    [*RL, "env.num_envs=1e6"],
    [*RL, "agent.encoder_hidden=1e8"],
    [*RL, "ppo.rollout_len=1e7"],
    ["train", "configs/recall_gtrxl.yaml", "core.mem_len=1e5"],
    ["lm", "train", "configs/lm_gtrxl.yaml", "core.mem_len=1e7"],
    ["lm", "train", "configs/lm_lstm.yaml", "train.detach_every=1e6"],
]


@pytest.mark.parametrize("argv", SIZES, ids=[a[-1] for a in SIZES])
def test_sizes_that_would_exhaust_memory_are_refused_unless_insisted(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As on a 16 GiB machine, whatever this one has.
    monkeypatch.setattr(memory_budget, "_budget", lambda device: (16 * 2**30, "memory"))
    capsys.readouterr()
    assert main([*argv, "--check"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: this run would need ~") and "GiB (" in line
    assert "more than half of this machine's 16 GiB of memory" in line
    assert line.endswith("or set memory_check=false to try anyway\n")
    assert main([*argv, "memory_check=false", "--check"]) == 0  # insisted: the config passes


def test_every_shipped_config_passes_on_a_16_gib_machine() -> None:
    from mnemo.agents.lm.config import check_run_memory as lm_memory
    from mnemo.agents.lm.config import load_lm_config
    from mnemo.agents.rl.config import check_run_memory
    from mnemo.agents.rl.curriculum import load_curriculum

    for path in sorted(Path("configs").glob("*.yaml")):
        if path.name.startswith("lm_"):
            assert lm_memory(load_lm_config(str(path))) < 8 * 2**30, path
            continue
        cfg, stages = load_curriculum(str(path), [])
        for stage in [s.cfg for s in stages] or [cfg]:  # every stage of a curriculum
            need = check_run_memory(stage, 1000)
            assert need < 8 * 2**30, (path, stage.env.id, need)


def test_eval_does_not_judge_the_training_sizes(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run trained on a big machine evaluates on a small one: eval steps 16 envs, not the
    # run's num_envs x rollout_len.
    monkeypatch.setattr(memory_budget, "_budget", lambda device: (2**20, "memory"))
    assert main(["eval", str(runs["rl"]), "--episodes", "1"]) == 0


def test_eval_on_a_variant_of_the_env(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--env KEY=VALUE`` evaluates the same policy on a variant (here a longer delay)."""
    capsys.readouterr()
    assert main(["eval", str(runs["rl"]), "--episodes", "4", "--env", "delay=12"]) == 0
    assert "on mnemo/Recall-D8-v0 (delay=12): success" in capsys.readouterr().out


def test_a_refused_variant_names_its_space_on_one_line() -> None:
    """Spaces whose repr spans lines (minigrid's images) are named by kind and shape."""
    import gymnasium as gym
    import numpy as np

    from mnemo.agents.rl.encoders import space_words

    high = np.arange(7 * 7 * 3, dtype=np.uint8).reshape(7, 7, 3)  # bounds per cell: long repr
    image = gym.spaces.Box(np.zeros_like(high), high, dtype=np.uint8)
    assert "\n" in str(image) and space_words(image) == "Box of shape (7, 7, 3)"
    assert space_words(gym.spaces.Discrete(3)) == "Discrete(3)"


@pytest.mark.parametrize(
    "argv",
    [["eval", "run", "--episodes", "abc"], ["bogus"], ["lm", "sample"], ["compare", "--cores"]],
)
def test_a_bad_command_line_is_one_line(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    """argparse's own errors too: one line naming the argument (and the choices), exit 2."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("error: mnemo") and "--help)" in line, line
