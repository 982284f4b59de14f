"""``rnd``: TD3 maximising the RND reward (seed 003's "vanilla RND" baseline, section V-B
"Baselines"), and `TD3Explorer`: the acting, training-cycle, budget and checkpoint logic common
to `rnd` and `gcrnd`.

The parts they are built from each have their own module and config:

- `rnd_bonus.RND` (`RNDBonusConfig`): random network distillation (Burda et al. 2018;
  ALGORITHMS.md "RND"; seed 002 appendix B.3): the novelty ||f^(s) - f(s)||^2 and the
  intrinsic reward; MLPs [512, 512] -> 512 for vectors (002 B.3), the RND paper's networks
  (its appendix A.4) for images.
- `running_stats.RunningMeanStd`: RND's input whitening and reward normalisation.
- `td3_learner.TD3Learner` (`TD3LearnerConfig`): TD3 (Fujimoto et al. 2018) with seed 003's
  appendix Table I architecture and RL Coach's TD3 defaults.
- `replay.EpisodeReplay` (`ReplayConfig`): the store is the replay buffer (DESIGN.md).

`LearnedExplorerConfig` is the flat ``explorer.parameters`` of a session (its keys and defaults
unchanged since the parts were split out); the fields of the parts' configs are declared once,
in the parts' modules, and `LearnedExplorerConfig.parts()` is the one place the parts' configs
are built from it.  The rest of its fields are the explorer's own: the schedule below, the TD3
minibatch and discount (it draws the batches), the budget and the machinery.

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
length: we decay over the whole run (`exploration_noise_steps`, counted on policy steps only, as
Coach's schedule steps only in its training phase): the session's planned steps less the heatup's
when its stop condition gives them (`ExplorerSpec.planned_steps`), else 003's run, N x M x T = 150 x
10 x 200 = 300K acting steps.  (A schedule fixed at 300K left a 20K-step session at std 1.3-1.5,
56-58% of action components at the bounds and the tip at the workspace walls most of the time:
the explorer study's first probe, issue 16.)

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
import time
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from pydantic import Field

from collector.explorers.base import Explorer, ExplorerConfig, ExplorerSpec, images_chw
from collector.explorers.replay import EpisodeReplay, ReplayConfig
from collector.explorers.rnd_bonus import RND, RNDBonusConfig
from collector.explorers.td3_learner import TD3Learner, TD3LearnerConfig
from collector.explorers.torch_common import ConvLayers, resolve_device
from safety.strict_model import StrictModel

PartConfig = TypeVar("PartConfig", bound=StrictModel)


def _part_field(part: type[StrictModel], name: str) -> Any:
    """The field ``name`` of a part's config, to declare it again, unchanged (default, bounds,
    description), in `LearnedExplorerConfig`: each setting is defined once, in its part's module."""
    return part.model_fields[name]


class LearnedExplorerParts(NamedTuple):
    """The parts' own configs, built from a `LearnedExplorerConfig` by its `parts()`."""

    td3: TD3LearnerConfig
    rnd: RNDBonusConfig
    replay: ReplayConfig


class LearnedExplorerConfig(ExplorerConfig):
    """Settings shared by `rnd` and `gcrnd` (defaults: seed 003 appendix Table I, RL Coach TD3,
    the RND paper; see the module docstring).

    The fields keep the order, names, defaults and bounds of ``explorer.parameters`` (a session's
    errors are listed in this order); those of a part are that part's config fields."""

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
        None,
        ge=1,
        description="Policy steps of the linear noise schedule; None = the whole run: the session's planned steps "
        "less the heatup's, or N x M x T when the session runs until stopped.",
    )
    heatup_episodes: int = Field(1, ge=0, description="Episodes of uniform random actions first (RL Coach heatup).")
    # -- TD3 (003 Table I; RL Coach defaults): td3_learner.TD3LearnerConfig, and the explorer's batches
    actor_hidden: tuple[int, ...] = _part_field(TD3LearnerConfig, "actor_hidden")
    critic_hidden: tuple[int, ...] = _part_field(TD3LearnerConfig, "critic_hidden")
    conv_layers: ConvLayers = _part_field(TD3LearnerConfig, "conv_layers")
    actor_lr: float = _part_field(TD3LearnerConfig, "actor_lr")
    critic_lr: float = _part_field(TD3LearnerConfig, "critic_lr")
    batch_size: int = Field(100, ge=1, description="TD3 minibatch, transitions (RL Coach TD3: 100).")
    gamma: float = Field(0.99, gt=0, le=1, description="Discount per step (RL Coach: 0.99).")
    tau: float = _part_field(TD3LearnerConfig, "tau")
    target_policy_noise: float = _part_field(TD3LearnerConfig, "target_policy_noise")
    target_noise_clip: float = _part_field(TD3LearnerConfig, "target_noise_clip")
    policy_delay: int = _part_field(TD3LearnerConfig, "policy_delay")
    # -- RND (RND paper; 002 B.3): rnd_bonus.RNDBonusConfig, and the explorer's RND training batches
    rnd_hidden: tuple[int, ...] = _part_field(RNDBonusConfig, "rnd_hidden")
    rnd_output_dim: int = _part_field(RNDBonusConfig, "rnd_output_dim")
    rnd_conv_layers: ConvLayers = _part_field(RNDBonusConfig, "rnd_conv_layers")
    rnd_lr: float = _part_field(RNDBonusConfig, "rnd_lr")
    rnd_batch_size: int = Field(128, ge=1, description="RND training minibatch, states.")
    rnd_obs_clip: float = _part_field(RNDBonusConfig, "rnd_obs_clip")
    # -- budget and machinery
    updates_per_episode: int | None = Field(
        None, ge=0, description="TD3 updates after each episode; None = its steps (T, 003 Algorithm 1 line 12)."
    )
    train_time_budget_s: float | None = Field(
        None, gt=0, description="Stop an episode's TD3 updates after this many seconds (hardware); None = off."
    )
    max_cached_episodes: int | None = _part_field(ReplayConfig, "max_cached_episodes")
    device: str = Field("cpu", description="torch device: cpu, cuda, or auto (cuda when present).")
    torch_threads: int | None = Field(
        1,
        ge=1,
        description="torch intra-op CPU threads of the collector process (set when the explorer is built); "
        "None = torch's default.  1: these small networks gain nothing from more, and spinning threads "
        "competing with the step loop and the store's writer cost 10-50x on a loaded machine.",
    )

    def parts(self) -> LearnedExplorerParts:
        """The parts' configs, each given this config's values of its fields (the one place they
        are built)."""
        return LearnedExplorerParts(
            td3=_take(self, TD3LearnerConfig), rnd=_take(self, RNDBonusConfig), replay=_take(self, ReplayConfig)
        )


def _take(config: LearnedExplorerConfig, part: type[PartConfig]) -> PartConfig:
    """``part``'s config with ``config``'s values of its fields."""
    return part(**{name: getattr(config, name) for name in part.model_fields})


# ------------------------------------------------------------------------------------ explorers


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
            rnd_shape = (spec.position_dim,)  # novelty of where things are, not how fast (an image's view)
            policy_shape = (spec.observation_dim + (spec.position_dim if self.goal_conditioned else 0),)
        parts = config.parts()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))  # network initialisation depends on the session seed only
            self.rnd = RND(self.kind, rnd_shape, parts.rnd, self.device)
            self.agent = TD3Learner(self.kind, policy_shape, spec.action_dim, parts.td3, self.device, self.generator)
        self.replay = EpisodeReplay(spec, parts.replay)
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
        if c.exploration_noise_steps:
            return c.exploration_noise_steps
        if self.spec.planned_steps:
            return max(1, self.spec.planned_steps - c.heatup_episodes * self.spec.episode_steps)
        return c.cycles * c.episodes_per_cycle * self.spec.episode_steps

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
            self.rnd.update_obs_stats(self.spec.positions(data["obs"]))

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
            steps += self.replay.length(index) if index in self.replay else 0
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
        recent = [i for i in self.known_episodes if i in self.replay][-c.episodes_per_cycle :]
        parts = [self.spec.positions(d["obs"]) for d in (self.replay.episode(i) for i in recent) if d is not None]
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
            return torch.from_numpy(images_chw(observation[None]))
        return torch.from_numpy(self._vector(np.asarray(observation)[None]))

    def _ingest(self, index: int) -> None:
        data = self.replay.episode(index)
        if data is not None:
            positions = self.spec.positions(data["obs"])
            self.rnd.update_obs_stats(positions)
            self.rnd.update_reward_stats(self.rnd.novelty(positions))

    def _batch(self, n: int) -> dict[str, torch.Tensor] | None:
        episodes, steps = self.replay.sample_transitions(n, self.rng)
        obs = self.replay.gather(episodes, steps)
        next_obs = self.replay.gather(episodes, steps + 1)
        actions = self.replay.gather(episodes, steps, key="action")
        if obs is None or next_obs is None or actions is None:
            return None
        reward = self.rnd.intrinsic_reward(self.spec.positions(next_obs)).astype(np.float32)
        if self.kind == "image":
            obs_t, next_t = torch.from_numpy(images_chw(obs)), torch.from_numpy(images_chw(next_obs))
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
