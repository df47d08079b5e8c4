"""Heads on memory cores and what runs them.

- ``rl/``: the PPO actor-critic head (``mnemo train``, ``mnemo eval``);
- ``lm/``: the byte-level language-model head (``mnemo lm ...``);
- ``experiments/``: ``mnemo compare``, cross-seed statistics, plots;
- this folder: the shared run infrastructure both heads use (config loading, checkpoints,
  distributed, interrupts) and the CLI.
"""
