"""``sse``: self-supervised exploration (seed 001, section 3.1, eqs. 3-6).

Seed 001 turns the prediction-error reward of curiosity (eq. 3, R = ||x_{t+1} - x~_{t+1}||) and its
discounted sum (eq. 4, V_R = sum_t gamma^t (1 - D_t) R_t) into a *supervised* objective: a pair of
learned forward models f1, f2: (x_t, a_t) -> x~_{t+1} gives the intrinsic reward as their
disagreement (eq. 5)

    R_SSE(x_t, a_t) = || f1(x_t, a_t) - f2(x_t, a_t) ||,

a termination model f_done predicts D~_t, and a SAC-style maximum-entropy tanh-Gaussian actor is
trained by backpropagating through imagined rollouts of the learned model to maximise (eq. 6)

    V_SSE = sum_{t=0}^{H-1} gamma^t (1 - D~_t) (R_SSE(x_t, a_t) - alpha log pi(a_t | x_t)).

What this module computes (every default is a field of `SSEConfig`, taken from 001's code as
ALGORITHMS.md summarises it: residual dynamics MLPs [300, 400] with a done head, a tanh-Gaussian
policy trained through a 10-step imagined rollout, entropy weight alpha = 1, gamma = 0.8
discounted by the predicted done probability, batch 64, model lr 2e-4, policy lr 1e-4):

- **Forward models** f_i(x, a) = x + g_i([x, a]), g_i an MLP (residual, as 001's code), each
  trained by its own Adam on the mean squared error of the next state, each on its own random
  batch (the two also differ by initialisation; that is where their disagreement comes from).
- **Termination model** f_done([x, a]) -> logit of D, trained with binary cross-entropy.
  *What "done" means here.*  A task-agnostic collector has no task termination; an episode ends
  by its length (``complete``: a time limit, not a property of the state), by the operator, by a
  driver fault, or by a **safety stop** (a limit or a collision: the state-action pair really
  ended the episode).  The label is 1 for the *last* step of an episode whose outcome is in
  `SSEConfig.done_outcomes` (default ``safety_stop``) and 0 for every other step.  Discounting the
  imagined return by (1 - D~) then tells the actor that novelty beyond a predicted safety stop is
  worth nothing, which keeps it away from the limits.  *Deviation*: eq. 6 writes f_done(x_t); like
  001's code (``dh`` on [obs, act]) it takes (x_t, a_t) here, because the store logs the state
  *before* each action and not the state the last action led to: the transition that ended an
  episode is (x_{T-1}, a_{T-1}).
- **Imagined rollout** (001's code): from a batch of logged states, for t = 0..H-1 the actor
  samples a_t (reparameterised), both models predict x_{t+1}, r_t = ||f1 - f2|| (eq. 5; the mean
  squared difference of 001's code is ``disagreement="mse"``), the discount starts at 1 and is
  multiplied by gamma (1 - sigmoid(f_done(x_t, a_t))) after each step; the next state is the
  prediction of ONE model drawn at random for the whole rollout (001's ``prime_model_idx``, drawn
  once per policy update), not the mean (which would shrink the disagreement to the models'
  common part) and not a fresh draw per step.  The gradient flows through the states, the
  rewards and the discount; the models' weights are frozen meanwhile (`nets.frozen`).  Loss =
  -mean_batch(V_SSE) / H.
- **Actor**: separate MLPs for the mean and for the std (softplus + 1e-3, as 001's code) of a
  Gaussian on u; a = action_limit * tanh(u); log pi is that of tanh(u) in [-1, 1] (the constant
  log|action_limit| is dropped: it changes no gradient), with the numerically stable
  log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).  `act` samples (001 explores with the
  stochastic policy).

Observations.  Vector observations (proprio: q, dq, 14 values; proprio+object: + cube position
and quaternion, 21 values) are normalised to [-1, 1] by the spec's bounds (joint limits, velocity
caps, workspace box) rather than by running statistics: the bounds are known before the first
step, fixed (a model trained on one scale never sees its inputs rescaled), and need no state.
Image observations (*deviation*: 001 explored on proprioception only) are encoded by a DrQ-v2
encoder and trunk (`nets.DrQEncoder`, `nets.trunk`: LayerNorm + tanh, ``feature_dim``)
into a latent in which the models, the termination head and the actor operate.  The encoder is
**random and fixed** (random features, as in Burda et al.'s "Large-scale study of
curiosity-driven learning"): training it through the forward models alone would collapse it (a
constant latent predicts itself perfectly and the models agree), and a fixed encoder lets the
replay cache hold latents (50 floats a step) rather than frames.

Actions.  The models learn from the explorer's own ``action`` (normalised by ``action_limit``),
not from the ``command`` sent after the safety filter.  The command is what moved the arm, but
(a) with ``tip_delta`` actions the command is a 7-joint velocity, not even in the action space,
and (b) the actor's imagined actions enter the models *before* the filter, so the models must
learn the dynamics of filter + arm, (x, action) -> x': near a limit they then learn that pushing
further does nothing, instead of predicting motion past the limit the filter will never allow
(and calling it novel).  The filter's only memory (the previous command, for rate limiting) is
close to dq, which is in the state.

Replay.  The episode store is the replay buffer: `train(store)` reads, through the store's
reader (`store.SessionReader`: a damaged episode is skipped with the store's warning), the
finished episodes the session's manifest listed since the last call, and keeps their states
(latents, for images), scaled actions and done labels in memory by store index; after a restart
they are rebuilt from the store.  The observation is rebuilt from the session's description
(`store.read_session_spec`, as `replay.EpisodeReplay` does): its observation fields, or the
frames of the explorer's camera (`SessionSpec.explorer_camera`).  The checkpoint
(`state_dict`) holds networks, optimisers, counters and random generator states, never data.  An
episode salvaged from a damaged `.partial` with steps missing (`Episode.segments()`) gives
transitions inside each run of consecutive steps only, never (x_t, a_t, x_t+k) across a gap: the
last step before a gap is, like an episode's last step, the start of no transition.  Its done
label stays 0 (the episode went on: that step did not end it); only an episode's last recorded
step can be labelled done.
Explorers never see rewards or privileged state (proprio+object sessions are explicitly
privileged: the cube pose *is* their observation).

Budget.  `updates_per_episode` gradient updates per `train` call (each: both forward models, the
termination model and the actor); None = one per new transition, as 001's loop updated once per
environment step.  The collector holds the arm still while `train` runs and records its duration.
Measured on CPU with the defaults (1 torch thread on a busy 2-core machine): ~0.1 s an update,
vector or image alike (the [300, 400] layers dominate), so one update per transition costs ~20 s
after a 200-step episode and ~100 s after a 1000-step one: on hardware, set a budget.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

import nets
from collector.explorers.base import Explorer, ExplorerConfig, ExplorerSpec
from collector.explorers.replay import EncodedEpisodes, train_per_new_transition
from store import Episode

ENCODE_BATCH = 256
"""Frames encoded at once when a stored image episode is turned into latents."""


class SSEConfig(ExplorerConfig):
    """Settings of `SelfSupervisedExploration`; defaults from 001's code (ALGORITHMS.md, "SSE")."""

    hidden: tuple[int, ...] = Field(
        (300, 400), min_length=1, description="Hidden sizes of the forward models, done head and actor (001: 300, 400)."
    )
    horizon: int = Field(10, ge=1, description="H, steps of the imagined rollout the actor is trained through (10).")
    gamma: float = Field(0.8, ge=0, lt=1, description="Discount of eq. 6 (001's code: 0.8).")
    alpha: float = Field(1.0, ge=0, description="Entropy weight multiplying log pi in eq. 6 (1).")
    batch_size: int = Field(64, ge=1, description="Transitions (start states) per update (64).")
    model_lr: float = Field(2e-4, gt=0, description="Adam learning rate of the forward and termination models.")
    policy_lr: float = Field(1e-4, gt=0, description="Adam learning rate of the actor.")
    min_std: float = Field(1e-3, gt=0, description="Added to the actor's softplus std (001: 1e-3).")
    disagreement: Literal["norm", "mse"] = Field(
        "norm",
        description="Eq. 5's ||f1 - f2|| (norm), or the mean squared difference 001's code used (mse).",
    )
    done_outcomes: tuple[str, ...] = Field(
        ("safety_stop",),
        description="Episode outcomes whose last step is labelled done (1) for the termination model.",
    )
    updates_per_episode: int | None = Field(
        None,
        ge=0,
        description="Gradient updates per train() call (models, done head, actor); None = one per new "
        "transition (001 updated once per environment step).",
    )
    warmup_transitions: int | None = Field(
        None, ge=1, description="Transitions in the store before training starts; None = batch_size."
    )
    feature_dim: int = Field(50, ge=1, description="Latent size of the fixed random image encoder (DrQ trunk, 50).")
    encoder_channels: int = Field(32, ge=1, description="Channels of the image encoder's conv layers (DrQ: 32).")
    torch_threads: int | None = Field(
        1,
        ge=1,
        description="torch intra-op threads of the collector process, set when the explorer is built; None "
        "keeps torch's default. These networks are small: on 2 busy cores 2 threads made an update 20x slower.",
    )


class TanhGaussianPolicy(nn.Module):
    """001's SSE actor: u ~ N(mu(x), softplus(s(x)) + min_std) with separate MLPs, a = tanh(u)."""

    def __init__(self, in_dim: int, action_dim: int, hidden: tuple[int, ...], min_std: float) -> None:
        super().__init__()
        self.mu = nets.mlp(in_dim, hidden, action_dim)
        self.std = nets.mlp(in_dim, hidden, action_dim, output_activation=nn.Softplus)
        self.min_std = min_std

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample a in (-1, 1) and log pi(a | x) (B,) of the squashed Gaussian."""
        mu, std = self.mu(x), self.std(x) + self.min_std
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        u = mu + std * noise
        log_prob = (-0.5 * noise.pow(2) - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob


class ResidualModel(nn.Module):
    """Forward model f(x, a) = x + MLP([x, a]) (001's residual dynamics)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = nets.mlp(state_dim + action_dim, hidden, state_dim)

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return x + self.net(torch.cat([x, a], dim=-1))


class ImageFeatures(nn.Module):
    """The fixed random image encoder: uint8 (B, H, W, 3) -> latent (B, feature_dim) in [-1, 1]."""

    def __init__(self, image_shape: tuple[int, int, int], feature_dim: int, channels: int) -> None:
        super().__init__()
        h, w, c = image_shape
        self.encoder = nets.DrQEncoder((c, h, w), channels=channels)
        self.trunk = nets.trunk(self.encoder.repr_dim, feature_dim)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.encoder(images.permute(0, 3, 1, 2)))


def disagreement(first: torch.Tensor, second: torch.Tensor, kind: str = "norm") -> torch.Tensor:
    """Eq. 5 per row: ||first - second|| (``norm``) or the mean squared difference (``mse``)."""
    difference = first - second
    if kind == "mse":
        return difference.pow(2).mean(-1)
    return torch.linalg.vector_norm(difference, dim=-1)


class SelfSupervisedExploration(Explorer):
    """Seed 001's SSE (section 3.1, eqs. 5-6); see the module docstring for every choice."""

    config_class = SSEConfig
    config: SSEConfig
    observation_kinds = ("vector", "image")

    def __init__(self, spec: ExplorerSpec, config: SSEConfig, seed: int) -> None:
        super().__init__(spec, config, seed)
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        init_seed = int(self.rng.integers(2**63 - 1))
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**63 - 1)))
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, the global generator untouched
            torch.manual_seed(init_seed)
            self._build_networks(spec, config)
        self.action_limit = np.asarray(spec.action_limit, dtype=np.float64)
        self.updates = 0
        self.transitions_consumed = 0
        self.train_calls = 0
        self._forget_replay()

    def _build_networks(self, spec: ExplorerSpec, config: SSEConfig) -> None:
        self.image = spec.observation_kind == "image"
        if self.image:
            if spec.image_shape is None:
                raise ValueError("an image explorer needs spec.image_shape")
            self.features: ImageFeatures | None = ImageFeatures(
                tuple(spec.image_shape), config.feature_dim, config.encoder_channels
            )
            self.state_dim = config.feature_dim
        else:
            self.features = None
            self.state_dim = spec.observation_dim
        a_dim, hidden = spec.action_dim, tuple(config.hidden)
        self.models = nn.ModuleList([ResidualModel(self.state_dim, a_dim, hidden) for _ in range(2)])
        self.done_head = nets.mlp(self.state_dim + a_dim, hidden, 1)
        self.policy = TanhGaussianPolicy(self.state_dim, a_dim, hidden, config.min_std)
        self.model_optimizers = [torch.optim.Adam(m.parameters(), lr=config.model_lr) for m in self.models]
        self.done_optimizer = torch.optim.Adam(self.done_head.parameters(), lr=config.model_lr)
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.policy_lr)

    # ---- observations ---------------------------------------------------------------------------
    def encode(self, observations: np.ndarray) -> torch.Tensor:
        """Observations (B, D) or images (B, H, W, 3) -> the states x the models work on (B, state_dim)."""
        if self.image:
            images = torch.as_tensor(np.ascontiguousarray(observations, dtype=np.uint8))
            return torch.cat([self.features(chunk) for chunk in images.split(ENCODE_BATCH)])
        return torch.as_tensor(self.spec.normalise(observations), dtype=torch.float32)

    # ---- acting ---------------------------------------------------------------------------------
    def act(self, observation: np.ndarray) -> np.ndarray:
        obs = np.asarray(observation)
        if not self.image:
            obs = np.nan_to_num(obs.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        with torch.no_grad():
            action, _ = self.policy.sample(self.encode(obs[None]), self.generator)
        return self.action_limit * np.clip(action[0].double().numpy(), -1.0, 1.0)

    # ---- replay from the store ------------------------------------------------------------------
    def _forget_replay(self) -> None:
        """Drop what was read from the store (the next `train` reads it again)."""
        self.replay = EncodedEpisodes(self.spec, self.encode, self.action_limit, self.state_dim, self._done_labels)

    def _done_labels(self, episode: Episode) -> dict[str, np.ndarray]:
        """Per step: 1 at the last step of an episode that ended in one of `done_outcomes`, else 0."""
        done = np.zeros(episode.steps, dtype=np.float32)
        done[-1] = float(episode.outcome in self.config.done_outcomes)
        return {"done": done}

    @property
    def transitions(self) -> int:
        """(x, a, x') transitions in the replay."""
        return self.replay.transitions

    # ---- training -------------------------------------------------------------------------------
    def train(self, store: Any) -> dict[str, float]:
        return train_per_new_transition(self, store, "sse")

    def _batch(self, n: int) -> np.ndarray:
        return self.rng.integers(0, n, size=self.config.batch_size)

    def update(self) -> dict[str, float]:
        """One gradient update of both forward models, the termination model and the actor."""
        data = self.replay.arrays
        stats: dict[str, float] = {}
        for i, (model, optimizer) in enumerate(zip(self.models, self.model_optimizers, strict=True)):
            rows = self._batch(len(data["x"]))
            x, a, target = (torch.from_numpy(data[k][rows]) for k in ("x", "a", "next_x"))
            loss = F.mse_loss(model(x, a), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            stats[f"model{i + 1}_loss"] = float(loss.detach())
        rows = self._batch(len(data["all_x"]))
        x, a, done = (torch.from_numpy(data[k][rows]) for k in ("all_x", "all_a", "all_done"))
        loss = F.binary_cross_entropy_with_logits(self.done_head(torch.cat([x, a], -1)).squeeze(-1), done)
        self.done_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.done_optimizer.step()
        stats["done_loss"] = float(loss.detach())

        start = torch.from_numpy(data["all_x"][self._batch(len(data["all_x"]))])
        prime = int(self.rng.integers(len(self.models)))
        with nets.frozen(self.models, self.done_head):
            value, parts = self.imagined_return(start, prime)
            loss = -value.mean() / self.config.horizon
            self.policy_optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.policy_optimizer.step()
        self.updates += 1
        return {**stats, "policy_loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}}

    def imagined_return(self, start: torch.Tensor, prime: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Eq. 6 on an H-step rollout from ``start`` (B, state_dim), model ``prime`` propagating.

        Returns V_SSE per start state (B,), differentiable with respect to the actor, and the mean
        disagreement and log pi over the rollout (detached)."""
        x, discount = start, torch.ones(start.shape[0])
        value = torch.zeros(start.shape[0])
        rewards, log_probs = [], []
        for _ in range(self.config.horizon):
            a, log_pi = self.policy.sample(x, self.generator)
            predictions = [model(x, a) for model in self.models]
            reward = disagreement(predictions[0], predictions[1], self.config.disagreement)
            value = value + discount * (reward - self.config.alpha * log_pi)
            done = torch.sigmoid(self.done_head(torch.cat([x, a], -1)).squeeze(-1))
            discount = discount * self.config.gamma * (1 - done)
            x = predictions[prime]
            rewards.append(reward.detach().mean())
            log_probs.append(log_pi.detach().mean())
        return value, {"disagreement": torch.stack(rewards).mean(), "log_pi": torch.stack(log_probs).mean()}

    # ---- checkpoint -----------------------------------------------------------------------------
    def _modules(self) -> dict[str, nn.Module]:
        modules = {"models": self.models, "done_head": self.done_head, "policy": self.policy}
        if self.features is not None:
            modules["features"] = self.features
        return modules

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "modules": {name: module.state_dict() for name, module in self._modules().items()},
            "optimizers": {
                "models": [o.state_dict() for o in self.model_optimizers],
                "done_head": self.done_optimizer.state_dict(),
                "policy": self.policy_optimizer.state_dict(),
            },
            "generator": self.generator.get_state(),
            "counters": {
                "updates": self.updates,
                "transitions_consumed": self.transitions_consumed,
                "train_calls": self.train_calls,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name, module in self._modules().items():
            module.load_state_dict(state["modules"][name])
        for optimizer, saved in zip(self.model_optimizers, state["optimizers"]["models"], strict=True):
            optimizer.load_state_dict(saved)
        self.done_optimizer.load_state_dict(state["optimizers"]["done_head"])
        self.policy_optimizer.load_state_dict(state["optimizers"]["policy"])
        self.generator.set_state(state["generator"])
        counters = state["counters"]
        self.updates = int(counters["updates"])
        self.transitions_consumed = int(counters["transitions_consumed"])
        self.train_calls = int(counters["train_calls"])
        self._forget_replay()  # rebuilt from the store by the next train()
