"""``gcrnd``: goal-conditioned RND, seed 003 section III and Algorithm 1 ("Data-set Collection
with Goal-Conditioned Policy and RND"); defaults from its appendix Table I.  The headline explorer.

Algorithm 1 as ALGORITHMS.md lists it, with the store as the replay buffer R:

1. (lines 5-6) sample R' from R with |R'| = M x T (`goal_subset_size`, default M x T = 2000;
   all states when R holds fewer), distinct states drawn uniformly; the goal g is the state of R'
   with the highest RND novelty ||f^(s) - f(s)||^2.  It is chosen at the end of `train` (the
   moment right before the next episode: nothing changes in between) and kept in the checkpoint,
   so a restarted session starts its next episode with the goal it had chosen.  `begin_episode`
   returns it and the collector logs it with the episode: ``goal = {"episode": store index,
   "step": step, "novelty": ..., "vector": raw observation (vector observations only)}``.
2. (lines 7-11) act with the goal-conditioned policy pi(s, g) for the episode, with additive
   Gaussian noise on its linear schedule 1.5 -> 0.5 (x action_limit; see `rnd`'s docstring for
   the units: RL Coach's absolute noise on the [-1, 1] action box).
3. (lines 12-21) T off-policy TD3 updates (`updates_per_episode`, default the steps of the
   episode just recorded).  Transitions (s_tau, a_tau, s_tau+1) are drawn uniformly from the whole
   store; each gets its goal DYNAMICALLY, at batch time, from the same episode's states
   s_tau, ..., s_T (uniform over the recorded steps tau .. L-1, the episode's last recorded
   state being s_T); with probability `self_goal_probability` = 0.04 (Table I) the goal is the
   state itself.  Reward r = -(g != s_tau) (Algorithm 1 line 16: 0 for a self-goal, -1 otherwise,
   including for the step that reaches g = s_tau+1), done = (g = s_tau) or (g = s_tau+1)
   (line 17); the TD target uses discount gamma x (1 - done).  "=" is identity of the recorded
   step (the same store index and step), not equality of values.
4. (line 24) after every cycle of M = 10 episodes, train the RND predictor on the last M episodes
   for K = 4 epochs.

Goal conditioning: vectors -> [normalise(s), normalise(g)] into the dense networks; images -> the
goal image concatenated with the state image on the channel axis (6 channels) into the conv
(003 section V-B, "Network architecture").  A vector goal is the observation's position components
(`ExplorerSpec.positions`: q, and the cube's pose with proprio+object; not the joint velocities), as
003's image goals showed where things were, not how fast they moved; the novelty that chooses it
is computed on the same components (`rnd` does the same).  (With velocities in the goals, the
first probe of the explorer study, issue 16, saw 99 goals chosen among 30 distinct states, mostly
joint-velocity spikes, which no policy can hold as a target.)

The first `heatup_episodes` (1) episodes, and any episode before a goal exists, act uniformly at
random (RL Coach's heatup; R is empty before the first episode).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from collector.explorers.base import images_chw
from collector.explorers.rnd import LearnedExplorerConfig, TD3Explorer


class GCRNDConfig(LearnedExplorerConfig):
    """``gcrnd`` settings: `LearnedExplorerConfig` (003 Table I, RL Coach TD3, RND) plus the
    goal-sampling ones."""

    self_goal_probability: float = Field(
        0.04, ge=0, le=1, description="Probability of the state itself as goal (r = 0, done; 003 Table I)."
    )
    goal_subset_size: int | None = Field(
        None, ge=1, description="|R'|, states scored for the goal; None = M x T (003 Algorithm 1 line 5)."
    )


def relabel_future_goals(
    steps: np.ndarray, lengths: np.ndarray, self_goal_probability: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Goals for transitions (s_tau, a_tau, s_tau+1) at steps ``steps`` of episodes of recorded
    lengths ``lengths`` (003 Algorithm 1 lines 15-17).

    Returns (goal step, reward, done): the goal step is uniform over tau .. length - 1 of the same
    episode, or tau itself with probability ``self_goal_probability``; reward = 0 if the goal is
    s_tau else -1; done = goal is s_tau or s_tau+1."""
    steps, lengths = np.asarray(steps, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
    goal = rng.integers(steps, lengths)
    self_goal = rng.random(len(steps)) < self_goal_probability
    goal = np.where(self_goal, steps, goal)
    reward = np.where(goal == steps, 0.0, -1.0).astype(np.float32)
    done = (goal == steps) | (goal == steps + 1)
    return goal, reward, done


class GoalConditionedRND(TD3Explorer):
    config_class = GCRNDConfig
    config: GCRNDConfig
    goal_conditioned = True

    def __init__(self, spec, config: GCRNDConfig, seed: int) -> None:
        super().__init__(spec, config, seed)
        self.pending_goal: dict[str, Any] | None = None
        """The goal chosen for the next episode: episode, step, novelty, obs (raw observation)."""
        self.goal: dict[str, Any] | None = None
        """The goal of the current episode."""
        self.last_subset: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        """(episodes, steps, novelties) of the last goal choice (for inspection and tests)."""

    @property
    def goal_subset_size(self) -> int:
        c = self.config
        return c.goal_subset_size or c.episodes_per_cycle * self.spec.episode_steps

    # -- goal choice (Algorithm 1 lines 5-6)
    def select_goal(self) -> dict[str, Any] | None:
        """Score a random subset of the store by novelty; the argmax is the goal."""
        if self.replay.total_states == 0:
            return None
        for _ in range(3):  # a damaged episode is dropped from the tables: draw again
            episodes, steps = self.replay.sample_states(self.goal_subset_size, self.rng)
            observations = self.replay.gather(episodes, steps)
            if observations is not None:
                break
        else:
            return None
        positions = self.spec.positions(observations)
        novelty = self.rnd.novelty(positions)
        best = int(np.argmax(novelty))
        self.last_subset = (episodes, steps, novelty)
        return {
            "episode": int(episodes[best]),
            "step": int(steps[best]),
            "novelty": float(novelty[best]),
            "obs": np.array(positions[best]),
        }

    def _after_training(self, stats: dict[str, float]) -> None:
        self.pending_goal = self.select_goal()
        if self.pending_goal is not None:
            stats["next_goal_novelty"] = self.pending_goal["novelty"]

    def begin_episode(self) -> dict[str, Any]:
        info = super().begin_episode()
        if self.pending_goal is None:
            self.heatup = True
            info["phase"] = "heatup"
        self.goal = None if self.heatup else self.pending_goal
        if self.goal is not None:
            logged = {key: self.goal[key] for key in ("episode", "step", "novelty")}
            if self.kind == "vector":
                logged["vector"] = [float(v) for v in self.goal["obs"]]
            info["goal"] = logged
        return info

    # -- acting
    def _policy_input(self, observation: np.ndarray) -> torch.Tensor:
        goal = self.goal["obs"]
        if self.kind == "image":
            return torch.from_numpy(np.concatenate([images_chw(observation[None]), images_chw(goal[None])], axis=1))
        vector = np.concatenate([self._vector(np.asarray(observation)), self.spec.normalise_positions(goal)])
        return torch.from_numpy(vector.astype(np.float32).reshape(1, -1))

    # -- training (Algorithm 1 lines 13-20)
    def relabelled_batch(self, n: int) -> dict[str, np.ndarray] | None:
        """A minibatch of n transitions with goals drawn now from their episodes' futures: numpy
        arrays obs, goal, next_obs, action (raw), reward, done, plus episode, step, goal_step."""
        episodes, steps = self.replay.sample_transitions(n, self.rng)
        lengths = np.array([self.replay.length(int(e)) for e in episodes])
        goal_steps, reward, done = relabel_future_goals(steps, lengths, self.config.self_goal_probability, self.rng)
        obs = self.replay.gather(episodes, steps)
        next_obs = self.replay.gather(episodes, steps + 1)
        goal = self.replay.gather(episodes, goal_steps)
        goal = None if goal is None else self.spec.positions(goal)
        action = self.replay.gather(episodes, steps, key="action")
        if obs is None or next_obs is None or goal is None or action is None:
            return None
        return {
            "obs": obs,
            "next_obs": next_obs,
            "goal": goal,
            "action": action,
            "reward": reward,
            "done": done,
            "episode": episodes,
            "step": steps,
            "goal_step": goal_steps,
        }

    def _pair(self, obs: np.ndarray, goal: np.ndarray) -> torch.Tensor:
        if self.kind == "image":
            return torch.from_numpy(np.concatenate([images_chw(obs), images_chw(goal)], axis=1))
        goal = self.spec.normalise_positions(goal).astype(np.float32)
        return torch.from_numpy(np.concatenate([self._vector(obs), goal], axis=1))

    def _batch(self, n: int) -> dict[str, torch.Tensor] | None:
        b = self.relabelled_batch(n)
        if b is None:
            return None
        device = self.device
        discount = (self.config.gamma * (1.0 - b["done"])).astype(np.float32)
        return {
            "obs": self._pair(b["obs"], b["goal"]).to(device),
            "next_obs": self._pair(b["next_obs"], b["goal"]).to(device),
            "action": torch.from_numpy(self._scaled_actions(b["action"])).to(device),
            "reward": torch.from_numpy(b["reward"]).to(device),
            "discount": torch.from_numpy(discount).to(device),
        }

    # -- checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pending_goal": _copy_goal(self.pending_goal), "goal": _copy_goal(self.goal)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pending_goal = _copy_goal(state["pending_goal"])
        self.goal = _copy_goal(state["goal"])


def _copy_goal(goal: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if goal is None else {**goal, "obs": np.array(goal["obs"])}
