"""Torch plumbing the learned explorers' parts share (`rnd_bonus`, `td3_learner`, `rnd`): the
device choice, CPU copies of state dicts for checkpoints, the conv-stack type of their configs."""

from __future__ import annotations

from typing import Any

import torch

ConvLayers = tuple[tuple[int, int, int], ...]
"""A conv stack: one (output channels, kernel size in pixels, stride in pixels) per layer."""


def resolve_device(name: str) -> torch.device:
    """A torch device from a config's ``device``: cpu, cuda[:n], or auto (cuda when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cpu_copy(obj: Any) -> Any:
    """A copy of a (nested) state dict with every tensor on the CPU (checkpoints load anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj
