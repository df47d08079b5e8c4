"""The installed namespace is ``mnemo``: every package folder is listed in pyproject.toml, and
the generic names ``memory``, ``envs`` and ``agents`` are not importable outside the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the project supports 3.10
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {"mnemo"}
    for top in ("memory", "envs", "agents"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT).parts
            found.add(".".join(("mnemo", *rel)))
    assert found == listed
    assert cfg["package-dir"]["mnemo.memory"] == "memory"


def test_mnemo_namespace_only(tmp_path: Path) -> None:
    code = (
        "import importlib, mnemo.memory, mnemo.envs, mnemo.agents.cli\n"
        "assert mnemo.memory.make_core('gru', 8).d_model == 8\n"
        "for name in ('memory', 'envs', 'agents'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    raise SystemExit(f'{name} is importable outside the repository')\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
