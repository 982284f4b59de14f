"""Continuous BCQ, batch-constrained deep Q-learning (Fujimoto, Meger & Precup 2019, "Off-Policy
Deep Reinforcement Learning without Exploration", Algorithm 1; the authors' BCQ.py).

Each update: (1) fit a conditional VAE G(a | s) to dataset actions (reconstruction + 0.5 KL);
(2) critic target: for each s' decode n actions (latent clipped to [-0.5, 0.5]), perturb them with
the target actor xi(s', a) in [-phi, phi], score with the target critics by soft clipped double-Q
lambda min + (1 - lambda) max, take the max over the n; (3) train the perturbation actor to
maximise Q1(s, a + xi(s, a)) for VAE-decoded a; (4) Polyak target updates. Acting: decode 100
actions, perturb, take the argmax of Q1.

Deviation: observations are normalised by the dataset mean/std (the authors used raw states;
joint angles and velocities differ in scale); `normalize_observations=False` restores it.
K agents train stacked in one process (`learning.stacked`): every loss is a mean over the batch
axis that keeps a leading agent axis, and the noise comes from `nets.randn`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field
from torch import nn

from learning.algorithms.base import Algorithm, AlgorithmConfig, ObservationSpec
from nets import Normalizer, TwinQ, frozen, gaussian_kl, mlp, randn, soft_update, td3_critic_loss


class BCQConfig(AlgorithmConfig):
    vae_hidden: tuple[int, ...] = Field((750, 750), description="VAE encoder and decoder hidden sizes (paper D.1).")
    latent_factor: int = Field(2, description="VAE latent size = latent_factor x action size (paper D.1).")
    latent_clip: float = Field(0.5, description="Latent clipped to [-c, c] when decoding (paper D.1).")
    actor_hidden: tuple[int, ...] = Field((400, 300), description="Perturbation actor hidden sizes (paper D.1).")
    critic_hidden: tuple[int, ...] = Field((400, 300), description="Twin critics hidden sizes (paper D.1).")
    phi: float = Field(0.05, description="Perturbation range, fraction of the action limit (001's code used 0.1).")
    lmbda: float = Field(0.75, description="Soft clipped double-Q weight of the min (paper eq. 13).")
    n_target_samples: int = Field(10, description="VAE actions per next state for the target (paper D.1).")
    n_act_samples: int = Field(100, description="VAE actions per state when acting (authors' code).")
    lr: float = Field(1e-3, description="Adam learning rate of VAE, actor and critics (authors' code).")
    batch_size: int = Field(100, description="Batch size (paper D.1); the trainer samples.")
    tau: float = Field(0.005, description="Polyak rate of the target networks (paper D.1).")
    kl_weight: float = Field(0.5, description="VAE loss = reconstruction + kl_weight x KL (paper D.1).")
    normalize_observations: bool = Field(True, description="Deviation: normalise states by dataset mean/std.")
    normalizer_eps: float = Field(1e-3, description="Added to the dataset std.")
    act_seed: int = Field(0, description="Seed of the VAE samples drawn when acting, so act() is deterministic.")


class VAE(nn.Module):
    """BCQ's conditional VAE: E(s, a) -> (mean, std) of z; D(s, z) -> tanh action."""

    def __init__(self, obs_dim: int, action_dim: int, latent_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp(obs_dim + action_dim, hidden[:-1], hidden[-1], output_activation=nn.ReLU)
        self.mean = nn.Linear(hidden[-1], latent_dim)
        self.log_std = nn.Linear(hidden[-1], latent_dim)
        self.decoder = mlp(obs_dim + latent_dim, hidden, action_dim, output_activation=nn.Tanh)

    def forward(self, obs, action, generator):
        h = self.encoder(torch.cat([obs, action], dim=-1))
        mean, std = self.mean(h), self.log_std(h).clamp(-4, 15).exp()  # clamped as in the authors' code
        z = mean + std * randn(std.shape, generator, std.device)
        return self.decode(obs, z), mean, std

    def decode(self, obs, z):
        return self.decoder(torch.cat([obs, z], dim=-1))


class Perturbation(nn.Module):
    """xi(s, a): a + phi * tanh(MLP(s, a)), clamped to [-1, 1]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int], phi: float) -> None:
        super().__init__()
        self.net, self.phi = mlp(obs_dim + action_dim, hidden, action_dim, output_activation=nn.Tanh), phi

    def forward(self, obs, action):
        return (action + self.phi * self.net(torch.cat([obs, action], dim=-1))).clamp(-1.0, 1.0)


class BCQ(Algorithm):
    name = "bcq"
    config_class = BCQConfig
    observation_kinds = ("vector",)
    stackable = ("vector",)

    def __init__(self, config: BCQConfig, observation: ObservationSpec, action_dim: int, device) -> None:
        super().__init__(config, observation, action_dim, device)
        c, dim = config, observation.shape[0]
        stats = (observation.mean, observation.std) if c.normalize_observations else (None, None)
        self.normalizer = Normalizer(dim, *stats, eps=c.normalizer_eps).to(self.device)
        self.vae = VAE(dim, action_dim, c.latent_factor * action_dim, c.vae_hidden).to(self.device)
        self.actor = Perturbation(dim, action_dim, c.actor_hidden, c.phi).to(self.device)
        self.critic = TwinQ(dim, action_dim, c.critic_hidden).to(self.device)
        self.actor_target, self.critic_target = copy.deepcopy(self.actor), copy.deepcopy(self.critic)
        fused = dict(fused=True) if self.device.type in ("cpu", "cuda") else {}
        self.vae_opt = torch.optim.Adam(self.vae.parameters(), lr=c.lr, **fused)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.lr, **fused)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.lr, **fused)
        self.generator = self._make_generator()

    def _sample_actions(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """VAE-decoded actions with the latent drawn from N(0, 1) clipped to [-latent_clip, latent_clip]."""
        clip = self.config.latent_clip
        z = randn((*obs.shape[:-1], self.vae.latent_dim), generator, self.device)
        return self.vae.decode(obs, z.clamp(-clip, clip))

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c = self.config
        self.updates += 1
        obs, next_obs, action = self.normalizer(batch["obs"]), self.normalizer(batch["next_obs"]), batch["action"]
        # (1) VAE
        recon, mean, std = self.vae(obs, action, self.generator)
        recon_loss, kl_loss = (recon - action).pow(2).mean((-2, -1)), gaussian_kl(mean, std)
        vae_loss = recon_loss + c.kl_weight * kl_loss
        self.vae_opt.zero_grad(set_to_none=True)
        vae_loss.sum().backward()
        self.vae_opt.step()
        # (2) critics
        with torch.no_grad():
            next_rep = torch.repeat_interleave(next_obs, c.n_target_samples, -2)
            next_action = self.actor_target(next_rep, self._sample_actions(next_rep, self.generator))
            tq1, tq2 = self.critic_target(next_rep, next_action)
            target_q = c.lmbda * torch.min(tq1, tq2) + (1.0 - c.lmbda) * torch.max(tq1, tq2)
            target_q = target_q.unflatten(-1, (-1, c.n_target_samples)).max(dim=-1).values
            target_q = batch["reward"] + batch["discount"] * target_q
        q1, q2 = self.critic(obs, action)
        critic_loss = td3_critic_loss((q1, q2), target_q)  # mean (Q1 - y)^2 + mean (Q2 - y)^2, as TD3's
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_opt.step()
        # (3) perturbation actor, through the DPG of Q1
        with torch.no_grad():
            sampled = self._sample_actions(obs, self.generator)
        with frozen(self.critic):
            actor_loss = -self.critic.q1(obs, self.actor(obs, sampled)).mean(-1)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_opt.step()
        # (4) targets
        soft_update(self.critic_target, self.critic, c.tau)
        soft_update(self.actor_target, self.actor, c.tau)
        values = torch.stack([critic_loss, actor_loss, vae_loss, recon_loss, kl_loss, q1.mean(-1)]).detach()
        keys = ("critic_loss", "actor_loss", "vae_loss", "recon_loss", "kl_loss", "q_mean")
        return dict(zip(keys, values.tolist(), strict=True))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        n = self.config.n_act_samples
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.config.act_seed)
        obs = self.normalizer(obs.to(self.device, torch.float32))
        rep = torch.repeat_interleave(obs, n, 0)
        actions = self.actor(rep, self._sample_actions(rep, generator))
        best = self.critic.q1(rep, actions).reshape(-1, n).argmax(dim=1)
        return actions.reshape(-1, n, self.action_dim)[torch.arange(obs.shape[0], device=self.device), best]

    def _parts(self) -> tuple[dict, dict]:
        modules = dict(
            normalizer=self.normalizer,
            vae=self.vae,
            actor=self.actor,
            critic=self.critic,
            actor_target=self.actor_target,
            critic_target=self.critic_target,
        )
        return modules, dict(vae=self.vae_opt, actor=self.actor_opt, critic=self.critic_opt)

    def state_dict(self) -> dict[str, Any]:
        return self._pack(*self._parts())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._unpack(state, *self._parts())
