"""Random network distillation (RND) and ``rnd``: TD3 maximising the RND reward (seed 003's
"vanilla RND" baseline, section V-B "Baselines").

This module also holds what the learned explorers share (`gcrnd` builds on it):

- `RND` (Burda et al. 2018; ALGORITHMS.md "RND"; seed 002 appendix B.3): a fixed, randomly
  initialised target f and a predictor f^ trained to match it on visited states;
  ``novelty(s) = ||f^(s) - f(s)||^2`` (sum over the output features).  Inputs are whitened with a
  running mean / std per component (per pixel and channel for images) and clipped to [-5, 5]; the
  intrinsic reward is the novelty divided by a running std of the novelties.  Vector inputs: target
  and predictor MLPs [512, 512] -> 512 (002 B.3: "two hidden-layer MLP with hidden sizes [512,
  512]").  Image inputs: the RND paper's networks (its appendix A.4), which 003 used: target =
  conv 32 8x8/4, 64 4x4/2, 64 3x3/1 (leaky ReLU) + linear 512; predictor = the same convs + 512
  ReLU + 512 ReLU + linear 512; orthogonal initialisation.
- `TD3Learner`: TD3 (Fujimoto et al. 2018) with seed 003's appendix Table I architecture: actor
  "DQN + Dense[300, 200]", critic "DQN + Dense[400, 300]" (the Nature-DQN conv stack for images;
  the dense layers alone for vectors), Adam lr 1e-4; the other TD3 settings are RL Coach's TD3
  defaults, which 003 used ("we used the TD3 implementation in RL Coach"): batch 100, gamma 0.99,
  tau 0.005, target policy noise 0.2 clipped at 0.5, actor and targets updated every 2nd critic
  update, twin critics on one shared conv embedder (Coach: one input embedder, two streams).
  The TD3 maths are `nets`' ``td3_*`` functions, shared with the offline TD3+BC.
- `EpisodeReplay`: the store is the replay buffer (DESIGN.md).  Each `train(store)` registers the
  finished episodes the manifest lists that it has not seen; their arrays are read lazily, on
  first use, and cached by store index (optionally LRU-bounded, `max_cached_episodes`).  After a
  restart the cache is rebuilt from the store; the checkpoint holds networks, optimisers,
  normalisers, schedules, counters and random-generator states, never the data.
- `LearnedExplorerConfig` / `TD3Explorer`: the acting, training-cycle, budget and checkpoint
  logic common to `rnd` and `gcrnd`.

The schedule (003 Algorithm 1, used for both: "the same RND architecture and training schedule
was used for the baseline and our method"): after each episode, T off-policy TD3 updates
(`updates_per_episode`, default: the steps of the episode just recorded, as RL Coach's TD3
trains ``current_episode_steps_counter`` steps); after every M = 10 episodes (one cycle) the RND
predictor trains on the last M episodes for K = 4 epochs.

Exploration noise (003 Table I, "TD3 policy additive noise: linear schedule 1.5 -> 0.5"): RL
Coach's TD3 uses `AdditiveNoise` with ``noise_as_percentage_from_action_space = False``, so the
values are the absolute std of Gaussian noise added to the actor's output in its [-1, 1] action
box (Coach's robosuite actions are normalised to [-1, 1]); i.e. std 1.5 x action_limit decaying
linearly to 0.5 x action_limit, then clipped to the box.  The paper does not state the decay
length: we decay over the whole run, N x M x T = 150 x 10 x 200 = 300K acting steps
(`exploration_noise_steps`, counted on policy steps only, as Coach's schedule steps only in its
training phase).

Deviations and choices (the paper is silent unless stated):
- Heatup: the first `heatup_episodes` (1) act uniformly at random (RL Coach's heatup); gcrnd needs
  a non-empty buffer to pick its first goal.
- Vector observations feed TD3 normalised to [-1, 1] by the spec's bounds, RND whitened by its
  running statistics.  Image observations: RGB (the RND paper used one grey frame; the cube's
  colours matter here), one frame (no frame stack).
- RND trains with Adam lr 1e-4 (RND paper) in minibatches of `rnd_batch_size` (128); the
  observation statistics are updated with every new episode's states, the reward statistics (rnd
  only) with the novelties of every new episode's states; the RND paper normalises by the std of
  discounted intrinsic returns, here by the std of the per-step rewards (an off-policy learner
  has no rollout returns).  002's "proportion of experience used for training the predictor 0.25"
  is an on-policy detail of the RND paper, not used by 003's K-epoch schedule.
- The transition of an episode's last recorded step is not used: its next state is not recorded.
  Nor is that of the last step before a gap, in an episode salvaged with steps missing
  (`Episode.segments()`): each run of consecutive steps is replayed as its own episode, and a
  (s_t, a_t, s_t+1) pair never spans missing steps.
  Actions are replayed as the explorer chose them (the `action` field), scaled to [-1, 1].
- `train_time_budget_s` (optional): on hardware the arm is held while `train` runs; stop the TD3
  updates of this episode once the budget is spent (the RND cycle still runs).  Off by default
  (it makes a run depend on the machine's speed).
"""

from __future__ import annotations

import abc
import collections
import pathlib
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from collector.explorers.base import Explorer, ExplorerConfig, ExplorerSpec
from nets import (
    DQN_CONV_LAYERS,
    ConvEncoder,
    DeterministicActor,
    TwinQ,
    mlp,
    orthogonal_init,
    soft_update,
    td3_actor_due,
    td3_critic_loss,
    td3_policy_q,
    td3_target,
)
from store import DamagedEpisodeError, EpisodeInfo, open_episode, read_manifest

ConvLayers = tuple[tuple[int, int, int], ...]


class LearnedExplorerConfig(ExplorerConfig):
    """Settings shared by `rnd` and `gcrnd` (defaults: seed 003 appendix Table I, RL Coach TD3,
    the RND paper; see the module docstring)."""

    # -- 003 Algorithm 1 / Table I
    cycles: int = Field(
        150, ge=1, description="N, training cycles of a full run (003 Table I); sets the noise schedule length."
    )
    episodes_per_cycle: int = Field(10, ge=1, description="M, episodes per training cycle (003 Table I).")
    rnd_epochs: int = Field(4, ge=0, description="K, epochs of RND training on the last M episodes per cycle.")
    exploration_noise_start: float = Field(
        1.5, ge=0, description="Std of the additive action noise at the start (x action_limit; 003 Table I)."
    )
    exploration_noise_end: float = Field(
        0.5, ge=0, description="Std of the additive action noise at the end of its linear schedule (003 Table I)."
    )
    exploration_noise_steps: int | None = Field(
        None, ge=1, description="Policy steps of the linear noise schedule; None = N x M x T (the whole run)."
    )
    heatup_episodes: int = Field(1, ge=0, description="Episodes of uniform random actions first (RL Coach heatup).")
    # -- TD3 (003 Table I; RL Coach defaults)
    actor_hidden: tuple[int, ...] = Field((300, 200), description="Actor dense layers after the conv (003 Table I).")
    critic_hidden: tuple[int, ...] = Field((400, 300), description="Critic dense layers after the conv (003 Table I).")
    conv_layers: ConvLayers = Field(
        DQN_CONV_LAYERS, description="TD3 conv stack (channels, kernel, stride) for images: 003's 'DQN' (Nature)."
    )
    actor_lr: float = Field(1e-4, gt=0, description="Actor Adam learning rate (003 Table I).")
    critic_lr: float = Field(1e-4, gt=0, description="Critic Adam learning rate (003 Table I).")
    batch_size: int = Field(100, ge=1, description="TD3 minibatch (RL Coach TD3: 100).")
    gamma: float = Field(0.99, gt=0, le=1, description="Discount (RL Coach: 0.99).")
    tau: float = Field(0.005, gt=0, le=1, description="Polyak rate of the targets (RL Coach TD3: 0.005).")
    target_policy_noise: float = Field(0.2, ge=0, description="Target policy smoothing std (TD3: 0.2).")
    target_noise_clip: float = Field(0.5, ge=0, description="Clip of the smoothing noise (TD3: 0.5).")
    policy_delay: int = Field(2, ge=1, description="Actor/target update every this many critic updates (TD3: 2).")
    # -- RND (RND paper; 002 B.3)
    rnd_hidden: tuple[int, ...] = Field(
        (512, 512), description="RND MLP hidden sizes for vectors (002 B.3); predictor head for images."
    )
    rnd_output_dim: int = Field(512, ge=1, description="RND embedding size (RND paper: 512).")
    rnd_conv_layers: ConvLayers = Field(
        DQN_CONV_LAYERS, description="RND conv stack for images (RND paper: 32 8x8/4, 64 4x4/2, 64 3x3/1)."
    )
    rnd_lr: float = Field(1e-4, gt=0, description="RND predictor Adam learning rate (RND paper: 1e-4).")
    rnd_batch_size: int = Field(128, ge=1, description="RND training minibatch.")
    rnd_obs_clip: float = Field(5.0, gt=0, description="Clip of the whitened RND inputs (RND paper: 5).")
    # -- budget and machinery
    updates_per_episode: int | None = Field(
        None, ge=0, description="TD3 updates after each episode; None = its steps (T, 003 Algorithm 1 line 12)."
    )
    train_time_budget_s: float | None = Field(
        None, gt=0, description="Stop an episode's TD3 updates after this many seconds (hardware); None = off."
    )
    max_cached_episodes: int | None = Field(
        None, ge=1, description="Episodes kept in memory (LRU); None = all (the store is the buffer)."
    )
    device: str = Field("cpu", description="torch device: cpu, cuda, or auto (cuda when present).")
    torch_threads: int | None = Field(
        1,
        ge=1,
        description="torch intra-op CPU threads of the collector process (set when the explorer is built); "
        "None = torch's default.  1: these small networks gain nothing from more, and spinning threads "
        "competing with the step loop and the store's writer cost 10-50x on a loaded machine.",
    )


# ------------------------------------------------------------------------------------------------ RND


class RunningMeanStd:
    """Running mean / variance per component (Chan et al.'s parallel update, as the RND code)."""

    def __init__(self, shape: Sequence[int] = ()) -> None:
        self.mean = np.zeros(tuple(shape), dtype=np.float64)
        self.var = np.ones(tuple(shape), dtype=np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return
        batch_mean, batch_var, n = x.mean(axis=0), x.var(axis=0), len(x)
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var + 1e-8)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.var = np.array(state["mean"]), np.array(state["var"])
        self.count = float(state["count"])


def _images_chw(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) -> (B, 3, H, W)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(images), -1, 1))


class RND:
    """Random network distillation on vector (B, D) or image (B, H, W, 3) uint8 observations.

    `novelty(batch)` -> (B,) float64: the raw squared prediction error; `intrinsic_reward(batch)`
    divides it by the running std of the novelties (`update_reward_stats`).  `update_obs_stats`
    feeds the input whitening; `fit(states, epochs, batch_size, rng)` trains the predictor."""

    def __init__(
        self, kind: str, shape: Sequence[int], config: LearnedExplorerConfig, device: torch.device | str = "cpu"
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
        return _images_chw(x) if self.kind == "image" else x

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
            "target": _cpu(self.target.state_dict()),
            "predictor": _cpu(self.predictor.state_dict()),
            "optimizer": _cpu(self.optimizer.state_dict()),
            "obs_stats": self.obs_stats.state_dict(),
            "reward_stats": self.reward_stats.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        self.predictor.load_state_dict(state["predictor"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_stats.load_state_dict(state["obs_stats"])
        self.reward_stats.load_state_dict(state["reward_stats"])


def _cpu(obj: Any) -> Any:
    """A copy of a (nested) state dict with every tensor on the CPU (checkpoints load anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu(v) for v in obj)
    return obj


# ------------------------------------------------------------------------------------------------ TD3


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
        config: LearnedExplorerConfig,
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
        return _cpu(
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
    import copy

    clone = copy.deepcopy(module)
    clone.requires_grad_(False)
    return clone


# ------------------------------------------------------------------------------------------ replay


class EpisodeReplay:
    """The session's finished episodes as a replay buffer, read from the store.

    `sync(session_dir)` registers the episodes the manifest lists that are not registered yet (by
    store index) and returns their indices; arrays load on first use (`observations`, `actions`)
    and stay cached (LRU-bounded by ``max_cached``).  A damaged episode is skipped with a warning
    and never sampled.  Observations are what the explorer sees: vectors (q, dq[, cube_pos,
    cube_quat]) as float32 (T, D), images of the explorer's camera as uint8 (T, H, W, 3).

    Transitions (row t -> t + 1) exist only inside a segment (`Episode.segments()`: one for an
    episode recorded whole; a salvaged one with steps missing has several).  The manifest does
    not say which episodes have gaps: an episode's segments are read when it is first loaded
    (`_cuts`, kept when its arrays are evicted), and `sample_transitions` loads the episodes of a
    draw that were never loaded before it returns it (drawing again if one of them had gaps or was
    damaged), so no sampled t is ever the last row of a segment."""

    def __init__(self, spec: ExplorerSpec, max_cached: int | None = None) -> None:
        self.spec = spec
        self.max_cached = max_cached
        self.infos: dict[int, EpisodeInfo] = {}
        self._cache: collections.OrderedDict[int, dict[str, np.ndarray]] = collections.OrderedDict()
        self._camera: str | None = None
        self._session_dir: pathlib.Path | None = None
        self._inspected: set[int] = set()
        """Store indices whose segments are known (loaded at least once)."""
        self._cuts: dict[int, np.ndarray] = {}
        """Episodes with gaps only: sorted rows t whose row t + 1 starts a new segment."""
        self._tables_version = 0
        self._rebuild()

    # -- registration
    def sync(self, session_dir: str | pathlib.Path) -> list[int]:
        session_dir = pathlib.Path(session_dir)
        if self._session_dir != session_dir:
            self._session_dir, self._camera = session_dir, None
        new = [info for info in read_manifest(session_dir) if info.index not in self.infos and info.steps > 0]
        for info in new:
            self.infos[info.index] = info
        if new:
            self._rebuild()
        return [info.index for info in new]

    def _rebuild(self) -> None:
        self.indices = np.array(sorted(self.infos), dtype=np.int64)
        lengths = np.array([self.infos[i].steps for i in self.indices], dtype=np.int64)
        self.lengths = lengths
        self._state_ends = np.cumsum(lengths)
        counts = np.maximum(lengths - 1, 0)
        if self._cuts:  # episodes with gaps: one transition fewer per segment after the first
            counts = counts - np.array([len(self._cuts.get(int(i), ())) for i in self.indices], dtype=np.int64)
        self._transition_counts = counts
        self._transition_ends = np.cumsum(counts)
        self._tables_version += 1

    def _drop(self, index: int, reason: str) -> None:
        warnings.warn(f"explorer replay: skipping damaged episode {index}: {reason}", stacklevel=3)
        self.infos.pop(index, None)
        self._cache.pop(index, None)
        self._inspected.discard(index)
        self._cuts.pop(index, None)
        self._rebuild()

    def _note_segments(self, index: int, segments: list[tuple[int, int]]) -> None:
        """Record an episode's segments (once, on its first load); tables rebuilt if it has gaps."""
        self._inspected.add(index)
        cuts = np.array([b - 1 for _, b in segments[:-1]], dtype=np.int64)
        if len(cuts):
            self._cuts[index] = cuts
            self._rebuild()

    @property
    def total_states(self) -> int:
        return int(self._state_ends[-1]) if len(self._state_ends) else 0

    @property
    def total_transitions(self) -> int:
        return int(self._transition_ends[-1]) if len(self._transition_ends) else 0

    def length(self, index: int) -> int:
        return self.infos[index].steps

    # -- loading
    def _observation_key(self, episode) -> list[str]:
        spec = self.spec
        if spec.observation_kind == "image":
            if self._camera is None:
                self._camera = self._session_camera()
            candidates = [k for k in episode.keys if k.startswith("obs/images/")]
            wanted = f"obs/images/{self._camera}" if self._camera else None
            if wanted in candidates:
                return [wanted]
            shaped = [k for k in candidates if tuple(episode.fields[k].shape) == tuple(spec.image_shape)]
            if not shaped:
                raise DamagedEpisodeError(episode.path, f"no camera image of shape {spec.image_shape}")
            return shaped[:1]
        keys = ["obs/q", "obs/dq"]
        if spec.observation_dim == 21:
            keys += ["privileged/cube_pos", "privileged/cube_quat"]
        elif spec.observation_dim != 14:
            raise ValueError(f"cannot rebuild {spec.observation_dim}-value explorer observations from the store")
        return keys

    def _session_camera(self) -> str | None:
        """The first camera of the session's robot options (the collector's explorer camera)."""
        import yaml

        try:
            config = yaml.safe_load((self._session_dir / "session.yaml").read_text())
            return config["robot"]["options"]["cameras"][0]["name"]
        except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
            return None

    def _load(self, index: int) -> dict[str, np.ndarray] | None:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        info = self.infos.get(index)
        if info is None:  # dropped as damaged since it was drawn
            return None
        try:
            with open_episode(info.path, expected_sha256=info.sha256, info=info) as episode:
                keys = self._observation_key(episode)
                arrays = [episode.load(k) for k in keys]
                action = episode.load("action").astype(np.float32)
                segments = None if index in self._inspected else episode.segments()
        except (DamagedEpisodeError, KeyError, OSError) as error:
            self._drop(index, str(error))
            return None
        if segments is not None:
            self._note_segments(index, segments)
        if self.spec.observation_kind == "image":
            obs = arrays[0].astype(np.uint8, copy=False)
        else:
            obs = np.concatenate([a.reshape(len(a), -1) for a in arrays], axis=1).astype(np.float32)
        data = {"obs": obs, "action": action}
        self._cache[index] = data
        if self.max_cached is not None:
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return data

    def episode(self, index: int) -> dict[str, np.ndarray] | None:
        """``{"obs", "action"}`` arrays of one registered episode, or None if it is damaged."""
        return self._load(index)

    # -- sampling (numpy Generator: part of the explorer's checkpointed state)
    def sample_transitions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` transitions uniformly over all (store index, row t) whose row t + 1 is the next
        step (the same segment: never across missing steps); empty arrays when there is none."""
        while True:
            if self.total_transitions == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
            flat = rng.integers(0, self.total_transitions, size=n)
            slot = np.searchsorted(self._transition_ends, flat, side="right")
            starts = self._transition_ends - self._transition_counts
            episodes, steps = self.indices[slot], flat - starts[slot]
            if self._segments_known(episodes):
                break
        if self._cuts:  # k-th transition of an episode with gaps -> its row, skipping segment ends
            for index in np.unique(episodes):
                cuts = self._cuts.get(int(index))
                if cuts is not None:
                    rows = episodes == index
                    steps[rows] += np.searchsorted(cuts - np.arange(len(cuts)), steps[rows], side="right")
        return episodes, steps

    def _segments_known(self, episodes: np.ndarray) -> bool:
        """Load the episodes of a draw never loaded before (their segments become known); False if
        that changed the tables (an episode with gaps, or a damaged one dropped): draw again."""
        unseen = [int(i) for i in np.unique(episodes) if int(i) not in self._inspected]
        if not unseen:
            return True
        version = self._tables_version
        for index in unseen:
            self._load(index)
        return self._tables_version == version

    def sample_states(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``min(n, all)`` distinct states uniformly over all (store index, step)."""
        total = self.total_states
        flat = np.sort(rng.choice(total, size=min(n, total), replace=False))
        slot = np.searchsorted(self._state_ends, flat, side="right")
        starts = self._state_ends - self.lengths
        return self.indices[slot], flat - starts[slot]

    def gather(self, episodes: np.ndarray, steps: np.ndarray, key: str = "obs") -> np.ndarray | None:
        """Rows ``steps`` of ``key`` of the given episodes, in order; None if one is damaged."""
        out = None
        for index in np.unique(episodes):
            data = self._load(int(index))
            if data is None:
                return None
            rows = np.nonzero(episodes == index)[0]
            values = data[key][steps[rows]]
            if out is None:
                out = np.empty((len(episodes), *values.shape[1:]), dtype=values.dtype)
            out[rows] = values
        return out


# ------------------------------------------------------------------------------------ explorers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TD3Explorer(Explorer):
    """What `rnd` and `gcrnd` share: an RND, a TD3 learner, the store as replay, the schedule.

    Subclasses define `_policy_input(observation)`, `_batch(n)` and may extend `begin_episode` /
    `_after_training`."""

    config_class = LearnedExplorerConfig
    config: LearnedExplorerConfig
    observation_kinds = ("vector", "image")
    goal_conditioned = False

    def __init__(self, spec: ExplorerSpec, config: LearnedExplorerConfig, seed: int) -> None:
        super().__init__(spec, config, seed)
        if config.torch_threads is not None and torch.get_num_threads() != config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.device = resolve_device(config.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.kind = spec.observation_kind
        if self.kind == "image":
            if spec.image_shape is None:
                raise ValueError("image explorers need spec.image_shape")
            h, w, channels = spec.image_shape
            rnd_shape: tuple[int, ...] = (h, w, channels)
            stacked = channels * (2 if self.goal_conditioned else 1)
            policy_shape: tuple[int, ...] = (stacked, h, w)
        else:
            rnd_shape = (spec.observation_dim,)
            policy_shape = (spec.observation_dim * (2 if self.goal_conditioned else 1),)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))  # network initialisation depends on the session seed only
            self.rnd = RND(self.kind, rnd_shape, config, self.device)
            self.agent = TD3Learner(self.kind, policy_shape, spec.action_dim, config, self.device, self.generator)
        self.replay = EpisodeReplay(spec, config.max_cached_episodes)
        self.known_episodes: list[int] = []
        """Store indices already taken in (statistics, cycle counting), in order."""
        self.policy_steps = 0
        self.heatup = True
        self.rnd_cycles = 0
        self.last_rnd_loss = float("nan")

    # -- schedules
    @property
    def noise_steps(self) -> int:
        c = self.config
        return c.exploration_noise_steps or c.cycles * c.episodes_per_cycle * self.spec.episode_steps

    @property
    def exploration_noise(self) -> float:
        c = self.config
        fraction = min(1.0, self.policy_steps / self.noise_steps)
        return c.exploration_noise_start + (c.exploration_noise_end - c.exploration_noise_start) * fraction

    # -- acting
    def begin_episode(self) -> dict[str, Any]:
        info = super().begin_episode()
        self.heatup = self.episodes_started <= self.config.heatup_episodes
        return {**info, "phase": "heatup" if self.heatup else "policy", "exploration_noise_std": self.exploration_noise}

    def _vector(self, observations: np.ndarray) -> np.ndarray:
        return self.spec.normalise(observations).astype(np.float32)

    @abc.abstractmethod
    def _policy_input(self, observation: np.ndarray) -> torch.Tensor:
        """The policy network's input for one observation (``gcrnd`` appends its goal)."""

    def policy_action(self, observation: np.ndarray) -> np.ndarray:
        """The deterministic policy's action in [-1, 1] (no exploration noise)."""
        return self.agent.act(self._policy_input(observation))[0]

    def act(self, observation: np.ndarray) -> np.ndarray:
        limit = self.spec.action_limit
        if self.heatup:
            return self.rng.uniform(-limit, limit)
        noisy = self.policy_action(observation) + self.rng.normal(0.0, self.exploration_noise, self.spec.action_dim)
        self.policy_steps += 1
        return np.clip(noisy, -1.0, 1.0) * limit

    # -- training
    def _ingest(self, index: int) -> None:
        """Take a new episode in: RND input statistics (and, for rnd, reward statistics)."""
        data = self.replay.episode(index)
        if data is not None:
            self.rnd.update_obs_stats(data["obs"])

    @abc.abstractmethod
    def _batch(self, n: int) -> dict[str, torch.Tensor] | None:
        """A TD3 batch of ``n`` transitions with this explorer's rewards, or None without data."""

    def _scaled_actions(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions / self.spec.action_limit, -1.0, 1.0).astype(np.float32)

    def train(self, store: Any) -> dict[str, float]:
        new = self.replay.sync(store.session_dir)
        known = set(self.known_episodes)
        new = [i for i in new if i not in known]
        if not new or self.replay.total_transitions == 0:
            self.known_episodes.extend(new)
            return {}
        started = time.monotonic()
        steps = 0
        for index in new:
            self._ingest(index)
            self.known_episodes.append(index)
            steps += self.replay.length(index) if index in self.replay.infos else 0
        c = self.config
        budget = c.updates_per_episode * len(new) if c.updates_per_episode is not None else steps
        losses: dict[str, list[float]] = collections.defaultdict(list)
        done = 0
        while done < budget:
            batch = self._batch(c.batch_size)
            if batch is None:  # an episode turned out damaged: tables rebuilt, draw again
                if self.replay.total_transitions == 0:
                    break
                continue
            for key, value in self.agent.update(batch).items():
                losses[key].append(value)
            done += 1
            if c.train_time_budget_s is not None and time.monotonic() - started > c.train_time_budget_s:
                break
        stats: dict[str, float] = {"td3_updates": done, **{k: float(np.mean(v)) for k, v in losses.items()}}
        before = (len(self.known_episodes) - len(new)) // c.episodes_per_cycle
        if len(self.known_episodes) // c.episodes_per_cycle > before:
            stats["rnd_loss"] = self._train_rnd()
        self._after_training(stats)
        stats["rnd_cycles"] = self.rnd_cycles
        return stats

    def _train_rnd(self) -> float:
        """003 Algorithm 1 line 24: train f^ on the last M episodes for K epochs."""
        c = self.config
        recent = [i for i in self.known_episodes if i in self.replay.infos][-c.episodes_per_cycle :]
        parts = [d["obs"] for d in (self.replay.episode(i) for i in recent) if d is not None]
        self.rnd_cycles += 1
        if parts:
            self.last_rnd_loss = self.rnd.fit(np.concatenate(parts), c.rnd_epochs, c.rnd_batch_size, self.rng)
        return self.last_rnd_loss

    def _after_training(self, stats: dict[str, float]) -> None:
        """Called at the end of `train` (gcrnd picks its next goal here)."""

    # -- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "explorer": type(self).__name__,
            "agent": self.agent.state_dict(),
            "rnd": self.rnd.state_dict(),
            "torch_generator": self.generator.get_state().cpu(),
            "known_episodes": list(self.known_episodes),
            "policy_steps": self.policy_steps,
            "heatup": self.heatup,
            "rnd_cycles": self.rnd_cycles,
            "last_rnd_loss": self.last_rnd_loss,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("explorer") != type(self).__name__:
            raise ValueError(f"checkpoint of explorer {state.get('explorer')!r}, not {type(self).__name__}")
        super().load_state_dict(state)
        self.agent.load_state_dict(state["agent"])
        self.rnd.load_state_dict(state["rnd"])
        self.generator.set_state(state["torch_generator"])
        self.known_episodes = [int(i) for i in state["known_episodes"]]
        self.policy_steps = int(state["policy_steps"])
        self.heatup = bool(state["heatup"])
        self.rnd_cycles = int(state["rnd_cycles"])
        self.last_rnd_loss = float(state["last_rnd_loss"])

    @property
    def counters(self) -> dict[str, int]:
        """Progress counters (tests and the benchmark compare them across restarts)."""
        return {
            "episodes_started": self.episodes_started,
            "episodes_trained": len(self.known_episodes),
            "policy_steps": self.policy_steps,
            "td3_updates": self.agent.updates,
            "rnd_cycles": self.rnd_cycles,
        }


class RNDConfig(LearnedExplorerConfig):
    """``rnd``: TD3 maximising the normalised RND reward (003's vanilla RND baseline)."""


class RNDExplorer(TD3Explorer):
    """``rnd``: TD3 on r(s, a, s') = novelty(s') / running std (no terminals: episodes end on time
    limits only).  The reward is computed at batch time with the current predictor (RND's reward
    is non-stationary; a stored reward would be stale)."""

    config_class = RNDConfig

    def _policy_input(self, observation: np.ndarray) -> torch.Tensor:
        if self.kind == "image":
            return torch.from_numpy(_images_chw(observation[None]))
        return torch.from_numpy(self._vector(np.asarray(observation)[None]))

    def _ingest(self, index: int) -> None:
        data = self.replay.episode(index)
        if data is not None:
            self.rnd.update_obs_stats(data["obs"])
            self.rnd.update_reward_stats(self.rnd.novelty(data["obs"]))

    def _batch(self, n: int) -> dict[str, torch.Tensor] | None:
        episodes, steps = self.replay.sample_transitions(n, self.rng)
        obs = self.replay.gather(episodes, steps)
        next_obs = self.replay.gather(episodes, steps + 1)
        actions = self.replay.gather(episodes, steps, key="action")
        if obs is None or next_obs is None or actions is None:
            return None
        reward = self.rnd.intrinsic_reward(next_obs).astype(np.float32)
        if self.kind == "image":
            obs_t, next_t = torch.from_numpy(_images_chw(obs)), torch.from_numpy(_images_chw(next_obs))
        else:
            obs_t, next_t = torch.from_numpy(self._vector(obs)), torch.from_numpy(self._vector(next_obs))
        device = self.device
        return {
            "obs": obs_t.to(device),
            "next_obs": next_t.to(device),
            "action": torch.from_numpy(self._scaled_actions(actions)).to(device),
            "reward": torch.from_numpy(reward).to(device),
            "discount": torch.full((n,), self.config.gamma, dtype=torch.float32, device=device),
        }
