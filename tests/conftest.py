"""Shared test setup: one torch thread (faster for these tiny models on 2 cores), no windows,
and fuzz tests (hypothesis) that draw the same examples on every run, so that CI never fails
on an input nobody has seen; ``MNEMO_FUZZ=random`` draws new ones (how to look for new bugs:
a failure there becomes a fixed case in tests/test_user_errors.py)."""

from __future__ import annotations

import os

import torch
from hypothesis import settings

settings.register_profile("same_examples", derandomize=True)
settings.register_profile("random", derandomize=False)
settings.load_profile("random" if os.environ.get("MNEMO_FUZZ") == "random" else "same_examples")

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
torch.set_num_threads(1)
