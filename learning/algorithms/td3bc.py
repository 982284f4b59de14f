"""TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning"; seed 004
eq. 2): TD3 whose actor loss adds a behaviour-cloning term,
    actor loss = -lambda * mean Q1(s, pi(s)) + mean (pi(s) - a)^2,  lambda = alpha / mean|Q1| (detached).

Same computation as the authors' TD3_BC.py, made faster: data stays on the device, the critic's
weight gradients are not computed for the actor loss (the original computes and discards them),
Adam is the fused kernel and the target update one fused lerp.  The TD3 maths (target policy
smoothing, clipped double-Q target, critic loss, delayed actor update) are `nets`'
`td3_*` functions, shared with the collector's learned explorers.  Every loss is a mean over the
batch axis that keeps leading axes, so the same update trains K stacked agents
(`learning.stacked`, `pandalab train --seeds`): ``.sum()`` adds their independent losses.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pydantic import Field

from learning.algorithms.base import Algorithm, AlgorithmConfig, ObservationSpec
from nets import (
    DeterministicActor,
    Normalizer,
    TwinQ,
    soft_update,
    td3_actor_due,
    td3_critic_loss,
    td3_policy_q,
    td3_target,
)


class TD3BCConfig(AlgorithmConfig):
    hidden_dims: tuple[int, ...] = Field((256, 256), description="Actor and critic MLP hidden sizes (paper sec. 5).")
    actor_lr: float = Field(3e-4, description="Adam learning rate of the actor (paper, appendix C).")
    critic_lr: float = Field(3e-4, description="Adam learning rate of the twin critics (paper, appendix C).")
    batch_size: int = Field(256, description="Batch size; the trainer samples batches of this size.")
    tau: float = Field(0.005, description="Polyak rate of the target networks (TD3).")
    policy_noise: float = Field(0.2, description="Std of the target policy smoothing noise (x action limit 1).")
    noise_clip: float = Field(0.5, description="Clip of the target policy smoothing noise.")
    policy_freq: int = Field(2, description="Actor and target updates once per this many critic updates.")
    alpha: float = Field(2.5, description="BC weight: lambda = alpha / mean|Q| (paper eq. 5).")
    normalize_observations: bool = Field(True, description="Normalise states by the dataset mean/std (paper sec. 5).")
    normalizer_eps: float = Field(1e-3, description="Added to the dataset std, as in the authors' code.")


class TD3BC(Algorithm):
    name = "td3bc"
    config_class = TD3BCConfig
    observation_kinds = ("vector",)
    stackable = ("vector",)

    def __init__(self, config: TD3BCConfig, observation: ObservationSpec, action_dim: int, device) -> None:
        super().__init__(config, observation, action_dim, device)
        c, dim = config, observation.shape[0]
        stats = (observation.mean, observation.std) if c.normalize_observations else (None, None)
        self.normalizer = Normalizer(dim, *stats, eps=c.normalizer_eps).to(self.device)
        self.actor = DeterministicActor(dim, action_dim, c.hidden_dims).to(self.device)
        self.critic = TwinQ(dim, action_dim, c.hidden_dims).to(self.device)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        fused = dict(fused=True) if self.device.type in ("cpu", "cuda") else {}
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr, **fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, **fused)
        self.generator = self._make_generator()
        self._last_actor_losses = torch.zeros(3, device=self.device)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.config
        self.updates += 1
        obs, next_obs = self.normalizer(batch["obs"]), self.normalizer(batch["next_obs"])
        action = batch["action"]
        target_q = td3_target(
            self.actor_target,
            self.critic_target,
            next_obs,
            batch["reward"],
            batch["discount"],
            c.policy_noise,
            c.noise_clip,
            self.generator,
        )
        q1, q2 = self.critic(obs, action)
        critic_loss = td3_critic_loss((q1, q2), target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_opt.step()

        if td3_actor_due(self.updates, c.policy_freq):
            pi, q = td3_policy_q(self.actor, self.critic, obs)
            lmbda = c.alpha / q.abs().mean(-1).detach()
            bc_loss = (pi - action).pow(2).mean((-2, -1))
            actor_loss = -lmbda * q.mean(-1) + bc_loss
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.sum().backward()
            self.actor_opt.step()
            soft_update(self.critic_target, self.critic, c.tau)
            soft_update(self.actor_target, self.actor, c.tau)
            self._last_actor_losses = torch.stack([actor_loss.detach(), bc_loss.detach(), lmbda])
        values = torch.cat([torch.stack([critic_loss.detach(), q1.detach().mean(-1)]), self._last_actor_losses])
        keys = ("critic_loss", "q_mean", "actor_loss", "bc_loss", "lambda")
        return dict(zip(keys, values.tolist(), strict=True))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.normalizer(obs.to(self.device, torch.float32)))

    def _parts(self) -> tuple[dict, dict]:
        modules = dict(
            normalizer=self.normalizer,
            actor=self.actor,
            critic=self.critic,
            actor_target=self.actor_target,
            critic_target=self.critic_target,
        )
        return modules, dict(actor=self.actor_opt, critic=self.critic_opt)

    def state_dict(self) -> dict[str, Any]:
        return {**self._pack(*self._parts()), "last_actor_losses": self._last_actor_losses.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._unpack(state, *self._parts())
        self._last_actor_losses = state["last_actor_losses"].to(self.device)
