"""IQL, implicit Q-learning (Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with
Implicit Q-Learning", eqs. 5-7 and appendix B; seed 002 appendix A eqs. 1-3 and Table 4), computed
as in the authors' implicit_q_learning code (learner.py, critic.py, actor.py, policy.py).

IQL never queries an action outside the data: V is fitted to an upper expectile of the target
critic over the dataset actions, Q to a SARSA-like target through V, and the policy is extracted by
advantage-weighted regression.  One `update()`, in the authors' order (learner.py `_update_jit`):

1. value:  u = min(Q'_1, Q'_2)(s, a) - V(s),  L_V = mean |tau - 1(u < 0)| u^2     (eq. 5; Q' target)
2. actor:  A = min(Q'_1, Q'_2)(s, a) - V(s) with the V just updated,
           w = min(exp(beta A), 100) (no gradient),  L_pi = -mean w log pi(a | s)  (eq. 7)
3. critic: y = r_n + discount V(s') with the V just updated (no gradient),
           L_Q = mean (Q_1(s, a) - y)^2 + mean (Q_2(s, a) - y)^2               (eq. 6)
4. target: Q' <- (1 - tau_polyak) Q' + tau_polyak Q.
r_n and discount come from the batch (base.py: n-step return, gamma^n, 0 after a terminal).
``beta`` multiplies the advantage: the paper's "inverse temperature" and the authors' code's
``temperature`` (3.0 on MuJoCo, Table 4's "temperature 3.0"); seed 002's eq. 3 writes exp(A / beta)
and drops the minus sign, but its Table 4 values are the code's, which multiply.

Policy: the authors' IQL actor (NormalTanhPolicy with state_dependent_std=False and
tanh_squash_distribution=False; CORL's GaussianPolicy is the same): a Gaussian N(mu(s), sigma^2)
with mu(s) = tanh(MLP(s)) and a state-independent log sigma (a parameter, initialised at 0,
clamped to [-5, 2] as the authors' log_std_min = -5).  The Gaussian is not squashed, so dataset
actions at the limits +-1 (common here: commands are clipped to the velocity cap) have a finite
log-likelihood, which a tanh-squashed distribution would not.  Acting: the mean, clipped to
[-1, 1] (the authors' evaluation samples with temperature 0, then clips).  The actor's Adam
learning rate follows the authors' cosine decay over ``max_steps`` updates (optax
cosine_decay_schedule: lr_k = lr * 0.5 (1 + cos(pi min(k, T) / T)) at the k-th update from 0; it
stays 0 after T, unlike torch's CosineAnnealingLR that CORL uses, which rises again).  The trainer
does not tell the algorithm its length: set ``max_steps`` to the run's updates (`run_advice`
warns when they differ).

Vector observations are normalised by the dataset mean / (std + 1e-3) (CORL's `normalize`; the
authors' code uses raw states).  Image observations (not in the IQL paper) use the conv setting of
V-D4RL's image baselines (seed 004 appendix D.3-D.4: CQL and BC on "the same networks and
hyperparameters in DrQ+BC"): obs and next_obs are shifted independently (pad 4) and encoded by one
DrQ-v2 encoder, which only the critic loss trains (DrQ-v2/DrQ+BC: the actor, and here the value
net, see detached features; features of next_obs without gradient); actor, critic and value each
have their own DrQ-v2 trunk (Linear -> 50, LayerNorm, tanh) and, by default, 1024-wide MLPs with
orthogonal initialisation; the target critic shares the online encoder, as DrQ-v2's does.

On vectors K agents train stacked in one process (`learning.stacked`): every loss is a mean over
the batch axis that keeps a leading agent axis.

Deviations: PyTorch's default initialisation on vectors (CORL's; the authors' code uses orthogonal
kernels); no policy dropout (Table 4 uses 0.1 only for its binary manipulation tasks).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch import nn

from learning.algorithms.base import Algorithm, AlgorithmConfig, ObservationSpec, encode_transition
from nets import DrQEncoder, Normalizer, TwinQ, mlp, orthogonal_init, soft_update, trunk


class IQLConfig(AlgorithmConfig):
    hidden_dims: tuple[int, ...] | None = Field(
        None,
        description="Actor, critic and value MLP hidden sizes; None: (256, 256) on vectors (paper app. B), "
        "(1024, 1024) on images (DrQ+BC's, as V-D4RL's image baselines).",
    )
    actor_lr: float = Field(3e-4, gt=0, description="Adam lr of the policy, decayed by the cosine schedule (app. B).")
    critic_lr: float = Field(3e-4, gt=0, description="Adam lr of the twin critics (and the image encoder) (app. B).")
    value_lr: float = Field(3e-4, gt=0, description="Adam lr of the value network (app. B).")
    batch_size: int = Field(256, gt=0, description="Batch size (app. B); the trainer samples.")
    tau: float = Field(0.005, gt=0, le=1, description="Polyak rate of the target critics (app. B, alpha = 0.005).")
    expectile: float = Field(
        0.7, gt=0, lt=1, description="Expectile tau of the value loss: 0.7 MuJoCo, 0.9 AntMaze (app. B; 002 Table 4)."
    )
    beta: float = Field(
        3.0,
        ge=0,
        description="Inverse temperature: weights exp(beta * A); 3.0 MuJoCo, 10.0 AntMaze (app. B; the authors' "
        "`temperature`; 002 Table 4).",
    )
    max_weight: float = Field(100.0, gt=0, description="Clip of the advantage weights exp(beta A) (authors' code).")
    max_steps: int = Field(
        1_000_000,
        gt=0,
        description="Length in updates of the actor's cosine lr decay (the paper's 1M training steps); set it to the "
        "run's --updates: shorter, the actor stops learning at max_steps; longer, its lr never decays fully.",
    )
    cosine_schedule: bool = Field(True, description="Cosine-decay the actor lr (authors' opt_decay_schedule).")
    log_std_min: float = Field(-5.0, description="Lower clamp of the policy log std (authors' IQL actor).")
    log_std_max: float = Field(2.0, description="Upper clamp of the policy log std (authors' LOG_STD_MAX).")
    normalize_observations: bool = Field(True, description="Vectors: normalise by the dataset mean/std (CORL).")
    normalizer_eps: float = Field(1e-3, description="Vectors: added to the dataset std (CORL, TD3+BC).")
    encoder_channels: int = Field(32, description="Images: DrQ-v2 encoder channels.")
    channels_last: bool = Field(True, description="Images: channels-last convolutions (faster on CPU).")
    feature_dim: int = Field(50, description="Images: trunk output size (DrQ-v2).")
    augment_pad: int = Field(4, description="Images: random-shift padding (DrQ-v2); 0 disables.")


class GaussianPolicy(nn.Module):
    """pi(a | s) = N(tanh(MLP(s)), diag(exp(2 clamp(log_std)))), log_std state-independent; an
    optional DrQ trunk first (images)."""

    def __init__(
        self,
        in_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        feature_dim: int | None,
        log_std_range: tuple[float, float],
    ) -> None:
        super().__init__()
        self.trunk = trunk(in_dim, feature_dim) if feature_dim else nn.Identity()
        self.policy = mlp(feature_dim or in_dim, hidden, action_dim, output_activation=nn.Tanh)
        self.log_std = nn.Parameter(torch.zeros(action_dim))
        self.log_std_range = log_std_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean tanh(MLP(x)), in [-1, 1]."""
        return self.policy(self.trunk(x))

    def log_prob(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log N(action; mean(x), sigma^2), summed over action dimensions: shape (B,)."""
        log_std = self.log_std.clamp(*self.log_std_range)
        z = (action - self(x)) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class ValueNet(nn.Module):
    """V(s) = MLP(s), shape (B,); an optional DrQ trunk first (images)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], feature_dim: int | None = None) -> None:
        super().__init__()
        self.trunk = trunk(in_dim, feature_dim) if feature_dim else nn.Identity()
        self.v_net = mlp(feature_dim or in_dim, hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.v_net(self.trunk(x)).squeeze(-1)


def expectile_loss(u: torch.Tensor, expectile: float) -> torch.Tensor:
    """mean |tau - 1(u < 0)| u^2 (paper eq. 5's L_2^tau), over the batch (the last axis)."""
    return (torch.abs(expectile - (u < 0).float()) * u.pow(2)).mean(-1)


class IQL(Algorithm):
    name = "iql"
    config_class = IQLConfig
    observation_kinds = ("vector", "image")
    stackable = ("vector",)

    def __init__(self, config: IQLConfig, observation: ObservationSpec, action_dim: int, device) -> None:
        super().__init__(config, observation, action_dim, device)
        c, image = config, observation.kind == "image"
        hidden = c.hidden_dims or ((1024, 1024) if image else (256, 256))
        log_std_range = (c.log_std_min, c.log_std_max)
        if image:
            self.encoder: nn.Module = DrQEncoder(observation.shape, c.encoder_channels, channels_last=c.channels_last)
            dim, feature_dim = self.encoder.repr_dim, c.feature_dim
        else:
            stats = (observation.mean, observation.std) if c.normalize_observations else (None, None)
            self.encoder = Normalizer(observation.shape[0], *stats, eps=c.normalizer_eps)
            dim, feature_dim = observation.shape[0], None
        self.actor = GaussianPolicy(dim, action_dim, hidden, feature_dim, log_std_range)
        self.critic = TwinQ(dim, action_dim, hidden, feature_dim)
        self.value = ValueNet(dim, hidden, feature_dim)
        if image:  # DrQ-v2's initialisation (the encoder initialises itself)
            for net in (self.actor, self.critic, self.value):
                net.apply(orthogonal_init)
        self.encoder, self.actor = self.encoder.to(self.device), self.actor.to(self.device)
        self.critic, self.value = self.critic.to(self.device), self.value.to(self.device)
        self.critic_target = copy.deepcopy(self.critic)
        fused = dict(fused=True) if self.device.type in ("cpu", "cuda") else {}
        critic_params = [*self.encoder.parameters(), *self.critic.parameters()]  # no parameters on vectors
        self.critic_opt = torch.optim.Adam(critic_params, lr=c.critic_lr, **fused)
        self.value_opt = torch.optim.Adam(self.value.parameters(), lr=c.value_lr, **fused)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr, **fused)
        self.actor_schedule = torch.optim.lr_scheduler.LambdaLR(self.actor_opt, lambda k: self.lr_factor(k))
        self.generator = self._make_generator()
        self._image = image

    def lr_factor(self, update: int) -> float:
        """The actor lr's factor at the ``update``-th update counted from 0 (optax's cosine decay)."""
        c = self.config
        if not c.cosine_schedule:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(update, c.max_steps) / c.max_steps))

    def run_advice(self, total_updates: int) -> list[str]:
        c = self.config
        if not c.cosine_schedule or c.max_steps == total_updates:
            return []
        fix = f"--algo-config '{{\"max_steps\": {total_updates}}}'"
        if c.max_steps < total_updates:
            return [
                f"iql: the actor's cosine lr schedule (max_steps={c.max_steps}) ends before this run "
                f"({total_updates} updates): the actor stops learning after update {c.max_steps}; {fix}"
            ]
        return [
            f"iql: the actor's cosine lr schedule (max_steps={c.max_steps}) is longer than this run "
            f"({total_updates} updates): its lr ends at {self.lr_factor(total_updates):.2f} x actor_lr, not 0; {fix}"
        ]

    def _features(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, h_next): `encode_transition` of the batch (images shifted, each independently)."""
        pad = self.config.augment_pad if self._image else None
        return encode_transition(self.encoder, batch, pad, self.generator)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.config
        self.updates += 1
        action = batch["action"]
        h, h_next = self._features(batch)
        hd = h.detach()  # value and actor never train the encoder
        with torch.no_grad():
            target_q = torch.min(*self.critic_target(hd, action))

        # 1. value: expectile regression of V(s) on the target critic
        v = self.value(hd)
        value_loss = expectile_loss(target_q - v, c.expectile)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.sum().backward()
        self.value_opt.step()

        # 2. actor: advantage-weighted log-likelihood, with the updated V
        with torch.no_grad():
            v_new, next_v = self.value(torch.cat([hd, h_next], dim=-2)).split(hd.shape[-2], dim=-1)
            advantage = target_q - v_new
            weight = torch.exp(c.beta * advantage).clamp(max=c.max_weight)
        actor_lr = self.actor_opt.param_groups[0]["lr"]
        actor_loss = -(weight * self.actor.log_prob(hd, action)).mean(-1)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_opt.step()
        self.actor_schedule.step()

        # 3. critic: SARSA-like target through the updated V (trains the image encoder)
        y = batch["reward"] + batch["discount"] * next_v
        q1, q2 = self.critic(h, action)
        critic_loss = (q1 - y).pow(2).mean(-1) + (q2 - y).pow(2).mean(-1)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_opt.step()

        # 4. target critic
        soft_update(self.critic_target, self.critic, c.tau)

        values = torch.stack(
            [value_loss, actor_loss, critic_loss, q1.mean(-1), v.mean(-1), advantage.mean(-1), weight.mean(-1)]
        ).detach()
        keys = ("value_loss", "actor_loss", "critic_loss", "q_mean", "v_mean", "adv_mean", "weight_mean")
        return {**dict(zip(keys, values.tolist(), strict=True)), "actor_lr": actor_lr}

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.device) if self._image else obs.to(self.device, torch.float32)
        return self.actor(self.encoder(obs)).clamp(-1.0, 1.0)

    def _parts(self) -> tuple[dict, dict]:
        modules = dict(
            encoder=self.encoder,
            actor=self.actor,
            critic=self.critic,
            critic_target=self.critic_target,
            value=self.value,
        )
        return modules, dict(actor=self.actor_opt, critic=self.critic_opt, value=self.value_opt)

    def state_dict(self) -> dict[str, Any]:
        return {**self._pack(*self._parts()), "actor_schedule": self.actor_schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._unpack(state, *self._parts())
        self.actor_schedule.load_state_dict(state["actor_schedule"])
