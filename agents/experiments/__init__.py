"""Experiments over many runs: ``mnemo compare``, cross-seed statistics, plots."""
