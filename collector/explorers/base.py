"""The explorer interface (DESIGN.md, "Interfaces") and the registry of explorers by name.

An explorer is task-agnostic: it sees observations (never rewards, never privileged state unless
the session is explicitly a privileged simulation experiment) and chooses actions inside the
action box; the safety filter is applied after it.  A new explorer is one module plus one line in
`EXPLORERS`.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
from typing import Any

import numpy as np

from safety.strict_model import StrictModel


@dataclasses.dataclass(frozen=True)
class ExplorerSpec:
    """What an explorer is told about the robot when it is built.

    Attributes:
        observation_low / observation_high: bounds of the (vector) observation, used to normalise
            it to [-1, 1] (joint limits for q, the velocity cap for dq, the workspace box for
            positions).
        action_limit: symmetric bound of each action component (rad/s or m per step).
        action_dim: 7 (joint_velocity) or 3 (tip_delta).
        episode_steps: planned steps per episode.
        observation_kind: ``"vector"`` (proprio, proprio+object: the bounds above apply) or
            ``"image"`` (one camera, uint8 ``image_shape`` = (H, W, 3); the bounds are then those
            of the proprioceptive part the collector still logs).
        image_shape: (H, W, 3) of image observations, else None.
        planned_steps: the recorded steps the session plans (its stop condition: ``stop.steps``, or
            ``stop.episodes`` x episode_steps, the smaller of the two), None when it runs until
            stopped; schedules meant to span "the whole run" span this.
        position_indices: the components of a vector observation that say where the arm and the
            cube are (q; the cube's pose), without the joint velocities: what an image shows.
            Novelty (RND) and gcrnd's goals use these (`positions`); None: every component.
    """

    observation_low: np.ndarray
    observation_high: np.ndarray
    action_limit: np.ndarray
    action_dim: int
    episode_steps: int
    observation_kind: str = "vector"
    image_shape: tuple[int, int, int] | None = None
    planned_steps: int | None = None
    position_indices: tuple[int, ...] | None = None

    @property
    def observation_dim(self) -> int:
        return int(self.observation_low.shape[0])

    def normalise(self, observation: np.ndarray) -> np.ndarray:
        """Map an observation into [-1, 1] per component (clipped)."""
        return _normalise(observation, self.observation_low, self.observation_high)

    @property
    def _positions(self) -> list[int] | None:
        if self.observation_kind != "vector" or self.position_indices is None:
            return None
        return list(self.position_indices)

    @property
    def position_dim(self) -> int:
        """Components of `positions` of one vector observation."""
        return self.observation_dim if self._positions is None else len(self._positions)

    def positions(self, observations: np.ndarray) -> np.ndarray:
        """The position components of (a batch of) vector observations; images as they are."""
        index = self._positions
        return observations if index is None else np.asarray(observations)[..., index]

    def normalise_positions(self, positions: np.ndarray) -> np.ndarray:
        """`normalise` for the output of `positions`."""
        index = self._positions if self._positions is not None else slice(None)
        return _normalise(positions, self.observation_low[index], self.observation_high[index])


def _normalise(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    centre = (high + low) / 2
    half_range = np.maximum((high - low) / 2, 1e-9)
    return np.clip((np.asarray(values, dtype=np.float64) - centre) / half_range, -1.0, 1.0)


def images_chw(images: np.ndarray) -> np.ndarray:
    """Image observations (B, H, W, 3) -> (B, 3, H, W), the layout of the conv networks."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(images), -1, 1))


class ExplorerConfig(StrictModel):
    """Base of every explorer's configuration (unknown keys refused, numbers finite)."""


class Explorer(abc.ABC):
    """A task-agnostic exploration policy."""

    config_class: type[ExplorerConfig] = ExplorerConfig
    observation_kinds: tuple[str, ...] = ("vector",)
    """Observation kinds this explorer can act on."""

    def __init__(self, spec: ExplorerSpec, config: ExplorerConfig, seed: int) -> None:
        if spec.observation_kind not in self.observation_kinds:
            raise ValueError(
                f"explorer {type(self).__name__} acts on {' or '.join(self.observation_kinds)} observations, "
                f"not {spec.observation_kind!r}"
            )
        self.spec = spec
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.episodes_started = 0

    def begin_episode(self) -> dict[str, Any]:
        """Prepare for a new episode; returns what to log with it (e.g. the goal chosen)."""
        self.episodes_started += 1
        return {}

    @abc.abstractmethod
    def act(self, observation: np.ndarray) -> np.ndarray:
        """The action for one step, inside [-action_limit, action_limit]."""

    def on_episode_end(self, observations: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Called with the episode's observations (T, obs_dim) when it ends."""

    def train(self, store: Any) -> dict[str, float]:
        """Train between episodes on data read from the episode store; returns statistics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this explorer stopped."""
        return {"rng": self.rng.bit_generator.state, "episodes_started": self.episodes_started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.episodes_started = int(state["episodes_started"])


EXPLORERS: dict[str, str] = {
    "random": "collector.explorers.random_uniform:UniformRandom",
    "random_linear": "collector.explorers.random_linear:RandomLinear",
    "gep": "collector.explorers.gep:GoalExplorationProcess",
    "rnd": "collector.explorers.rnd:RNDExplorer",
    "gcrnd": "collector.explorers.gcrnd:GoalConditionedRND",
    "sse": "collector.explorers.sse:SelfSupervisedExploration",
    "diayn": "collector.explorers.diayn:DIAYN",
}
"""Explorer name -> ``module:ClassName``."""


def explorer_class(name: str) -> type[Explorer]:
    try:
        target = EXPLORERS[name]
    except KeyError:
        raise KeyError(f"unknown explorer {name!r}; known: {', '.join(sorted(EXPLORERS))}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_explorer(name: str, spec: ExplorerSpec, parameters: dict[str, Any] | None, seed: int) -> Explorer:
    """Build explorer ``name``; its parameters are validated by its config model (unknown keys fail)."""
    cls = explorer_class(name)
    return cls(spec, cls.config_class(**(parameters or {})), seed)
