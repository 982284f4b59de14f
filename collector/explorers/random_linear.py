"""``random_linear``: a new random linear policy every episode (seed 001, "Random Policies").

Seed 001 (section 3, "Random Policies"): "this baseline randomly initializes a new policy every
episode"; it beat the learned explorers on the real Panda and is our default explorer.

Policy: a = clip(action_limit * (W s + b), -action_limit, action_limit), with s the observation
normalised to [-1, 1] by the observation box, and W, b drawn uniformly from [-1, 1] scaled by
``weight_scale / sqrt(obs_dim + 1)`` so that W s + b has about unit spread whatever the
observation size.  Seed 001 does not give its weight distribution; this scaling (our choice) keeps
the policy from being bang-bang on most components.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from collector.explorers.base import Explorer, ExplorerConfig, ExplorerSpec


class RandomLinearConfig(ExplorerConfig):
    weight_scale: float = Field(
        1.7, gt=0, description="Scale of W and b, times 1/sqrt(obs_dim + 1); 1.7 gives W s + b unit spread."
    )


def draw_linear_policy(rng: np.random.Generator, spec: ExplorerSpec, scale: float) -> np.ndarray:
    """Parameters [W | b], shape (action_dim, obs_dim + 1), uniform in [-scale, scale]/sqrt(obs_dim + 1)."""
    bound = scale / np.sqrt(spec.observation_dim + 1)
    return rng.uniform(-bound, bound, size=(spec.action_dim, spec.observation_dim + 1))


def linear_action(parameters: np.ndarray, spec: ExplorerSpec, observation: np.ndarray) -> np.ndarray:
    s = spec.normalise(observation)
    pre_activation = parameters[:, :-1] @ s + parameters[:, -1]
    return np.clip(spec.action_limit * pre_activation, -spec.action_limit, spec.action_limit)


class RandomLinear(Explorer):
    config_class = RandomLinearConfig
    config: RandomLinearConfig

    def __init__(self, spec: ExplorerSpec, config: RandomLinearConfig, seed: int) -> None:
        super().__init__(spec, config, seed)
        self.parameters = draw_linear_policy(self.rng, spec, config.weight_scale)

    def begin_episode(self) -> dict:
        info = super().begin_episode()
        self.parameters = draw_linear_policy(self.rng, self.spec, self.config.weight_scale)
        return info

    def act(self, observation: np.ndarray) -> np.ndarray:
        return linear_action(self.parameters, self.spec, observation)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "parameters": self.parameters.copy()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.parameters = np.array(state["parameters"], dtype=np.float64)
