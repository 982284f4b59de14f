"""``random``: actions drawn uniformly from the action box every step (seed 003's baseline)."""

from __future__ import annotations

import numpy as np

from collector.explorers.base import Explorer


class UniformRandom(Explorer):
    observation_kinds = ("vector", "image")  # it ignores what it sees

    def act(self, observation: np.ndarray) -> np.ndarray:
        limit = self.spec.action_limit
        return self.rng.uniform(-limit, limit)
