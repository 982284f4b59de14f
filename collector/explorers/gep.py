"""``gep``: goal exploration process with linear policies (seed 001, section 3; Colas et al. 2018).

Seed 001: "generating a set of randomized linear policies and executing them ... stored in memory
in the form of a ... descriptor extracted from each trajectory ... we simply store the
element-wise mean of the states along the trajectory as its descriptor.  Once a number of
randomized policies have been executed (N = 50 ...), random 'goal' states are sampled from the
state space, and the policy in memory associated with the nearest state to the goal is perturbed
with random noise and executed again, adding its new experience to the memory."

As ALGORITHMS.md lists: policy a = action_limit * tanh(policy_gain * (W s + b)) on observations
normalised to [-1, 1] by the observation box (GEP's original z-scored its inputs with dataset
statistics; a task-agnostic collector has none before it starts, so the box stands in for them),
parameters uniform in [-1, 1], gain 0.15, with seed 001's bias; goals uniform over the normalised
observation box (001's variant); 1-nearest neighbour in descriptor space; perturbation N(0, 0.2)
on every parameter, clipped to [-1, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from collector.explorers.base import Explorer, ExplorerConfig, ExplorerSpec


class GEPConfig(ExplorerConfig):
    bootstrap_policies: int = Field(50, ge=1, description="Random policies run before goal sampling (N = 50).")
    policy_gain: float = Field(0.15, gt=0, description="Gain inside tanh(gain * (W s + b)) (GEP: 0.15).")
    perturbation_std: float = Field(0.2, gt=0, description="Std of the Gaussian parameter perturbation (0.2).")


class GoalExplorationProcess(Explorer):
    config_class = GEPConfig
    config: GEPConfig

    def __init__(self, spec: ExplorerSpec, config: GEPConfig, seed: int) -> None:
        super().__init__(spec, config, seed)
        self.policies: list[np.ndarray] = []
        self.descriptors: list[np.ndarray] = []
        self.parameters = self._random_parameters()
        self.last_goal: np.ndarray | None = None

    def _random_parameters(self) -> np.ndarray:
        return self.rng.uniform(-1.0, 1.0, size=(self.spec.action_dim, self.spec.observation_dim + 1))

    def begin_episode(self) -> dict[str, Any]:
        info = super().begin_episode()
        if len(self.policies) < self.config.bootstrap_policies:
            self.parameters = self._random_parameters()
            self.last_goal = None
            return {**info, "gep_phase": "bootstrap"}
        goal = self.rng.uniform(-1.0, 1.0, size=self.spec.observation_dim)
        nearest = int(np.argmin(np.linalg.norm(np.stack(self.descriptors) - goal, axis=1)))
        noise = self.rng.normal(0.0, self.config.perturbation_std, size=self.policies[nearest].shape)
        self.parameters = np.clip(self.policies[nearest] + noise, -1.0, 1.0)
        self.last_goal = goal
        return {**info, "gep_phase": "goal", "gep_goal": goal.tolist(), "gep_parent": nearest}

    def act(self, observation: np.ndarray) -> np.ndarray:
        s = self.spec.normalise(observation)
        pre_activation = self.parameters[:, :-1] @ s + self.parameters[:, -1]
        return self.spec.action_limit * np.tanh(self.config.policy_gain * pre_activation)

    def on_episode_end(self, observations: np.ndarray) -> None:
        if len(observations) == 0:
            return
        normalised = np.stack([self.spec.normalise(o) for o in observations])
        self.policies.append(self.parameters.copy())
        self.descriptors.append(normalised.mean(axis=0))

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "parameters": self.parameters.copy(),
            "policies": np.array(self.policies),
            "descriptors": np.array(self.descriptors),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.parameters = np.array(state["parameters"], dtype=np.float64)
        self.policies = [np.array(p) for p in state["policies"]]
        self.descriptors = [np.array(d) for d in state["descriptors"]]
