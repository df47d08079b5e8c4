"""``mnemo lm train | eval | sample`` end to end on tiny runs, configs, and user errors."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from mnemo import memory
from mnemo.agents.lm.cli import add_lm_parser
from mnemo.agents.lm.config import load_lm_config

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "core.d_model=16",
    "train.steps=3",
    "train.batch_size=2",
    "train.segment_len=16",
    "train.eval_every=2",
    "train.eval_bytes=400",
    "train.sample_bytes=8",
    "train.sample_every=2",
    "data.synthetic.docs=20",
    "data.synthetic.val_docs=3",
    "run.progress=false",
    "threads=1",
]


def lm(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mnemo")
    add_lm_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lm", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("lmrun")
    assert lm(["train", str(ROOT / "configs/lm_lstm.yaml"), f"run.dir={d}", *TINY]) == 0
    return d


def test_train_writes_checkpoint_and_tensorboard(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert {"model", "optimizer", "config", "step"} <= set(ckpt) and ckpt["step"] == 3
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0}).Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/bits_per_byte", "val/bits_per_byte", "train/tokens_per_s"} <= tags
    assert "val/recall_bits_per_byte" in tags
    assert any("sample" in t for t in acc.Tags()["tensors"])


def test_eval_prints_bits_per_byte_last(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert lm(["eval", str(run_dir), "--data", "synthetic:recall", "--max-bytes", "500"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    name, value = last.split()
    assert name == "bits_per_byte" and 0 < float(value) < 9


def test_eval_core_option_only_where_the_core_has_it(
    run_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["eval", str(run_dir), "--max-bytes", "300", "--core-option", "mem_len=512"]
    assert lm(argv) == 0
    assert "has no option 'mem_len'; ignored" in capsys.readouterr().err


def test_eval_needle_table(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["eval", str(run_dir), "--data", "synthetic:needle", "--max-bytes", "3000"]
    assert lm(argv) == 0
    out = capsys.readouterr().out
    assert "1024-2047" in out and "accuracy" in out
    argv = [*argv[:4], "--synthetic", "distances=[64, 300]", "--synthetic", "docs_per_distance=2"]
    assert lm(argv) == 0
    out = capsys.readouterr().out
    assert "64-127" in out and "256-511" in out and "4 documents" in out
    assert lm([*argv, "--synthetic", "nope=1"]) == 2
    assert "no option 'nope'" in capsys.readouterr().err


def test_sample_generates_bytes(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["sample", str(run_dir), "--prompt", "remember: ", "--bytes", "20", "--top-k", "5"]
    assert lm([*argv, "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("remember: ") and len(out.encode()) >= len("remember: ") + 1


def test_eval_and_sample_use_the_runs_threads(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    set_to: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    assert lm(["sample", str(run_dir), "--prompt", "ab", "--bytes", "2"]) == 0
    assert lm(["eval", str(run_dir), "--max-bytes", "64"]) == 0
    assert lm(["eval", str(run_dir), "--max-bytes", "64", "--threads", "2"]) == 0
    assert set_to == [1, 1, 2]  # the run's threads=1; --threads wins


def test_sample_reads_a_prompt_that_is_not_utf8(run_dir: Path, capsys) -> None:
    # argv bytes that are not UTF-8 arrive as surrogates (surrogateescape); a byte LM reads them.
    prompt = os.fsdecode(b"\xff\xfeab")
    assert lm(["sample", str(run_dir), "--prompt", prompt, "--bytes", "3"]) == 0
    assert capsys.readouterr().out.startswith("\ufffd\ufffdab")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "configs/lm_lstm.yaml", "data.path=/no/such/file.txt", *TINY],
        ["train", "configs/lm_lstm.yaml", "core.name=nope"],
        ["train", "configs/lm_lstm.yaml", "core.mem_len=5"],
        ["train", "configs/lm_lstm.yaml", "train.stepz=5"],
        ["train", "configs/missing.yaml"],
        ["eval", "/no/such/run"],
        ["sample", "/no/such/run", "--prompt", "x"],
        ["train", "configs/lm_lstm.yaml", "data.path=", *TINY],
        ["eval", "{run}", "--data", ""],
        ["train", "configs/lm_lstm.yaml", *TINY, "train.eval_bytes=0"],  # logged val 0 bits
        ["train", "configs/lm_lstm.yaml", *TINY, "train.sample_bytes=-1"],
        ["train", "configs/lm_lstm.yaml", *TINY, "train.weight_decay=-1"],
        ["train", "configs/lm_lstm.yaml", *TINY, "train.min_lr_ratio=5"],  # lr rose to 5 x lr
        ["train", "configs/lm_lstm.yaml", *TINY, "data.synthetic.distances=[]"],  # a traceback
        ["eval", "{run}", "--core-option", "mem_len"],  # named no flag
        ["eval", "{run}", "--data", "synthetic:needle", "--synthetic", "compact=maybe"],
        ["eval", "{run}", "--data", "synthetic:needle", "--synthetic", "seed=x"],
        ["eval", "{run}", "--data", "synthetic:needle", "--synthetic", "distances=5"],
        ["eval", "{run}", "--data", "synthetic:needle", "--synthetic", "docs_per_distance=1e9"],
    ],
    ids=[
        "missing-data",
        "unknown-core",
        "unknown-option",
        "unknown-key",
        "missing-config",
        "missing-ckpt",
        "sample-missing-ckpt",
        "empty-data-path",  # Path("") is "." : it trained on the cwd's .txt files
        "empty-eval-data",  # it evaluated the run's data
        "eval-bytes-0",
        "sample-bytes-negative",
        "weight-decay-negative",
        "min-lr-ratio-above-1",
        "no-distances",
        "core-option-without-value",
        "eval-synthetic-not-a-bool",  # taken as true
        "eval-synthetic-not-an-int",  # a traceback
        "eval-synthetic-not-a-list",  # a traceback
        "eval-synthetic-too-big",  # ran without end
    ],
)
def test_user_errors_are_one_line_exit_2(
    argv: list[str], run_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [str(ROOT / a) if a.startswith("configs/") else a.format(run=run_dir) for a in argv]
    assert lm(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    if "NAME=VALUE" in err[0]:
        assert err[0] == "error: --core-option 'mem_len' must look like NAME=VALUE"
    if "empty" in err[0]:
        assert "is empty; give a text file, a folder of .txt books" in err[0]


def test_bad_data_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02" * 100)
    (tmp_path / "nodocs").mkdir()
    (tmp_path / "short.txt").write_bytes(b"short")
    cfg = str(ROOT / "configs/lm_lstm.yaml")
    for name, msg in [
        ("empty.txt", "empty"),
        ("bin.txt", "binary"),
        ("nodocs", "no .txt files in directory"),
        ("nodocs", "(a folder of data holds .txt books, one document each, or train/"),
        ("short.txt", "too few"),
    ]:
        assert lm(["train", cfg, f"data.path={tmp_path / name}", *TINY]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1


def test_eval_rejects_a_ppo_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mnemo.agents.checkpoint import save_atomic

    save_atomic({"model": {}, "config": {}, "step": 0}, tmp_path / "ppo.pt")
    assert lm(["eval", str(tmp_path / "ppo.pt")]) == 2
    assert "not a language-model checkpoint" in capsys.readouterr().err


def lm_configs() -> list[Path]:
    return sorted((ROOT / "configs").glob("lm_*.yaml"))


@pytest.mark.parametrize("path", lm_configs(), ids=lambda p: p.stem)
def test_every_lm_config_names_a_registered_core(path: Path) -> None:
    name = path.stem.removeprefix("lm_")
    if name not in memory.core_names():
        pytest.skip(f"core {name!r} is not registered (yet)")
    cfg = load_lm_config(str(path))  # also checks every core option
    assert cfg.core.name == name


def test_every_registered_core_has_an_lm_config() -> None:
    have = {p.stem.removeprefix("lm_") for p in lm_configs()}
    missing = sorted(set(memory.core_names()) - have)
    assert not missing, f"no configs/lm_<core>.yaml for {missing}"


def test_train_and_eval_on_a_folder_of_books(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    books = tmp_path / "books"
    books.mkdir()
    for i in range(3):
        (books / f"{i}.txt").write_text(f"book {i}: " + "the river ran on. " * (20 + 10 * i))
    run = tmp_path / "run"
    over = [f"data.path={books}", f"run.dir={run}", *TINY]
    assert lm(["train", str(ROOT / "configs/lm_gru.yaml"), *over]) == 0
    assert lm(["eval", str(run / "checkpoints" / "last.pt"), "--data", str(books)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert "3 documents" in out[-2] and out[-1].startswith("bits_per_byte ")


def test_eval_of_a_file_run_reads_the_bytes_it_held_out(tmp_path: Path, capsys) -> None:
    """Without --data, eval scores the run's validation: a plain file's held-out end, not the
    whole file (95% of which it trained on); --split train gives the rest, test is refused."""
    book = tmp_path / "book.txt"
    book.write_text("the river ran on. " * 200)  # 3600 bytes: 180 held out
    run = tmp_path / "run"
    assert (
        lm(
            [
                "train",
                str(ROOT / "configs/lm_lstm.yaml"),
                f"data.path={book}",
                f"run.dir={run}",
                *TINY,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert lm(["eval", str(run)]) == 0
    assert f"on {book} (held out): 1 documents, 179 bytes predicted" in capsys.readouterr().out
    assert lm(["eval", str(run), "--split", "train"]) == 0
    assert "1 documents, 3419 bytes predicted" in capsys.readouterr().out
    assert lm(["eval", str(run), "--split", "test"]) == 2
    assert "has no test split" in capsys.readouterr().err
    book.unlink()  # as a relative data.path is, seen from another folder
    assert lm(["eval", str(run)]) == 2
    assert f"the run's data {book} is not here" in capsys.readouterr().err


@pytest.mark.parametrize(
    "core", [c for c in memory.core_names() if "mem_len" in memory.core_options(c)]
)
def test_longer_memory_at_evaluation(core: str, tmp_path: Path, capsys) -> None:
    run = tmp_path / core
    over = ["core.mem_len=8", "core.n_layers=1", "core.n_heads=2"]
    assert lm(["train", str(ROOT / f"configs/lm_{core}.yaml"), f"run.dir={run}", *TINY, *over]) == 0
    argv = ["eval", str(run), "--max-bytes", "400", "--core-option", "mem_len=32"]
    assert lm(argv) == 0
    captured = capsys.readouterr()
    assert "ignored" not in captured.err
    assert captured.out.strip().splitlines()[-1].startswith("bits_per_byte ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_without_cuda_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert lm(["train", str(ROOT / "configs/lm_lstm.yaml"), "device=cuda", *TINY]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_eval_of_one_byte_documents(run_dir: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "x.txt").write_bytes(b"x")
    assert lm(["eval", str(run_dir), "--data", str(tmp_path / "x.txt")]) == 2
    assert "nothing to predict" in capsys.readouterr().err


def test_text_that_would_not_fit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """From the files' sizes: a PG-19 train/ (~11 GB, ~44 GB as it loads) was read until the
    machine ran out of memory."""
    from mnemo.agents import memory_budget

    monkeypatch.setattr(memory_budget, "_budget", lambda device: (8 * 2**20, "memory"))
    books = tmp_path / "pg" / "train"
    books.mkdir(parents=True)
    (books / "a.txt").write_bytes(b"the river ran on. " * 100_000)  # 1.8 MB: 7.2 MB to load
    (tmp_path / "pg" / "validation").mkdir()
    (tmp_path / "pg" / "validation" / "b.txt").write_bytes(b"x" * 100)
    argv = ["train", str(ROOT / "configs/lm_lstm.yaml"), f"data.path={tmp_path / 'pg'}", *TINY]
    assert lm([*argv, "--check"]) == 2
    err = capsys.readouterr().err
    assert "text data as it loads 0.0067" in err and "lower data.path (less text)" in err
    assert lm([*argv, "memory_check=false", "--check"]) == 0


def test_a_warmup_longer_than_the_run_is_the_start_of_the_longer_run() -> None:
    # Not refused: a run trained in parts (--resume with more train.steps) warms up as one
    # uninterrupted run does, since the warm-up does not depend on train.steps.
    from mnemo.agents.lm.train import lr_at

    short = load_lm_config(None, ["train.steps=50", "train.warmup_steps=100"])
    long = load_lm_config(None, ["train.steps=2000", "train.warmup_steps=100"])
    assert [lr_at(s, short) for s in range(50)] == [lr_at(s, long) for s in range(50)]
    assert lr_at(49, short) == short.train.lr / 2


def test_a_report_before_the_first_log_shows_the_steps_so_far(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = [*TINY, "train.steps=4", "run.print_every=2", "run.log_every=4"]
    assert lm(["train", str(ROOT / "configs/lm_lstm.yaml"), f"run.dir={tmp_path}", *argv]) == 0
    first = next(line for line in capsys.readouterr().out.splitlines() if "steps=2/4" in line)
    assert "train/bits_per_byte=n/a" not in first and "tokens_per_s=n/a" not in first
    bpb = float(first.split("train/bits_per_byte=")[1].split()[0])
    assert 0 < bpb < 9  # bytes of a 256-symbol alphabet: ~8 bits per byte untrained
