"""Behaviour cloning, the baseline every table needs: the same deterministic actor as the offline RL
algorithms, trained by MSE to the dataset actions.

- vector observations: TD3+BC's actor (MLP [256, 256], tanh) on normalised states, Adam 3e-4
  (Fujimoto & Gu 2021 use this BC as their baseline);
- image observations: DrQ+BC's actor (seed 004 appendix D.3: "the exact same policy network and
  hyperparameters in DrQ+BC"): random shift, DrQ-v2 encoder, trunk, MLP [1024, 1024], Adam 1e-4;
  here the encoder IS trained, by the BC loss.
Deviation: the authors' image BC regresses a noise-perturbed sample of the DrQ actor; plain BC
regresses the actor's deterministic output (no noise schedule to tune).
On vectors K agents train stacked in one process (`learning.stacked`): the loss is a mean over
the batch that keeps a leading agent axis.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from learning.algorithms.base import Algorithm, AlgorithmConfig, ObservationSpec
from nets import DeterministicActor, DrQEncoder, Normalizer, orthogonal_init, random_shift


class BCConfig(AlgorithmConfig):
    hidden_dims: tuple[int, ...] | None = Field(
        None, description="Actor hidden sizes; None: (256, 256) on vectors (TD3+BC), (1024, 1024) on images (DrQ+BC)."
    )
    lr: float | None = Field(None, description="Adam lr; None: 3e-4 on vectors (TD3+BC), 1e-4 on images (Table 8).")
    batch_size: int = Field(256, description="Batch size (TD3+BC and DrQ+BC); the trainer samples.")
    normalize_observations: bool = Field(True, description="Vectors: normalise by the dataset mean/std.")
    normalizer_eps: float = Field(1e-3, description="Added to the dataset std.")
    encoder_channels: int = Field(32, description="Images: DrQ-v2 encoder channels.")
    channels_last: bool = Field(True, description="Images: channels-last convolutions (faster on CPU).")
    feature_dim: int = Field(50, description="Images: trunk output size (DrQ-v2).")
    augment_pad: int = Field(4, description="Images: random-shift padding (DrQ-v2); 0 disables.")


class BC(Algorithm):
    name = "bc"
    config_class = BCConfig
    observation_kinds = ("vector", "image")
    stackable = ("vector",)

    def __init__(self, config: BCConfig, observation: ObservationSpec, action_dim: int, device) -> None:
        super().__init__(config, observation, action_dim, device)
        c, image = config, observation.kind == "image"
        hidden = c.hidden_dims or ((1024, 1024) if image else (256, 256))
        if image:
            self.encoder: nn.Module = DrQEncoder(observation.shape, c.encoder_channels, channels_last=c.channels_last)
            self.actor = DeterministicActor(self.encoder.repr_dim, action_dim, hidden, c.feature_dim)
            self.actor.apply(orthogonal_init)
        else:
            dim = observation.shape[0]
            stats = (observation.mean, observation.std) if c.normalize_observations else (None, None)
            self.encoder = Normalizer(dim, *stats, eps=c.normalizer_eps)
            self.actor = DeterministicActor(dim, action_dim, hidden)
        self.encoder, self.actor = self.encoder.to(self.device), self.actor.to(self.device)
        lr = c.lr or (1e-4 if image else 3e-4)
        fused = dict(fused=True) if self.device.type in ("cpu", "cuda") else {}
        self.opt = torch.optim.Adam([*self.encoder.parameters(), *self.actor.parameters()], lr=lr, **fused)
        self.generator = self._make_generator()
        self._image = image

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.updates += 1
        obs = batch["obs"]
        if self._image:
            obs = random_shift(obs, self.config.augment_pad, self.generator)
        loss = (self.actor(self.encoder(obs)) - batch["action"]).pow(2).mean((-2, -1))
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        return {"bc_loss": loss.tolist()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.device) if self._image else obs.to(self.device, torch.float32)
        return self.actor(self.encoder(obs))

    def _parts(self) -> tuple[dict, dict]:
        return dict(encoder=self.encoder, actor=self.actor), dict(actor=self.opt)

    def state_dict(self) -> dict[str, Any]:
        return self._pack(*self._parts())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._unpack(state, *self._parts())
