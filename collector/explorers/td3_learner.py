"""TD3 (Fujimoto et al. 2018): the off-policy learner of the learned explorers `rnd` and `gcrnd`.

Seed 003's appendix Table I architecture: actor "DQN + Dense[300, 200]", critic "DQN + Dense[400,
300]" (the Nature-DQN conv stack for images; the dense layers alone for vectors), Adam lr 1e-4;
the other TD3 settings are RL Coach's TD3 defaults, which 003 used ("we used the TD3
implementation in RL Coach"): batch 100, gamma 0.99, tau 0.005, target policy noise 0.2 clipped
at 0.5, actor and targets updated every 2nd critic update, twin critics on one shared conv
embedder (Coach: one input embedder, two streams).  The TD3 maths are `nets`' ``td3_*``
functions, shared with the offline TD3+BC.

The learner is given its batches: the explorer draws them (``batch_size``) and computes their
``discount`` = gamma x (1 - done) (``gamma``), so those two settings are the explorer's
(`rnd.LearnedExplorerConfig`), not fields of `TD3LearnerConfig`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from collector.explorers.torch_common import ConvLayers, cpu_copy
from nets import (
    DQN_CONV_LAYERS,
    ConvEncoder,
    DeterministicActor,
    TwinQ,
    soft_update,
    td3_actor_due,
    td3_critic_loss,
    td3_policy_q,
    td3_target,
)
from safety.strict_model import StrictModel


class TD3LearnerConfig(StrictModel):
    """TD3's networks and updates (defaults: seed 003 appendix Table I, RL Coach's TD3).

    The field names are the ``explorer.parameters`` keys of `rnd` and `gcrnd` (whose config,
    `rnd.LearnedExplorerConfig`, takes these very fields), so one name means one setting."""

    actor_hidden: tuple[int, ...] = Field(
        (300, 200), description="Actor dense layers after the conv, units per layer (003 Table I)."
    )
    critic_hidden: tuple[int, ...] = Field(
        (400, 300), description="Critic dense layers after the conv, units per layer (003 Table I)."
    )
    conv_layers: ConvLayers = Field(
        DQN_CONV_LAYERS,
        description="TD3 conv stack for images, (channels, kernel px, stride px) per layer: 003's 'DQN' (Nature).",
    )
    actor_lr: float = Field(1e-4, gt=0, description="Actor Adam learning rate (003 Table I).")
    critic_lr: float = Field(1e-4, gt=0, description="Critic Adam learning rate (003 Table I).")
    tau: float = Field(
        0.005, gt=0, le=1, description="Polyak rate of the targets, per target update (RL Coach TD3: 0.005)."
    )
    target_policy_noise: float = Field(
        0.2, ge=0, description="Target policy smoothing std, in the [-1, 1] action box (TD3: 0.2)."
    )
    target_noise_clip: float = Field(
        0.5, ge=0, description="Clip of the smoothing noise, in the [-1, 1] action box (TD3: 0.5)."
    )
    policy_delay: int = Field(2, ge=1, description="Actor/target update every this many critic updates (TD3: 2).")


class EncodedActor(nn.Module):
    """conv -> dense -> tanh: 003's "DQN + Dense[300, 200]" actor on uint8 (B, C, H, W) images."""

    def __init__(self, encoder: ConvEncoder, action_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = DeterministicActor(encoder.repr_dim, action_dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class EncodedTwinQ(nn.Module):
    """One conv embedder feeding two dense Q streams (RL Coach TD3's critic: one input embedder,
    ``num_streams = 2``): 003's "DQN + Dense[400, 300]" critic."""

    def __init__(self, encoder: ConvEncoder, action_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = TwinQ(encoder.repr_dim, action_dim, hidden)

    def forward(self, x: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.encoder(x), action)

    def q1(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.heads.q1(self.encoder(x), action)


class TD3Learner:
    """TD3 on float (B, D) vectors or uint8 (B, C, H, W) images; actions in [-1, 1].

    Batches: ``obs``, ``next_obs``, ``action`` (B, A), ``reward`` (B,), ``discount`` (B,) =
    gamma x (1 - done)."""

    def __init__(
        self,
        kind: str,
        input_shape: Sequence[int],
        action_dim: int,
        config: TD3LearnerConfig,
        device: torch.device | str,
        generator: torch.Generator,
    ) -> None:
        c = config
        self.config, self.device, self.generator = c, torch.device(device), generator
        if kind == "vector":
            (dim,) = input_shape
            self.actor: nn.Module = DeterministicActor(dim, action_dim, c.actor_hidden)
            self.critic: nn.Module = TwinQ(dim, action_dim, c.critic_hidden)
        else:
            self.actor = EncodedActor(ConvEncoder(input_shape, c.conv_layers), action_dim, c.actor_hidden)
            self.critic = EncodedTwinQ(ConvEncoder(input_shape, c.conv_layers), action_dim, c.critic_hidden)
        self.actor.to(self.device)
        self.critic.to(self.device)
        self.actor_target = _clone(self.actor)
        self.critic_target = _clone(self.critic)
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr, **fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, **fused)
        self.updates = 0

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.config
        self.updates += 1
        target = td3_target(
            self.actor_target,
            self.critic_target,
            batch["next_obs"],
            batch["reward"],
            batch["discount"],
            c.target_policy_noise,
            c.target_noise_clip,
            self.generator,
        )
        q = self.critic(batch["obs"], batch["action"])
        critic_loss = td3_critic_loss(q, target)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        stats = {"critic_loss": critic_loss.detach(), "q_mean": q[0].detach().mean()}
        if td3_actor_due(self.updates, c.policy_delay):
            _, q_pi = td3_policy_q(self.actor, self.critic, batch["obs"])
            actor_loss = -q_pi.mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            soft_update(self.critic_target, self.critic, c.tau)
            soft_update(self.actor_target, self.actor, c.tau)
            stats["actor_loss"] = actor_loss.detach()
        return {k: float(v) for k, v in stats.items()}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> np.ndarray:
        return self.actor(obs.to(self.device)).double().cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        return cpu_copy(
            {
                "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict(),
                "actor_target": self.actor_target.state_dict(),
                "critic_target": self.critic_target.state_dict(),
                "actor_opt": self.actor_opt.state_dict(),
                "critic_opt": self.critic_opt.state_dict(),
                "updates": self.updates,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("actor", "critic", "actor_target", "critic_target", "actor_opt", "critic_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.updates = int(state["updates"])


def _clone(module: nn.Module) -> nn.Module:
    clone = copy.deepcopy(module)
    clone.requires_grad_(False)
    return clone
