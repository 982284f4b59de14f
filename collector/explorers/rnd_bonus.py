"""Random network distillation (RND; Burda et al. 2018; ALGORITHMS.md "RND"; seed 002 appendix
B.3): the novelty bonus of the learned explorers `rnd` and `gcrnd`.

A fixed, randomly initialised target f and a predictor f^ trained to match it on visited states;
``novelty(s) = ||f^(s) - f(s)||^2`` (sum over the output features).  Inputs are whitened with a
running mean / std per component (per pixel and channel for images; `running_stats`) and
clipped to [-5, 5]; the intrinsic reward is the novelty divided by a running std of the
novelties.  Vector inputs: target and predictor MLPs [512, 512] -> 512 (002 B.3: "two
hidden-layer MLP with hidden sizes [512, 512]").  Image inputs: the RND paper's networks (its
appendix A.4), which 003 used: target = conv 32 8x8/4, 64 4x4/2, 64 3x3/1 (leaky ReLU) + linear
512; predictor = the same convs + 512 ReLU + 512 ReLU + linear 512; orthogonal initialisation.

Deviations and choices (see also `rnd`'s docstring for the training schedule): the predictor
trains with Adam lr 1e-4 (RND paper); the RND paper normalises the reward by the std of
discounted intrinsic returns, here by the std of the per-step rewards (`update_reward_stats`
with the novelties; an off-policy learner has no rollout returns).  Image inputs are RGB (the RND
paper used one grey frame; the cube's colours matter here), one frame (no frame stack).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from collector.explorers.base import images_chw
from collector.explorers.running_stats import RunningMeanStd
from collector.explorers.torch_common import ConvLayers, cpu_copy
from nets import DQN_CONV_LAYERS, ConvEncoder, mlp, orthogonal_init
from safety.strict_model import StrictModel


class RNDBonusConfig(StrictModel):
    """The RND networks and their training (defaults: the RND paper, seed 002 B.3).

    The field names are the ``explorer.parameters`` keys of `rnd` and `gcrnd` (whose config,
    `rnd.LearnedExplorerConfig`, takes these very fields), so one name means one setting."""

    rnd_hidden: tuple[int, ...] = Field(
        (512, 512),
        description="RND MLP hidden sizes (units per layer) for vectors (002 B.3); the predictor's head after "
        "the conv stack for images.",
    )
    rnd_output_dim: int = Field(512, ge=1, description="RND embedding size, features (RND paper: 512).")
    rnd_conv_layers: ConvLayers = Field(
        DQN_CONV_LAYERS,
        description="RND conv stack for images, (channels, kernel px, stride px) per layer (RND paper: "
        "32 8x8/4, 64 4x4/2, 64 3x3/1).",
    )
    rnd_lr: float = Field(1e-4, gt=0, description="RND predictor Adam learning rate (RND paper: 1e-4).")
    rnd_obs_clip: float = Field(
        5.0, gt=0, description="Clip of the whitened RND inputs, in running stds (RND paper: 5)."
    )


class RND:
    """Random network distillation on vector (B, D) or image (B, H, W, 3) uint8 observations.

    `novelty(batch)` -> (B,) float64: the raw squared prediction error; `intrinsic_reward(batch)`
    divides it by the running std of the novelties (`update_reward_stats`).  `update_obs_stats`
    feeds the input whitening; `fit(states, epochs, batch_size, rng)` trains the predictor."""

    def __init__(
        self, kind: str, shape: Sequence[int], config: RNDBonusConfig, device: torch.device | str = "cpu"
    ) -> None:
        self.kind, self.config, self.device = kind, config, torch.device(device)
        c = config
        if kind == "vector":
            (dim,) = shape
            self.input_shape: tuple[int, ...] = (int(dim),)
            self.target = mlp(dim, c.rnd_hidden, c.rnd_output_dim)
            self.predictor = mlp(dim, c.rnd_hidden, c.rnd_output_dim)
        else:
            h, w, channels = shape
            self.input_shape = (int(channels), int(h), int(w))
            t_conv = ConvEncoder(self.input_shape, c.rnd_conv_layers, nn.LeakyReLU, uint8_input=False)
            p_conv = ConvEncoder(self.input_shape, c.rnd_conv_layers, nn.LeakyReLU, uint8_input=False)
            self.target = nn.Sequential(t_conv, nn.Linear(t_conv.repr_dim, c.rnd_output_dim))
            self.predictor = nn.Sequential(p_conv, mlp(p_conv.repr_dim, c.rnd_hidden, c.rnd_output_dim))
        for net in (self.target, self.predictor):
            net.apply(orthogonal_init)
            net.to(self.device)
        self.target.requires_grad_(False)
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        self.optimizer = torch.optim.Adam(self.predictor.parameters(), lr=c.rnd_lr, **fused)
        self.obs_stats = RunningMeanStd(self.input_shape)
        self.reward_stats = RunningMeanStd(())

    def _prepare(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch)
        return images_chw(x) if self.kind == "image" else x

    def _whiten(self, prepared: np.ndarray) -> torch.Tensor:
        x = (prepared.astype(np.float32) - self.obs_stats.mean.astype(np.float32)) / self.obs_stats.std.astype(
            np.float32
        )
        clip = self.config.rnd_obs_clip
        return torch.from_numpy(np.clip(x, -clip, clip)).to(self.device)

    def update_obs_stats(self, batch: np.ndarray) -> None:
        self.obs_stats.update(self._prepare(batch))

    def _errors(self, x: torch.Tensor) -> torch.Tensor:
        return (self.predictor(x) - self.target(x)).pow(2).sum(dim=1)

    @torch.no_grad()
    def novelty(self, batch: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """||f^(s) - f(s)||^2 for each observation of the batch."""
        prepared = self._prepare(batch)
        out = [self._errors(self._whiten(prepared[i : i + chunk])) for i in range(0, len(prepared), chunk)]
        return torch.cat(out).double().cpu().numpy() if out else np.zeros(0)

    def update_reward_stats(self, novelties: np.ndarray) -> None:
        self.reward_stats.update(np.asarray(novelties, dtype=np.float64).reshape(-1))

    def intrinsic_reward(self, batch: np.ndarray) -> np.ndarray:
        """novelty / running std of the novelties (RND's reward normalisation)."""
        return self.novelty(batch) / float(self.reward_stats.std)

    def fit(self, states: np.ndarray, epochs: int, batch_size: int, rng: np.random.Generator) -> float:
        """Train the predictor on ``states`` for ``epochs`` shuffled passes; returns the mean loss."""
        prepared = self._prepare(states)
        losses = []
        for _ in range(epochs):
            order = rng.permutation(len(prepared))
            for start in range(0, len(order), batch_size):
                x = self._whiten(prepared[np.sort(order[start : start + batch_size])])
                loss = self._errors(x).mean()
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(loss.detach())
        return float(torch.stack(losses).mean()) if losses else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {
            "target": cpu_copy(self.target.state_dict()),
            "predictor": cpu_copy(self.predictor.state_dict()),
            "optimizer": cpu_copy(self.optimizer.state_dict()),
            "obs_stats": self.obs_stats.state_dict(),
            "reward_stats": self.reward_stats.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        self.predictor.load_state_dict(state["predictor"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_stats.load_state_dict(state["obs_stats"])
        self.reward_stats.load_state_dict(state["reward_stats"])
