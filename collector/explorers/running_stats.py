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
from gymnasium.wrappers.utils import RunningMeanStd as _GymnasiumRunningMeanStd


class RunningMeanStd(_GymnasiumRunningMeanStd):
    """Running mean / variance per component: gymnasium's (Chan et al.'s parallel update, the same
    as the RND code's), with the RND code's initial count (1e-4) and ``std`` floor (1e-8 under the
    square root), empty batches ignored, and a checkpointable state."""

    def __init__(self, shape: Sequence[int] = ()) -> None:
        super().__init__(epsilon=1e-4, shape=tuple(shape), dtype=np.float64)

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return
        super().update(x)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var + 1e-8)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var = np.array(state["mean"]), np.array(state["var"])
        self.count = float(state["count"])
