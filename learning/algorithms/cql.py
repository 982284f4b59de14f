"""CQL, conservative Q-learning (Kumar, Zhou, Tucker & Levine 2020, "Conservative Q-Learning for
Offline Reinforcement Learning", eq. 4, the CQL(H) variant, on SAC; appendix F), computed as in
CORL's algorithms/offline/cql.py (ContinuousCQL, itself a port of young-geng/CQL), with CORL's
D4RL defaults.  Seed 004 (V-D4RL) uses CQL(H) with a fixed weight as its pessimistic image
baseline (appendix C.3, D.4); seed 000 only cites Kumar et al. among offline methods (it trains CRR).

CQL learns a lower bound of the policy's value: besides the TD error, each critic pays
alpha_cql (E_{a~mu}[Q(s, a)] - E_{a~D}[Q(s, a)]) with mu the soft maximum over actions (CQL(H):
a log-sum-exp).  One `update()`, every loss from the networks as they were before it (CORL's
`train`: all losses are built first, then the temperature, actor and critics step in that order):

1. policy sample at s:  a_pi = tanh(u), u = mu(s) + sigma(s) eps, eps ~ N(0, I),
   log pi(a_pi|s) = sum_j [log N(u_j; mu_j, sigma_j^2) - log(1 - tanh(u_j)^2)]  (tanh-squashed Gaussian)
2. temperature (SAC's automatic tuning): alpha_ent = exp(log_alpha) * alpha_multiplier,
   L_alpha = -mean log_alpha (log pi(a_pi|s) + target_entropy)  (no gradient through log pi),
   target_entropy = -|A| by default
3. actor:  L_pi = mean (alpha_ent log pi(a_pi|s) - min(Q_1, Q_2)(s, a_pi))      (alpha_ent detached)
   during the first `bc_steps` updates instead L_pi = mean (alpha_ent log pi(a_pi|s) - log pi(a|s))
   with a the dataset action (CORL's behaviour-cloning warm-up; 0 by default)
4. critic target:  a' ~ pi(.|s'),  y = r_n + discount (min(Q'_1, Q'_2)(s', a') - alpha_ent log pi(a'|s'))
   where the entropy term is kept only with ``backup_entropy`` (CORL's default and that of the
   young-geng/CQL code it ports drop it: y = r_n + discount min Q'(s', a')); r_n and discount come
   from the batch (base.py: the n-step return and gamma^n, 0 after a terminal)
5. conservative penalty, for each critic i, with N = cql_n_actions samples per state (no gradient
   through the actions): a_rand ~ U([-1, 1]^|A|), a_cur ~ pi(.|s), a_nxt ~ pi(.|s') (all evaluated
   at s, as the authors' code does), and with importance sampling (default)
       lse_i = T logsumexp_{3N}( [Q_i(s, a_rand) - log 0.5^|A|,  Q_i(s, a_nxt) - log pi(a_nxt|s'),
                                  Q_i(s, a_cur) - log pi(a_cur|s)] / T )
   (log(1/3N sum_k exp(Q_k - log q_k)) estimates log integral exp Q(s, a) da up to a constant), or
   without it lse_i = T logsumexp_{3N+1}([Q_i(s, a_rand), Q_i(s, a), Q_i(s, a_nxt), Q_i(s, a_cur)] / T);
       diff_i = mean_batch (lse_i - Q_i(s, a)),    penalty_i = alpha_cql diff_i
   Lagrange variant (``cql_lagrange``, off by default): penalty_i = alpha' alpha_cql (diff_i - gap)
   with alpha' = clamp(exp(log_alpha'), 0, 1e6) trained by L_alpha' = -(penalty_1 + penalty_2) / 2
6. critics:  L_Q = sum_i mean (Q_i(s, a) - y)^2 + penalty_i
7. target critics: Q' <- (1 - tau) Q' + tau Q after every update.

Acting: the policy's mode, tanh(mu(s)) (CORL's deterministic action).

Defaults, vectors (CORL's TrainConfig and its D4RL yaml configs): critic lr 3e-4, actor lr 3e-5,
temperature lr = the actor's (CORL's alpha optimiser takes policy_lr), batch 256, tau 0.005,
N = 10 actions, T = 1, importance sampling on, Lagrange off, backup_entropy off, bc_steps 0,
alpha_cql = 10 (CORL's `cql_alpha` for every Gym-MuJoCo config, halfcheetah and hopper included;
the CQL authors' README examples and ContinuousCQL's constructor default use 5: we take the value
behind CORL's published scores), actor and critics MLPs of three hidden layers of 256 (CORL's
TanhGaussianPolicy and q_n_hidden_layers = 3), log sigma = clamp(m * raw + o, -20, 2) with
learnable scalars m (init 1) and o (init -1) (CORL's log_std_multiplier / log_std_offset), the
temperature's log_alpha initialised at 0 (alpha_ent = 1), initialisation as CORL:
critics orthogonal (gain sqrt 2) with the last layer orthogonal with gain 0.01, the actor
PyTorch's default with the last layer Xavier-uniform with gain 0.01, zero biases.  Vector
observations are normalised by the dataset mean / (std + 1e-3) (CORL's `normalize`).

Images (not in the CQL paper): V-D4RL builds CQL on DrQ-v2 with "the same networks and
hyperparameters as DrQ+BC" (seed 004 appendix D.4): obs and next_obs are shifted independently
(pad 4) and encoded by one DrQ-v2 encoder trained by the critic loss only (the actor sees detached
features; next features carry no gradient; the target critic shares the online encoder, as in
DrQ-v2); actor and critic each have their own DrQ-v2 trunk (Linear -> 50, LayerNorm, tanh) and, by
default, 1024-wide MLPs (two hidden layers) with DrQ-v2's orthogonal initialisation, lr 1e-4 for
every optimiser and tau 0.01 (Table 8).  The maths stays CORL's SAC-based CQL above: V-D4RL's own
code (drqbc/cql.py) instead keeps DrQ-v2's deterministic actor with scheduled noise and no
entropy term, and defaults to no importance sampling; its alpha_cql was tuned per dataset in
{0.5, ..., 20} (Table 9), so set ``cql_alpha`` for the data at hand.

Randomness: every draw (shifts, policy noise, uniform actions) comes from the algorithm's own
generator, in this order: shift(obs), shift(next_obs) (images), eps for a_pi (B, |A|), eps for a'
(B, |A|), a_rand (B, N, |A|), eps for a_cur (B, N, |A|), eps for a_nxt (B, N, |A|).

Deviations from CORL: no ``cql_max_target_backup``, ``cql_clip_diff_min/max`` or
``target_update_period`` options (CORL's defaults: off, no clipping, every update); the Adam of
each critic pair is one Adam over both (identical steps); alpha_ent is detached in the actor loss
(CORL's leaves a gradient on log_alpha that is zeroed before it is ever used: the same steps); the
actor loss's min Q takes no critic gradient (DrQ-v2's; CORL's is computed and discarded); the
BC warm-up evaluates log pi of the dataset action clamped to +-(1 - 1e-6), where CORL's atanh
gives an infinite loss for actions at the limits (common here: commands are clipped to the
velocity cap).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from learning.algorithms.base import Algorithm, AlgorithmConfig, ObservationSpec, encode_transition
from nets import DrQEncoder, Normalizer, TwinQ, frozen, mlp, orthogonal_init, soft_update, trunk

BC_ACTION_CLAMP = 1.0 - 1e-6
"""Dataset actions are clamped to +-this before their tanh-Gaussian log-density (atanh(1) is inf)."""


class CQLConfig(AlgorithmConfig):
    hidden_dims: tuple[int, ...] | None = Field(
        None,
        description="Actor and critic MLP hidden sizes; None: (256, 256, 256) on vectors (CORL), (1024, 1024) on "
        "images (DrQ+BC's, as V-D4RL's CQL).",
    )
    actor_lr: float | None = Field(
        None, gt=0, description="Adam lr of the policy; None: 3e-5 on vectors (CORL policy_lr), 1e-4 on images."
    )
    critic_lr: float | None = Field(
        None,
        gt=0,
        description="Adam lr of the twin critics (and image encoder); None: 3e-4 on vectors (CORL qf_lr), 1e-4 on "
        "images (DrQ+BC Table 8).",
    )
    alpha_lr: float | None = Field(
        None, gt=0, description="Adam lr of the entropy temperature; None: the actor's lr (CORL)."
    )
    batch_size: int = Field(256, gt=0, description="Batch size (CORL, V-D4RL); the trainer samples.")
    tau: float | None = Field(
        None, gt=0, le=1, description="Polyak rate of the target critics; None: 0.005 vectors (CORL), 0.01 images."
    )
    cql_alpha: float = Field(
        10.0,
        ge=0,
        description="Weight alpha_cql of the conservative penalty (CORL's Gym-MuJoCo value; the CQL authors use 5; "
        "V-D4RL tuned 0.5-20 per dataset). 0 turns CQL into offline SAC.",
    )
    cql_n_actions: int = Field(10, gt=0, description="Actions sampled per state per source (uniform, pi(s), pi(s')).")
    cql_temp: float = Field(1.0, gt=0, description="Temperature T of the log-sum-exp (CORL cql_temp).")
    cql_importance_sample: bool = Field(
        True, description="Subtract each sample's log density inside the log-sum-exp (CORL, CQL authors)."
    )
    cql_lagrange: bool = Field(False, description="Tune the penalty's multiplier alpha' by dual descent (off: CORL).")
    cql_target_action_gap: float = Field(-1.0, description="Lagrange variant: the gap tau the penalty is held to.")
    backup_entropy: bool = Field(
        False, description="Subtract alpha_ent log pi(a'|s') in the critic target (SAC); off in CORL and the CQL code."
    )
    automatic_entropy_tuning: bool = Field(True, description="Learn the SAC temperature (CORL); else it is fixed.")
    alpha_multiplier: float = Field(1.0, ge=0, description="alpha_ent = exp(log_alpha) * this (or this, if fixed).")
    target_entropy: float | None = Field(None, description="Target entropy of the temperature loss; None: -|A|.")
    bc_steps: int = Field(0, ge=0, description="First updates whose actor loss is behaviour cloning (CORL: 0).")
    log_std_min: float = Field(-20.0, description="Lower clamp of the policy log std (CORL).")
    log_std_max: float = Field(2.0, description="Upper clamp of the policy log std (CORL).")
    log_std_multiplier: float = Field(1.0, description="Initial learnable scale of the raw log std (CORL).")
    log_std_offset: float = Field(-1.0, description="Initial learnable offset of the log std (CORL).")
    normalize_observations: bool = Field(True, description="Vectors: normalise by the dataset mean/std (CORL).")
    normalizer_eps: float = Field(1e-3, description="Vectors: added to the dataset std (CORL).")
    encoder_channels: int = Field(32, description="Images: DrQ-v2 encoder channels.")
    channels_last: bool = Field(True, description="Images: channels-last convolutions (faster on CPU).")
    feature_dim: int = Field(50, description="Images: trunk output size (DrQ-v2).")
    augment_pad: int = Field(4, description="Images: random-shift padding (DrQ-v2); 0 disables.")


class Scalar(nn.Module):
    """One learnable number (a log temperature)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(value)))

    def forward(self) -> torch.Tensor:
        return self.value


class TanhGaussianActor(nn.Module):
    """pi(.|s) = tanh(N(mu(s), sigma(s)^2)), [mu, raw] = MLP(s) (an optional DrQ trunk first),
    log sigma = clamp(m * raw + o, log_std_min, log_std_max) with learnable scalars m and o."""

    def __init__(
        self, in_dim: int, action_dim: int, hidden: Sequence[int], feature_dim: int | None, config: CQLConfig
    ) -> None:
        super().__init__()
        self.trunk = trunk(in_dim, feature_dim) if feature_dim else nn.Identity()
        self.policy = mlp(feature_dim or in_dim, hidden, 2 * action_dim)
        self.log_std_multiplier = nn.Parameter(torch.tensor(config.log_std_multiplier))
        self.log_std_offset = nn.Parameter(torch.tensor(config.log_std_offset))
        self.log_std_range = (config.log_std_min, config.log_std_max)
        self.action_dim = action_dim

    def mean_log_std(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.policy(self.trunk(x)).split(self.action_dim, dim=-1)
        return mean, (self.log_std_multiplier * raw + self.log_std_offset).clamp(*self.log_std_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic action tanh(mu(s))."""
        return torch.tanh(self.mean_log_std(x)[0])

    @staticmethod
    def sample(
        mean: torch.Tensor, log_std: torch.Tensor, n: int | None, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample and its log-density, shapes (B, |A|) and (B,), or with ``n``
        samples per state (B, n, |A|) and (B, n)."""
        if n is not None:
            mean, log_std = mean.unsqueeze(1).expand(-1, n, -1), log_std.unsqueeze(1).expand(-1, n, -1)
        eps = torch.randn(mean.shape, device=mean.device, generator=generator)
        u = mean + log_std.exp() * eps
        return torch.tanh(u), tanh_gaussian_log_prob(u, eps, log_std)

    def log_prob(self, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """log pi(action|s) for given actions (the BC warm-up's dataset actions), shape (B,)."""
        mean, log_std = self.mean_log_std(x)
        u = torch.atanh(action.clamp(-BC_ACTION_CLAMP, BC_ACTION_CLAMP))
        return tanh_gaussian_log_prob(u, (u - mean) * torch.exp(-log_std), log_std)


def tanh_gaussian_log_prob(u: torch.Tensor, eps: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log density of tanh(u), u = mu + sigma eps ~ N(mu, sigma^2), summed over the last axis:
    log N(u) - log(1 - tanh(u)^2), the Jacobian written 2 (log 2 - u - softplus(-2u)) (stable; torch's
    TanhTransform)."""
    log_normal = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
    return (log_normal - 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)


def _corl_init(net: nn.Sequential, orthogonal: bool) -> None:
    """CORL's `init_module_weights`: inner layers orthogonal (gain sqrt 2, zero bias) when
    ``orthogonal`` (critics), else left at PyTorch's default (actor); the last layer orthogonal
    (critics) or Xavier-uniform (actor) with gain 0.01 and a zero bias."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    if orthogonal:
        for layer in linears[:-1]:
            nn.init.orthogonal_(layer.weight, gain=math.sqrt(2))
            nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(linears[-1].weight, gain=1e-2)
    else:
        nn.init.xavier_uniform_(linears[-1].weight, gain=1e-2)
    nn.init.zeros_(linears[-1].bias)


def many_q(critic: TwinQ, x: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q_1, Q_2 of every action of (B, K, |A|) at its state's features x (B, F): shapes (B, K); the
    trunk runs once per state."""
    h = critic.trunk(x).unsqueeze(1).expand(-1, actions.shape[1], -1)
    h = torch.cat([h, actions], dim=-1)
    return critic.q1_net(h).squeeze(-1), critic.q2_net(h).squeeze(-1)


class CQL(Algorithm):
    name = "cql"
    config_class = CQLConfig
    observation_kinds = ("vector", "image")

    def __init__(self, config: CQLConfig, observation: ObservationSpec, action_dim: int, device) -> None:
        super().__init__(config, observation, action_dim, device)
        c, image = config, observation.kind == "image"
        hidden = c.hidden_dims or ((1024, 1024) if image else (256, 256, 256))
        self.actor_lr = c.actor_lr or (1e-4 if image else 3e-5)
        self.critic_lr = c.critic_lr or (1e-4 if image else 3e-4)
        self.alpha_lr = c.alpha_lr or self.actor_lr
        self.tau = c.tau or (0.01 if image else 0.005)
        self.target_entropy = -float(action_dim) if c.target_entropy is None else c.target_entropy
        if image:
            self.encoder: nn.Module = DrQEncoder(observation.shape, c.encoder_channels, channels_last=c.channels_last)
            dim, feature_dim = self.encoder.repr_dim, c.feature_dim
        else:
            stats = (observation.mean, observation.std) if c.normalize_observations else (None, None)
            self.encoder = Normalizer(observation.shape[0], *stats, eps=c.normalizer_eps)
            dim, feature_dim = observation.shape[0], None
        self.actor = TanhGaussianActor(dim, action_dim, hidden, feature_dim, c)
        self.critic = TwinQ(dim, action_dim, hidden, feature_dim)
        if image:  # DrQ-v2's initialisation (the encoder initialises itself)
            self.actor.apply(orthogonal_init)
            self.critic.apply(orthogonal_init)
        else:
            _corl_init(self.actor.policy, orthogonal=False)
            _corl_init(self.critic.q1_net, orthogonal=True)
            _corl_init(self.critic.q2_net, orthogonal=True)
        self.log_alpha = Scalar(0.0)  # CORL: Scalar(0.0), alpha_ent starts at 1
        self.log_alpha_prime = Scalar(1.0)  # CORL: Scalar(1.0), used by the Lagrange variant only
        for name in ("encoder", "actor", "critic", "log_alpha", "log_alpha_prime"):
            setattr(self, name, getattr(self, name).to(self.device))
        self.critic_target = copy.deepcopy(self.critic)
        fused = dict(fused=True) if self.device.type in ("cpu", "cuda") else {}
        critic_params = [*self.encoder.parameters(), *self.critic.parameters()]  # no parameters on vectors
        self.critic_opt = torch.optim.Adam(critic_params, lr=self.critic_lr, **fused)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=self.actor_lr, **fused)
        self.alpha_opt = torch.optim.Adam(self.log_alpha.parameters(), lr=self.alpha_lr)
        self.alpha_prime_opt = torch.optim.Adam(self.log_alpha_prime.parameters(), lr=self.critic_lr)
        self.generator = self._make_generator()
        self._image = image

    def _features(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, h_next): `encode_transition` of the batch (images shifted, each independently)."""
        pad = self.config.augment_pad if self._image else None
        return encode_transition(self.encoder, batch, pad, self.generator)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        c, g, n = self.config, self.generator, self.config.cql_n_actions
        self.updates += 1
        action = batch["action"]
        h, h_next = self._features(batch)
        hd = h.detach()  # the actor never trains the encoder

        # 1-3. policy sample at s, temperature and actor losses
        mean, log_std = self.actor.mean_log_std(hd)
        pi_action, log_pi = self.actor.sample(mean, log_std, None, g)
        if c.automatic_entropy_tuning:
            alpha_loss = -(self.log_alpha() * (log_pi.detach() + self.target_entropy)).mean()
            alpha = self.log_alpha().detach().exp() * c.alpha_multiplier
        else:
            alpha_loss = torch.zeros((), device=self.device)
            alpha = torch.tensor(c.alpha_multiplier, device=self.device)
        if self.updates <= c.bc_steps:
            actor_loss = (alpha * log_pi - self.actor.log_prob(hd, action)).mean()
        else:
            with frozen(self.critic):
                q_pi = torch.min(*self.critic(hd, pi_action))
            actor_loss = (alpha * log_pi - q_pi).mean()

        # 4-5. critic target and the conservative penalty's samples (no gradient)
        with torch.no_grad():
            next_mean, next_log_std = self.actor.mean_log_std(h_next)
            next_action, next_log_pi = self.actor.sample(next_mean, next_log_std, None, g)
            target_q = torch.min(*self.critic_target(h_next, next_action))
            if c.backup_entropy:
                target_q = target_q - alpha * next_log_pi
            y = batch["reward"] + batch["discount"] * target_q
            shape = (action.shape[0], n, self.action_dim)
            rand_actions = torch.empty(shape, device=self.device).uniform_(-1.0, 1.0, generator=g)
            cur_actions, cur_log_pi = self.actor.sample(mean.detach(), log_std.detach(), n, g)
            nxt_actions, nxt_log_pi = self.actor.sample(next_mean, next_log_std, n, g)
        # Q at the data action and at the 3N sampled actions, all at s, in one pass per head
        sampled = torch.cat([action.unsqueeze(1), rand_actions, nxt_actions, cur_actions], dim=1)
        q1_all, q2_all = many_q(self.critic, h, sampled)
        q1, q2 = q1_all[:, 0], q2_all[:, 0]
        if c.cql_importance_sample:
            log_density = torch.cat(
                [torch.full(shape[:2], self.action_dim * math.log(0.5), device=self.device), nxt_log_pi, cur_log_pi],
                dim=1,
            )
            cat1, cat2 = q1_all[:, 1:] - log_density, q2_all[:, 1:] - log_density
        else:
            cat1, cat2 = q1_all, q2_all
        diff1 = (torch.logsumexp(cat1 / c.cql_temp, dim=1) * c.cql_temp - q1).mean()
        diff2 = (torch.logsumexp(cat2 / c.cql_temp, dim=1) * c.cql_temp - q2).mean()
        if c.cql_lagrange:
            alpha_prime = self.log_alpha_prime().exp().clamp(0.0, 1e6)
            gaps = torch.stack([diff1, diff2]).detach() - c.cql_target_action_gap
            alpha_prime_loss = -(alpha_prime * c.cql_alpha * gaps).sum() * 0.5
            alpha_prime = alpha_prime.detach()
            penalty = alpha_prime * c.cql_alpha * (diff1 + diff2 - 2.0 * c.cql_target_action_gap)
        else:
            alpha_prime = alpha_prime_loss = torch.zeros((), device=self.device)
            penalty = c.cql_alpha * (diff1 + diff2)
        td_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        critic_loss = td_loss + penalty

        # 6. steps in CORL's order: temperature, (Lagrange multiplier), actor, critics; 7. targets
        if c.automatic_entropy_tuning:
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        if c.cql_lagrange:
            self.alpha_prime_opt.zero_grad(set_to_none=True)
            alpha_prime_loss.backward()
            self.alpha_prime_opt.step()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_target, self.critic, self.tau)

        values = torch.stack(
            [
                critic_loss,
                td_loss,
                (diff1 + diff2) / 2,
                actor_loss,
                alpha_loss,
                alpha,
                log_pi.mean(),
                q1.mean(),
                target_q.mean(),
                alpha_prime,
                alpha_prime_loss,
            ]
        ).detach()
        keys = (
            "critic_loss",
            "td_loss",
            "cql_diff",
            "actor_loss",
            "alpha_loss",
            "alpha",
            "log_pi",
            "q_mean",
            "target_q",
            "alpha_prime",
            "alpha_prime_loss",
        )
        return dict(zip(keys, values.tolist(), strict=True))

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.device) if self._image else obs.to(self.device, torch.float32)
        return self.actor(self.encoder(obs))

    def _parts(self) -> tuple[dict, dict]:
        modules = dict(
            encoder=self.encoder,
            actor=self.actor,
            critic=self.critic,
            critic_target=self.critic_target,
            log_alpha=self.log_alpha,
            log_alpha_prime=self.log_alpha_prime,
        )
        optimizers = dict(
            actor=self.actor_opt, critic=self.critic_opt, alpha=self.alpha_opt, alpha_prime=self.alpha_prime_opt
        )
        return modules, optimizers

    def state_dict(self) -> dict[str, Any]:
        return self._pack(*self._parts())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._unpack(state, *self._parts())
