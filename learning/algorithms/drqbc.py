"""DrQ+BC (Lu et al. 2022, "Challenges and Opportunities in Offline RL from Visual Observations",
seed 004 sec. 3.2, appendix C.2, D.2 and Table 8): DrQ-v2 (Yarats et al. 2021) with TD3+BC's actor
loss, computed as in the authors' drqbc/drqv2.py:

- obs and next_obs are augmented independently by random shifts (pad 4) and encoded by one conv
  encoder; next features without gradient; the encoder is trained by the critic loss only.
- critic (trunk + twin Q): target r_n + discount * min Q'(h', a'), a' = clip(pi(h') + clip(N(0, s^2), +-c)),
  where r_n / discount come from the batch (n-step, gamma^n, 0 at terminals).
- actor on detached features: a = clip_st(pi(h) + clip(N(0, s^2), +-c)) (DrQ-v2 samples its
  TruncatedNormal in the actor loss too), loss = -lambda mean min(Q1, Q2)(h, a) + mean (a - a_data)^2
  with lambda = alpha / mean|min(Q1, Q2)| (detached).
- s follows linear(1.0 -> 0.1) over the first `stddev_steps` updates; c = 0.3.

Update counting: the authors' loop calls `update` every step but `update_every_steps = 2` makes
every other call a no-op, and the schedule runs on the loop's step. Here one `update()` is one full
update (critic, actor, target), so the schedule is in updates: Table 8's linear(1.0, 0.1, 500000)
loop steps is 250000 updates (the default); the authors' offline config linear(1.0, 0.1, 250000)
would be 125000. `actor_update_every` > 1 gives TD3-style delayed actor and target updates instead.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from learning.algorithms.base import Algorithm, AlgorithmConfig, ObservationSpec
from nets import (
    DeterministicActor,
    DrQEncoder,
    TwinQ,
    frozen,
    orthogonal_init,
    random_shift,
    soft_update,
    td3_critic_loss,
)
from nets import straight_through_clamp as clamp_st


class DrQBCConfig(AlgorithmConfig):
    encoder_channels: int = Field(32, description="Conv channels of the 4-layer DrQ-v2 encoder.")
    channels_last: bool = Field(True, description="Run the convolutions channels-last (faster on CPU).")
    feature_dim: int = Field(50, description="Trunk output size (DrQ-v2 default feature_dim).")
    hidden_dim: int = Field(1024, description="Actor and critic MLP width, two hidden layers (DrQ-v2).")
    lr: float = Field(1e-4, description="Adam lr, Table 8 (the authors' offline config uses 3e-4).")
    batch_size: int = Field(256, description="Batch size (Table 8); the trainer samples.")
    tau: float = Field(0.01, description="Critic target Polyak rate (DrQ-v2 critic_target_tau).")
    actor_update_every: int = Field(1, description="Actor/target update period in updates (see module doc).")
    stddev_init: float = Field(1.0, description="Policy noise std at update 0 (Table 8 schedule).")
    stddev_final: float = Field(0.1, description="Policy noise std after the schedule (Table 8).")
    stddev_steps: int = Field(
        250_000,
        gt=0,
        description="Schedule length in updates = Table 8's 500000 loop steps. For a shorter run use about half "
        "its updates: with 250000 a 20K-update run never leaves the high-noise phase (README 'Does it learn?').",
    )
    stddev_clip: float = Field(0.3, description="Noise clip (Table 8 'exploration stddev. clip').")
    alpha: float = Field(2.5, description="BC weight alpha (sec. C.2, Table 8).")
    augment_pad: int = Field(4, description="Random-shift padding in pixels (DrQ-v2); 0 disables.")


class DrQBC(Algorithm):
    name = "drqbc"
    config_class = DrQBCConfig
    observation_kinds = ("image",)

    def __init__(self, config: DrQBCConfig, observation: ObservationSpec, action_dim: int, device) -> None:
        super().__init__(config, observation, action_dim, device)
        c, hidden = config, (config.hidden_dim, config.hidden_dim)
        enc = DrQEncoder(observation.shape, c.encoder_channels, channels_last=c.channels_last)
        self.encoder = enc.to(self.device)  # DrQ-v2's orthogonal initialisation everywhere
        self.actor = DeterministicActor(enc.repr_dim, action_dim, hidden, c.feature_dim).apply(orthogonal_init)
        self.critic = TwinQ(enc.repr_dim, action_dim, hidden, c.feature_dim).apply(orthogonal_init)
        self.actor, self.critic = self.actor.to(self.device), self.critic.to(self.device)
        self.critic_target = copy.deepcopy(self.critic)
        fused = dict(fused=True) if self.device.type in ("cpu", "cuda") else {}
        # one Adam over encoder + critic: identical to DrQ-v2's two Adams stepped together (same lr)
        critic_params = [*self.encoder.parameters(), *self.critic.parameters()]
        self.critic_opt = torch.optim.Adam(critic_params, lr=c.lr, **fused)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr, **fused)
        self.generator = self._make_generator()
        self._last_actor_losses = torch.zeros(3, device=self.device)

    def stddev(self, step: int) -> float:
        mix = min(max(step / self.config.stddev_steps, 0.0), 1.0)
        return (1.0 - mix) * self.config.stddev_init + mix * self.config.stddev_final

    def run_advice(self, total_updates: int) -> list[str]:
        c = self.config
        if c.stddev_steps <= total_updates:
            return []
        return [
            f"drqbc: the policy-noise schedule (stddev_steps={c.stddev_steps}) is longer than this run "
            f"({total_updates} updates): the noise ends at {self.stddev(total_updates):.2f}, not "
            f"{c.stddev_final}; for short runs --algo-config '{{\"stddev_steps\": {max(1, total_updates // 2)}}}' "
            "(half the run, as Table 8's schedule is half of its training)"
        ]

    def _noisy(self, mu: torch.Tensor, std: float) -> torch.Tensor:
        eps = torch.randn(mu.shape, device=self.device, generator=self.generator) * std
        return clamp_st(mu + eps.clamp(-self.config.stddev_clip, self.config.stddev_clip))

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.config
        std = self.stddev(self.updates)  # DrQ-v2 evaluates the schedule before counting the step
        self.updates += 1
        action = batch["action"]
        h = self.encoder(random_shift(batch["obs"], c.augment_pad, self.generator))
        with torch.no_grad():
            h_next = self.encoder(random_shift(batch["next_obs"], c.augment_pad, self.generator))
            next_action = self._noisy(self.actor(h_next), std)
            target_q = batch["reward"] + batch["discount"] * torch.min(*self.critic_target(h_next, next_action))
        q1, q2 = self.critic(h, action)
        critic_loss = td3_critic_loss((q1, q2), target_q)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        if self.updates % c.actor_update_every == 0:
            h = h.detach()
            pi = self._noisy(self.actor(h), std)
            with frozen(self.critic):
                q = torch.min(*self.critic(h, pi))
            lmbda = c.alpha / q.detach().abs().mean()
            bc_loss = F.mse_loss(pi, action)
            actor_loss = -lmbda * q.mean() + bc_loss
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            soft_update(self.critic_target, self.critic, c.tau)
            self._last_actor_losses = torch.stack([actor_loss.detach(), bc_loss.detach(), lmbda])
        values = torch.cat([torch.stack([critic_loss.detach(), q1.detach().mean()]), self._last_actor_losses])
        out = dict(zip(("critic_loss", "q_mean", "actor_loss", "bc_loss", "lambda"), values.tolist(), strict=True))
        return {**out, "stddev": std}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.encoder(obs.to(self.device)))

    def _parts(self) -> tuple[dict, dict]:
        modules = dict(encoder=self.encoder, actor=self.actor, critic=self.critic, critic_target=self.critic_target)
        return modules, dict(actor=self.actor_opt, critic=self.critic_opt)

    def state_dict(self) -> dict[str, Any]:
        return {**self._pack(*self._parts()), "last_actor_losses": self._last_actor_losses.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._unpack(state, *self._parts())
        self._last_actor_losses = state["last_actor_losses"].to(self.device)
