"""mnemo: reinforcement-learning agents and language models on long-range memory cores.

The installed namespace. Its parts live at the repository root and are mapped here by
``package-dir`` in pyproject.toml: ``mnemo.memory`` is memory/ (the cores; ``make_core``),
``mnemo.envs`` is envs/ (gymnasium environments, registered on import), ``mnemo.agents`` is
agents/ (the PPO and language-model heads, experiments, the CLI).
"""

from __future__ import annotations

__version__ = "0.1.0"
