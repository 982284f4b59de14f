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

from nets import random_shift
from safety.strict_model import StrictModel


class AlgorithmConfig(StrictModel):
    """Base of every algorithm's hyper-parameters (defaults from ALGORITHMS.md)."""


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
    #: observation kinds the algorithm's networks take; any other is refused at construction.
    observation_kinds: tuple[str, ...] = ("vector", "image")
    #: observation kinds on which K agents can train stacked in one process (`learning.stacked`):
    #: the update must then be written for tensors with a leading agent axis (losses averaged over
    #: the batch axis only, summed before ``backward``; noise drawn with `nets.randn`).
    stackable: tuple[str, ...] = ()

    def __init__(
        self, config: AlgorithmConfig, observation: ObservationSpec, action_dim: int, device: torch.device | str
    ) -> None:
        if observation.kind not in self.observation_kinds:
            raise ValueError(
                f"algorithm '{self.name}' takes {' or '.join(self.observation_kinds)} observations,"
                f" not '{observation.kind}'"
            )
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

    # ---- shared helpers (added; the contract above is unchanged) ---------------------------------

    def run_advice(self, total_updates: int) -> list[str]:
        """Warnings about this config for a run of ``total_updates`` updates (printed by the trainer
        at the start; a schedule longer than the run, say).  None by default."""
        return []

    def header(self) -> dict[str, Any]:
        """What a checkpoint says about itself: algorithm name, observation spec, action size and
        config (plain Python values and lists, loadable with ``torch.load(weights_only=True)``)."""
        obs = self.observation
        return {
            "algorithm": self.name,
            "observation": {
                "kind": obs.kind,
                "shape": list(obs.shape),
                "mean": None if obs.mean is None else np.asarray(obs.mean, dtype=np.float64).tolist(),
                "std": None if obs.std is None else np.asarray(obs.std, dtype=np.float64).tolist(),
            },
            "action_dim": self.action_dim,
            "config": self.config.model_dump(mode="json"),
        }

    def check_compatible(self, state: dict[str, Any]) -> None:
        """Raise ValueError naming the mismatch when ``state`` is not a checkpoint of this algorithm
        with this observation kind and shape and this action size."""
        if not isinstance(state, dict) or "algorithm" not in state:
            raise ValueError(f"not a checkpoint of an offline algorithm (expected '{self.name}')")
        if state["algorithm"] != self.name:
            raise ValueError(f"checkpoint is from algorithm '{state['algorithm']}', not '{self.name}'")
        obs = state.get("observation") or {}
        if obs.get("kind") != self.observation.kind:
            raise ValueError(
                f"checkpoint was trained on '{obs.get('kind')}' observations, not '{self.observation.kind}'"
            )
        if tuple(obs.get("shape", ())) != tuple(self.observation.shape):
            raise ValueError(
                f"checkpoint observation shape {tuple(obs.get('shape', ()))} differs from"
                f" {tuple(self.observation.shape)}"
            )
        if state.get("action_dim") != self.action_dim:
            raise ValueError(f"checkpoint action size {state.get('action_dim')} differs from {self.action_dim}")

    def _make_generator(self) -> torch.Generator:
        """The algorithm's own random stream (noise, augmentation), seeded from torch's global RNG so
        ``torch.manual_seed`` fixes it, and saved in the state so a resume continues it exactly."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        return generator

    def _pack(self, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> dict:
        return {
            **self.header(),
            "networks": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "updates": self.updates,
            "generator": self.generator.get_state(),
        }

    def _unpack(
        self, state: dict, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]
    ) -> None:
        self.check_compatible(state)
        for k, m in modules.items():
            m.load_state_dict(state["networks"][k])
        for k, o in optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.updates = int(state["updates"])
        generator_state = state["generator"].cpu()
        try:
            self.generator.set_state(generator_state)
        except RuntimeError:  # saved on another device type (trained on CUDA, evaluated on CPU): a
            # generator of one kind cannot take the other's state; reseed from it deterministically
            self.generator.manual_seed(int.from_bytes(bytes(generator_state[:8].tolist()), "little") % 2**62)


def observation_spec_from_state(state: dict[str, Any]) -> ObservationSpec:
    """The ObservationSpec a checkpoint was trained with (to rebuild its algorithm for evaluation)."""
    obs = state["observation"]
    return ObservationSpec(
        kind=obs["kind"],
        shape=tuple(obs["shape"]),
        mean=None if obs["mean"] is None else np.asarray(obs["mean"], dtype=np.float32),
        std=None if obs["std"] is None else np.asarray(obs["std"], dtype=np.float32),
    )


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def encode_transition(
    encoder: torch.nn.Module, batch: dict[str, torch.Tensor], augment_pad: int | None, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, h_next): the batch's observations encoded with the encoder's gradient and its next
    observations without; with ``augment_pad`` (images) each is randomly shifted first,
    independently (DrQ-v2's augmentation, drawn from ``generator``: obs first, then next_obs)."""
    obs, next_obs = batch["obs"], batch["next_obs"]
    if augment_pad is not None:
        obs = random_shift(obs, augment_pad, generator)
        next_obs = random_shift(next_obs, augment_pad, generator)
    h = encoder(obs)
    with torch.no_grad():
        h_next = encoder(next_obs)
    return h, h_next
