"""``diayn``: Diversity is All You Need (Eysenbach et al. 2018, arXiv:1802.06070), one of seed
001's learned explorers (section 3, eq. 2; the DIAYN column of Table 1).

Algorithm 1 of the DIAYN paper, with the episode store as the replay buffer:

1. At the start of every episode draw a skill z ~ p(z), p(z) uniform over `num_skills` skills
   (fixed, not learned: DIAYN's ``learn_p_z = False``), and keep it for the whole episode.
   `begin_episode` returns ``{"skill": z}``; the collector logs it with the episode
   (``metadata["skill"]``), which is also where `train` reads each stored episode's skill back.
2. Act with the maximum-entropy policy pi(a | s, z): the observation and z one-hot, concatenated
   (DIAYN appendix: "we simply concatenate z to the current state").
3. Skill reward, computed at batch time with the current discriminator (it is non-stationary):

       r(s_t, a_t, s_t+1, z) = log q_phi(z | s_t+1) - log p(z) = log softmax(D(s_t+1))_z + log K.

   The discriminator D sees the state only, never the skill nor the action (DIAYN's
   ``include_actions = False``).  s_t+1, as the paper's Algorithm 1 and 001's code
   (``DIAYNTask.offline`` on ``nobs``); DIAYN's own code scores s_t.
4. Per update: one SAC step (twin critics, actor, Polyak targets) on that reward, and one SGD
   (Adam) step of the discriminator's cross-entropy on the same batch's (s_t+1, z) pairs (DIAYN's
   code runs all its training ops on one batch; the reward uses the discriminator before its step).

The learner is a compact SAC (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications", arXiv:1812.05905): twin Q networks with Polyak-averaged targets, a tanh-squashed
Gaussian policy, a fixed entropy weight alpha.  *Deviations* from DIAYN's code (SAC v1 with a
separate value network, one Q network and a 4-component GMM policy): the later SAC form above,
as 001's code also used twin Qs and a tanh-Gaussian policy.  No terminal states: episodes end on
a time limit, a safety stop or the operator, none a property of the skill's MDP (as `rnd`).

Defaults (every one a field of `DIAYNConfig`).  Seed 001: "In all cases we use the default
hyperparameters from the original papers", so DIAYN's, from its paper and code
(github.com/ben-eysenbach/sac, examples/mujoco_all_diayn.py ``SHARED_PARAMS``): 50 skills, two
hidden layers of 300 units for the policy, the critics and the discriminator, Adam lr 3e-4 for all,
batch 128, discount 0.99, tau 0.01, alpha 0.1 (paper: "learning was most stable when we scaled the
maximum entropy objective by alpha = 0.1"), one update per environment step.  001's code differs
(50 skills too, but [400, 300] layers, batch 256, alpha 1 with rewards x 5, tau 0.005); its text
says the original defaults.  Our choices, where neither says: log std clamped to [-20, 2]
(Haarnoja's SAC code), training starts once `batch_size` transitions are stored (DIAYN's
``min_pool_size`` = one episode: the first episode fills it), no random heat-up by default (DIAYN's
code acts with the untrained stochastic policy from the first step).

Observations.  Vectors (proprio, proprio+object) are normalised to [-1, 1] by the spec's bounds,
as `sse` and `rnd` do.  Images (*deviation*: DIAYN and 001 used state vectors) go through `sse`'s
fixed random encoder (`sse.ImageFeatures`: DrQ-v2 conv + trunk, ``feature_dim`` latents in
[-1, 1]), and the policy, critics and discriminator work on the latent: cheap to act with, and
the replay holds latents, not frames.  The discriminator then tells skills apart by random
features of the image.

Replay.  `train(store)` reads the episodes the session's manifest listed since the last call
(through `store.SessionReader`; a damaged one is skipped with the store's warning) and keeps their
states (latents for images), scaled actions and skill in memory by store index; after a restart
they are rebuilt from the store.  An episode without a valid ``metadata["skill"]`` (e.g. a
salvaged one whose header was lost) cannot be labelled and is not used.  Transitions stay inside
a run of consecutive steps (`Episode.segments()`): never across steps missing from a salvaged
episode.  Actions are the explorer's own (``action``), scaled to [-1, 1].  The checkpoint holds
networks, optimisers, counters, the current skill and the random generators, never data.

Budget.  `updates_per_episode` updates per `train` call; None = one per new transition (DIAYN's
``n_train_repeat = 1`` per environment step).  The arm is held still while `train` runs.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

import nets
from collector.explorers.base import Explorer, ExplorerConfig, ExplorerSpec
from collector.explorers.replay import EncodedEpisodes, train_per_new_transition
from collector.explorers.sse import ENCODE_BATCH, ImageFeatures
from collector.explorers.torch_common import cpu_copy
from store import Episode


class DIAYNConfig(ExplorerConfig):
    """Settings of `DIAYN`; defaults from the DIAYN paper and code (see the module docstring)."""

    num_skills: int = Field(50, ge=2, description="K, skills of the uniform p(z) (DIAYN code and 001's code: 50).")
    hidden: tuple[int, ...] = Field(
        (300, 300), min_length=1, description="Hidden sizes of the policy and the twin critics (DIAYN: 300, 300)."
    )
    discriminator_hidden: tuple[int, ...] = Field(
        (300, 300), min_length=1, description="Hidden sizes of the discriminator q(z | s) (DIAYN: 300, 300)."
    )
    lr: float = Field(3e-4, gt=0, description="Adam learning rate of the policy and the critics (DIAYN: 3e-4).")
    discriminator_lr: float = Field(3e-4, gt=0, description="Adam learning rate of the discriminator (DIAYN: 3e-4).")
    batch_size: int = Field(128, ge=1, description="Transitions per update (DIAYN: 128).")
    gamma: float = Field(0.99, ge=0, lt=1, description="Discount per step (DIAYN: 0.99).")
    tau: float = Field(0.01, gt=0, le=1, description="Polyak rate of the target critics per update (DIAYN code: 0.01).")
    alpha: float = Field(0.1, ge=0, description="Entropy weight, fixed (DIAYN paper: 0.1 for all experiments).")
    log_std_bounds: tuple[float, float] = Field(
        (-20.0, 2.0), description="Clamp of the policy's log std (Haarnoja et al.'s SAC code: -20, 2)."
    )
    updates_per_episode: int | None = Field(
        None,
        ge=0,
        description="Updates (SAC + discriminator) per train() call; None = one per new transition "
        "(DIAYN: one per environment step).",
    )
    warmup_transitions: int | None = Field(
        None, ge=1, description="Transitions stored before training starts; None = batch_size."
    )
    heatup_episodes: int = Field(
        0, ge=0, description="First episodes acting uniformly at random (0: DIAYN acts with its policy from the start)."
    )
    feature_dim: int = Field(50, ge=1, description="Latent size of the fixed random image encoder (as sse: 50).")
    encoder_channels: int = Field(32, ge=1, description="Channels of the image encoder's conv layers (DrQ: 32).")
    torch_threads: int | None = Field(
        1,
        ge=1,
        description="torch intra-op threads of the collector process, set when the explorer is built; None "
        "keeps torch's default (small networks on a busy CPU: more threads are slower).",
    )


class SquashedGaussianPolicy(nn.Module):
    """SAC's actor: u ~ N(mu(x), exp(log_std(x))) from one MLP, a = tanh(u) in (-1, 1)."""

    def __init__(self, in_dim: int, action_dim: int, hidden: tuple[int, ...], log_std_bounds: tuple[float, float]):
        super().__init__()
        self.net = nets.mlp(in_dim, hidden, 2 * action_dim)
        self.log_std_bounds = log_std_bounds

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised action in (-1, 1) and its log pi(a | x) (B,)."""
        mu, log_std = self.net(x).chunk(2, dim=-1)
        log_std = log_std.clamp(*self.log_std_bounds)
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        u = mu + log_std.exp() * noise
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)  # log |d tanh(u) / du|
        return torch.tanh(u), log_prob


class DIAYN(Explorer):
    """DIAYN with a SAC learner; see the module docstring for every choice."""

    config_class = DIAYNConfig
    config: DIAYNConfig
    observation_kinds = ("vector", "image")

    def __init__(self, spec: ExplorerSpec, config: DIAYNConfig, seed: int) -> None:
        super().__init__(spec, config, seed)
        if config.torch_threads is not None and torch.get_num_threads() != config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        init_seed = int(self.rng.integers(2**63 - 1))
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**63 - 1)))
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, the global generator untouched
            torch.manual_seed(init_seed)
            self._build_networks(spec, config)
        self.action_limit = np.asarray(spec.action_limit, dtype=np.float64)
        self.log_p_z = -math.log(config.num_skills)
        """log p(z) of the uniform skill distribution."""
        self.skill: int | None = None
        """The current episode's skill (None before the first episode)."""
        self.heatup = False
        self.updates = 0
        self.transitions_consumed = 0
        self.train_calls = 0
        self._forget_replay()

    def _build_networks(self, spec: ExplorerSpec, config: DIAYNConfig) -> None:
        self.image = spec.observation_kind == "image"
        if self.image:
            if spec.image_shape is None:
                raise ValueError("an image explorer needs spec.image_shape")
            shape = tuple(spec.image_shape)
            self.features: ImageFeatures | None = ImageFeatures(shape, config.feature_dim, config.encoder_channels)
            self.state_dim = config.feature_dim
        else:
            self.features = None
            self.state_dim = spec.observation_dim
        k, a_dim = config.num_skills, spec.action_dim
        self.policy = SquashedGaussianPolicy(self.state_dim + k, a_dim, tuple(config.hidden), config.log_std_bounds)
        self.critic = nets.TwinQ(self.state_dim + k, a_dim, tuple(config.hidden))
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.discriminator = nets.mlp(self.state_dim, tuple(config.discriminator_hidden), k)
        """q_phi(z | s): logits over the skills from the state alone."""
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.lr)
        self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=config.discriminator_lr)

    # ---- observations, skills, reward ------------------------------------------------------------
    def encode(self, observations: np.ndarray) -> torch.Tensor:
        """Observations (B, D) or images (B, H, W, 3) -> the states the networks see (B, state_dim)."""
        if self.image:
            images = torch.as_tensor(np.ascontiguousarray(observations, dtype=np.uint8))
            return torch.cat([self.features(chunk) for chunk in images.split(ENCODE_BATCH)])
        return torch.as_tensor(self.spec.normalise(observations), dtype=torch.float32)

    def conditioned(self, states: torch.Tensor, skills: torch.Tensor) -> torch.Tensor:
        """[state, one_hot(z)]: the input of the policy and the critics."""
        return torch.cat([states, F.one_hot(skills, self.config.num_skills).to(states.dtype)], dim=-1)

    def skill_reward(self, states: torch.Tensor, skills: torch.Tensor) -> torch.Tensor:
        """r = log q_phi(z | s) - log p(z) for encoded states (B, state_dim) and skills (B,)."""
        log_q = F.log_softmax(self.discriminator(states), dim=-1)
        return log_q.gather(-1, skills[:, None]).squeeze(-1) - self.log_p_z

    # ---- acting ---------------------------------------------------------------------------------
    def begin_episode(self) -> dict[str, Any]:
        info = super().begin_episode()
        self.skill = int(self.rng.integers(self.config.num_skills))
        self.heatup = self.episodes_started <= self.config.heatup_episodes
        return {**info, "skill": self.skill, "phase": "heatup" if self.heatup else "policy"}

    def act(self, observation: np.ndarray) -> np.ndarray:
        if self.skill is None:
            raise RuntimeError("diayn: begin_episode() draws the skill; call it before act()")
        if self.heatup:
            return self.rng.uniform(-self.action_limit, self.action_limit)
        obs = np.asarray(observation)
        if not self.image:
            obs = np.nan_to_num(obs.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        with torch.no_grad():
            x = self.conditioned(self.encode(obs[None]), torch.tensor([self.skill]))
            action, _ = self.policy.sample(x, self.generator)
        return self.action_limit * np.clip(action[0].double().numpy(), -1.0, 1.0)

    # ---- replay from the store ------------------------------------------------------------------
    def _forget_replay(self) -> None:
        """Drop what was read from the store (the next `train` reads it again)."""
        self.replay = EncodedEpisodes(self.spec, self.encode, self.action_limit, self.state_dim, self._skill_labels)
        self.unlabelled_episodes: list[int] = []
        """Store indices of episodes without a valid skill in their metadata (not used)."""

    def _skill_labels(self, episode: Episode) -> dict[str, np.ndarray] | None:
        """Per step: the episode's skill z (``metadata.skill``); None (left out) without a valid one."""
        skill = episode.metadata.get("skill")
        if isinstance(skill, bool) or not isinstance(skill, int) or not 0 <= skill < self.config.num_skills:
            self.unlabelled_episodes.append(episode.index)
            return None
        return {"z": np.full(episode.steps, skill, dtype=np.int64)}

    @property
    def transitions(self) -> int:
        """(s, a, s', z) transitions in the replay."""
        return self.replay.transitions

    # ---- training -------------------------------------------------------------------------------
    def train(self, store: Any) -> dict[str, float]:
        return train_per_new_transition(self, store, "diayn")

    def update(self) -> dict[str, float]:
        """One SAC step on the skill reward and one discriminator step, on one batch."""
        c, data = self.config, self.replay.arrays
        rows = self.rng.integers(0, len(data["x"]), size=c.batch_size)
        x, a, next_x = (torch.from_numpy(data[key][rows]) for key in ("x", "a", "next_x"))
        z = torch.from_numpy(data["z"][rows])
        obs, next_obs = self.conditioned(x, z), self.conditioned(next_x, z)
        with torch.no_grad():
            reward = self.skill_reward(next_x, z)
            next_action, next_log_pi = self.policy.sample(next_obs, self.generator)
            next_q = torch.min(*self.critic_target(next_obs, next_action)) - c.alpha * next_log_pi
            target = reward + c.gamma * next_q
        critic_loss = nets.td3_critic_loss(self.critic(obs, a), target)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        action, log_pi = self.policy.sample(obs, self.generator)
        with nets.frozen(self.critic):
            actor_loss = (c.alpha * log_pi - torch.min(*self.critic(obs, action))).mean()
        self.policy_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.policy_optimizer.step()
        nets.soft_update(self.critic_target, self.critic, c.tau)

        logits = self.discriminator(next_x)
        discriminator_loss = F.cross_entropy(logits, z)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        discriminator_loss.backward()
        self.discriminator_optimizer.step()
        self.updates += 1
        return {
            "reward": float(reward.mean()),
            "critic_loss": float(critic_loss.detach()),
            "actor_loss": float(actor_loss.detach()),
            "log_pi": float(log_pi.detach().mean()),
            "discriminator_loss": float(discriminator_loss.detach()),
            "discriminator_accuracy": float((logits.argmax(-1) == z).float().mean()),
        }

    # ---- checkpoint -----------------------------------------------------------------------------
    def _modules(self) -> dict[str, nn.Module]:
        modules = {
            "policy": self.policy,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "discriminator": self.discriminator,
        }
        if self.features is not None:
            modules["features"] = self.features
        return modules

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {
            "policy": self.policy_optimizer,
            "critic": self.critic_optimizer,
            "discriminator": self.discriminator_optimizer,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "explorer": type(self).__name__,
            "modules": cpu_copy({name: module.state_dict() for name, module in self._modules().items()}),
            "optimizers": cpu_copy({name: optimizer.state_dict() for name, optimizer in self._optimizers().items()}),
            "generator": self.generator.get_state(),
            "skill": self.skill,
            "heatup": self.heatup,
            "counters": {
                "updates": self.updates,
                "transitions_consumed": self.transitions_consumed,
                "train_calls": self.train_calls,
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("explorer") != type(self).__name__:
            raise ValueError(f"checkpoint of explorer {state.get('explorer')!r}, not {type(self).__name__}")
        super().load_state_dict(state)
        for name, module in self._modules().items():
            module.load_state_dict(state["modules"][name])
        for name, optimizer in self._optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.generator.set_state(state["generator"])
        self.skill = None if state["skill"] is None else int(state["skill"])
        self.heatup = bool(state["heatup"])
        counters = state["counters"]
        self.updates = int(counters["updates"])
        self.transitions_consumed = int(counters["transitions_consumed"])
        self.train_calls = int(counters["train_calls"])
        self._forget_replay()  # rebuilt from the store by the next train()
