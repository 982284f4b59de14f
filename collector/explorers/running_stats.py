"""Running mean and variance per component, as the RND code keeps them (Burda et al. 2018).

`rnd_bonus.RND` whitens its inputs with one (per vector component, or per pixel and channel of an
image) and normalises its intrinsic reward by another (a scalar, over the per-step novelties).
It has no settings, hence no config: its constants are the RND code's (an initial count of 1e-4,
a variance floor of 1e-8 under the square root of `std`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class RunningMeanStd:
    """Running mean / variance per component (Chan et al.'s parallel update, as the RND code)."""

    def __init__(self, shape: Sequence[int] = ()) -> None:
        self.mean = np.zeros(tuple(shape), dtype=np.float64)
        self.var = np.ones(tuple(shape), dtype=np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return
        batch_mean, batch_var, n = x.mean(axis=0), x.var(axis=0), len(x)
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var + 1e-8)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var = np.array(state["mean"]), np.array(state["var"])
        self.count = float(state["count"])
