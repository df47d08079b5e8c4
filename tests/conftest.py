"""Shared test setup: one torch thread (faster for these tiny models on 2 cores) and no windows."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
torch.set_num_threads(1)
