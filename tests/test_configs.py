"""configs/: every file resolves through its ``base:`` chain and loads with its head's loader;
each file holds only what differs from its base; the base mechanism fails in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mnemo.agents.cli import main
from mnemo.agents.config_loader import ConfigError, merge, read_yaml
from mnemo.agents.lm.config import LMConfig, load_lm_config
from mnemo.agents.rl.config import RLConfig, load_rl_config
from mnemo.agents.rl.curriculum import load_curriculum

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
BASES = sorted((ROOT / "configs" / "base").glob("*.yaml"))


def _is_lm(path: Path) -> bool:
    return path.name.startswith("lm_") or path.name == "lm.yaml"


def _load(path: Path) -> RLConfig | LMConfig:
    if _is_lm(path):
        return load_lm_config(str(path))
    return load_curriculum(str(path), [])[0]  # a curriculum's stages are checked too


def test_configs_are_found() -> None:
    assert len(CONFIGS) >= 25 and len(BASES) >= 2


@pytest.mark.parametrize("path", CONFIGS + BASES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_config_resolves_and_loads(path: Path) -> None:
    data = read_yaml(path)
    assert "base" not in data
    cfg = _load(path)  # checks every key, type, env id, core name and core option
    assert isinstance(cfg, LMConfig if _is_lm(path) else RLConfig)


def _repeats(child: dict[str, Any], base: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys of ``child`` whose value equals what ``base`` already gives them."""
    out = []
    for k, v in child.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            out += _repeats(v, base[k], f"{prefix}{k}.")
        elif k in base and base[k] == v:
            out.append(f"{prefix}{k}")
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_holds_only_its_differences(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw.get("base"), str), f"{path.name} should extend a base (`base: ...`)"
    base = read_yaml(path.parent / raw.pop("base"))
    assert not _repeats(raw, base), f"{path.name} repeats its base: {_repeats(raw, base)}"


def test_resolved_configs_keep_their_settings() -> None:
    """Spot checks of what the README's results were measured with."""
    d64 = load_rl_config(str(ROOT / "configs/recall_gru_d64.yaml"))
    assert (d64.env.id, d64.core.name, d64.core.d_model) == ("mnemo/Recall-D64-v0", "gru", 64)
    assert (d64.ppo.rollout_len, d64.ppo.bptt_len, d64.ppo.total_steps) == (66, 66, 6_000_000)
    assert d64.threads == 1 and d64.run.checkpoint_every == 20
    kc = load_rl_config(str(ROOT / "configs/keychest_match_compressive.yaml"))
    assert kc.env.id == "mnemo/KeyChest-Match-D16-v0" and kc.ppo.bptt_len == 32
    assert kc.core.options == {
        "n_layers": 1,
        "n_heads": 4,
        "n_mem": 16,
        "n_cmem": 16,
        "compression_rate": 2,
        "compression": "conv",
        "gated": True,
        "gate_bias": 2.0,
    }
    mal = load_rl_config(str(ROOT / "configs/recall_titans_mal.yaml"))
    assert (mal.core.name, mal.core.d_model, mal.core.options) == (
        "titans_mal",
        32,
        {
            "n_heads": 2,
            "chunk_size": 8,
            "window": 4,
            "intra_chunk_reads": False,
            "bounded_backward": False,
        },
    )
    gt = load_lm_config(str(ROOT / "configs/lm_gtrxl.yaml"))
    assert gt.core.options == {"n_layers": 2, "n_heads": 4, "mem_len": 128, "gate_bias": 2.0}
    assert (gt.core.d_model, gt.train.steps, gt.data.synthetic.rounds) == (128, 3000, 8)
    gru = load_lm_config(str(ROOT / "configs/lm_gru.yaml"))
    assert gru.core.options == {"num_layers": 1}  # no LSTM option leaks in


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_chain_deep_merges_and_the_child_wins(tmp_path: Path) -> None:
    _write(tmp_path, "root/a.yaml", "core: {name: lstm, d_model: 8, num_layers: 1}\nseed: 1\n")
    _write(tmp_path, "root/b.yaml", "base: a.yaml\ncore: {d_model: 16}\nthreads: 2\n")
    c = _write(tmp_path, "c.yaml", "base: root/b.yaml\ncore: {num_layers: 2}\nseed: 3\n")
    assert read_yaml(c) == {
        "core": {"name": "lstm", "d_model": 16, "num_layers": 2},
        "seed": 3,
        "threads": 2,
    }
    cfg = load_rl_config(str(c), ["core.d_model=12"])  # overrides apply after the chain
    assert (cfg.core.d_model, cfg.core.options, cfg.seed, cfg.threads) == (
        12,
        {"num_layers": 2},
        3,
        2,
    )


def test_merge_replaces_lists_and_scalars_but_merges_mappings() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    assert merge(base, {"a": {"y": [3]}, "b": {"z": 1}}) == {"a": {"x": 1, "y": [3]}, "b": {"z": 1}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}  # inputs are not changed


@pytest.mark.parametrize(
    ("files", "match"),
    [
        ({"c.yaml": "base: missing.yaml\n"}, r"c\.yaml: base file not found: .*missing\.yaml"),
        ({"c.yaml": "base: c.yaml\n"}, r"c\.yaml: base files form a cycle: c\.yaml -> c\.yaml"),
        (
            {"c.yaml": "base: a.yaml\n", "a.yaml": "base: b.yaml\n", "b.yaml": "base: a.yaml\n"},
            r"a\.yaml -> b\.yaml -> a\.yaml",
        ),
        ({"c.yaml": "base: 3\n"}, r"c\.yaml: base must name a YAML file"),
        ({"c.yaml": "base: [a.yaml]\n"}, r"c\.yaml: base must name a YAML file"),
        ({"c.yaml": "base: .\n"}, r"c\.yaml: base file not found"),
        ({"c.yaml": "base: a.yaml\n", "a.yaml": "- 1\n"}, r"a\.yaml: the top level must be a"),
    ],
)
def test_bad_bases_fail_in_one_line(
    tmp_path: Path, files: dict[str, str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, text in files.items():
        _write(tmp_path, name, text)
    with pytest.raises(ConfigError, match=match) as info:
        read_yaml(tmp_path / "c.yaml")
    assert "\n" not in str(info.value)
    assert main(["train", "--check", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_base_is_not_a_config_key() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'base'"):
        load_rl_config(str(ROOT / "configs/recall_lstm.yaml"), ["base=recall_gru.yaml"])
