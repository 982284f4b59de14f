"""The contract every offline algorithm meets, so the trainer, the evaluator and the tests treat
TD3+BC, BCQ, DrQ+BC and BC alike.

Batches are dicts of tensors already on the algorithm's device:

- ``obs`` / ``next_obs``: float32 (B, D) raw vector observations, which the algorithm normalises
  itself with the dataset statistics in its `ObservationSpec` (kept in its state, so a loaded
  checkpoint acts on raw observations), or uint8 (B, 3 * frame_stack, H, W) images.
- ``action``: float32 (B, A), the command sent, scaled to [-1, 1] by the action limit.
- ``reward``: float32 (B,), the n-step discounted return r_t + ... + gamma^(n-1) r_{t+n-1}.
- ``discount``: float32 (B,), gamma^n if the n-step window did not end in a terminal, else 0
  (time-limit truncations keep their discount: they are not terminals).

Actions are produced in [-1, 1]; the caller scales them by the action limit.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict


class AlgorithmConfig(BaseModel):
    """Base of every algorithm's hyper-parameters (defaults from ALGORITHMS.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclasses.dataclass(frozen=True)
class ObservationSpec:
    """What the networks take: ``kind`` "vector" with ``shape`` (D,), or "image" with ``shape``
    (3 * frame_stack, H, W) uint8.  ``mean`` / ``std`` (vector only, shape (D,)): the dataset
    statistics the algorithm normalises observations with (TD3+BC: states normalised by the
    dataset mean/std); None means no normalisation."""

    kind: str
    shape: tuple[int, ...]
    mean: np.ndarray | None = None
    std: np.ndarray | None = None


class Algorithm(abc.ABC):
    """One offline RL (or BC) learner."""

    name: str
    config_class: type[AlgorithmConfig] = AlgorithmConfig

    def __init__(
        self, config: AlgorithmConfig, observation: ObservationSpec, action_dim: int, device: torch.device | str
    ) -> None:
        self.config = config
        self.observation = observation
        self.action_dim = action_dim
        self.device = torch.device(device)
        self.updates = 0

    @abc.abstractmethod
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One gradient step (or one step of the algorithm's update schedule); returns losses."""

    @abc.abstractmethod
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actions in [-1, 1] for a batch of observations (no gradient)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Networks, target networks, optimisers and counters: everything to resume exactly."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
