"""Tasks chosen after collection: rewards and success computed in hindsight from logged states.

Every task is a pure function of arrays of logged states, so the learning module can relabel a
whole episode at once and the evaluator can score a rollout with the same code.  The arrays use
the names of the episode file (DESIGN.md, "On disk"):

- ``tip_pos``  (N, 3) tool-tip position, m, base frame            (``obs/tip_pos``)
- ``cube_pos`` (N, 3) cube centre, m, base frame                  (``privileged/cube_pos``)
- ``cube_top_face`` (N,) index into `sim.scene.CUBE_FACE_COLOURS` (``privileged/cube_top_face``)

Tasks (ALGORITHMS.md, "Tasks for relabelling and evaluation"):

- ``reach:k`` (seed 001, section 4 and Table 1): move the tool tip from the home pose to goal k of
  four fixed goals; dense reward -distance (m); success closer than ``success_distance_m``.  Seed
  001 does not publish its goal coordinates; ours lie 0.24-0.33 m from the home tool tip, inside
  the workspace box, two low over the table and two high and closer to the robot.
- ``push`` (seed 003, section V-B): push the cube into the region past ``threshold_y_m`` = 0.18 m
  along the table's y axis (the cube starts at y = 0); reward 1 - tanh(rho * distance to the
  region), rho = 10; success when the cube is in the region.
- ``flip:<colour>`` (seed 003): reward 1 when the given colour faces up, else 0.
- ``push+flip:<colour>`` (seed 003): the sum of the two rewards; success when both hold.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np
from pydantic import Field, field_validator

from safety.strict_model import StrictModel
from sim.scene import CUBE_FACE_COLOURS

States = Mapping[str, np.ndarray]


class TaskParameters(StrictModel):
    """Parameters of every task, with the papers' defaults."""

    reach_goals: tuple[tuple[float, float, float], ...] = Field(
        ((0.60, 0.20, 0.05), (0.60, -0.20, 0.05), (0.35, 0.25, 0.25), (0.35, -0.25, 0.25)),
        description="Reach goals (x, y, z), m, base frame; reach:k uses goal k (seed 001: four goals).",
    )
    reach_success_distance_m: float = Field(0.05, gt=0, description="Reach success radius, m.")
    push_threshold_y_m: float = Field(0.18, description="Push region: cube y beyond this, m (seed 003: 0.18).")
    push_rho: float = Field(10.0, gt=0, description="Push reward sharpness rho, 1/m (seed 003: 10).")

    @field_validator("reach_goals")
    @classmethod
    def _at_least_one_goal(cls, goals: tuple) -> tuple:
        if not goals:
            raise ValueError("at least one reach goal is needed")
        return goals


class Task(abc.ABC):
    """A task defined on logged states."""

    name: str
    requires_privileged: bool
    """True when the task needs simulator ground truth (the cube), absent from hardware data."""

    @abc.abstractmethod
    def reward(self, states: States) -> np.ndarray:
        """Reward of each state, shape (N,), float32."""

    @abc.abstractmethod
    def success(self, states: States) -> np.ndarray:
        """Whether each state solves the task, shape (N,), bool."""

    def required_keys(self) -> tuple[str, ...]:
        return ("cube_pos", "cube_top_face") if self.requires_privileged else ("tip_pos",)

    def _get(self, states: States, key: str) -> np.ndarray:
        if key not in states:
            hint = " (simulation-only privileged state)" if self.requires_privileged else ""
            raise KeyError(f"task {self.name!r} needs logged {key!r}{hint}, which these states lack")
        return np.asarray(states[key])


class Reach(Task):
    requires_privileged = False

    def __init__(self, goal: np.ndarray, success_distance_m: float, name: str) -> None:
        self.goal = np.asarray(goal, dtype=np.float64)
        self.success_distance_m = success_distance_m
        self.name = name

    def distance(self, states: States) -> np.ndarray:
        """Tool-tip distance to the goal, m, shape (N,)."""
        return np.linalg.norm(self._get(states, "tip_pos") - self.goal, axis=-1)

    def reward(self, states: States) -> np.ndarray:
        return (-self.distance(states)).astype(np.float32)

    def success(self, states: States) -> np.ndarray:
        return self.distance(states) < self.success_distance_m


class Push(Task):
    requires_privileged = True
    name = "push"

    def __init__(self, threshold_y_m: float, rho: float) -> None:
        self.threshold_y_m = threshold_y_m
        self.rho = rho

    def distance_to_region(self, states: States) -> np.ndarray:
        return np.maximum(0.0, self.threshold_y_m - self._get(states, "cube_pos")[..., 1])

    def reward(self, states: States) -> np.ndarray:
        return (1.0 - np.tanh(self.rho * self.distance_to_region(states))).astype(np.float32)

    def success(self, states: States) -> np.ndarray:
        return self.distance_to_region(states) <= 0.0


class Flip(Task):
    requires_privileged = True

    def __init__(self, colour: str) -> None:
        self.face = CUBE_FACE_COLOURS.index(colour)
        self.name = f"flip:{colour}"

    def success(self, states: States) -> np.ndarray:
        return self._get(states, "cube_top_face").astype(np.int64) == self.face

    def reward(self, states: States) -> np.ndarray:
        return self.success(states).astype(np.float32)


class PushFlip(Task):
    requires_privileged = True

    def __init__(self, push: Push, flip: Flip) -> None:
        self.push, self.flip = push, flip
        self.name = f"push+{flip.name}"

    def reward(self, states: States) -> np.ndarray:
        return self.push.reward(states) + self.flip.reward(states)

    def success(self, states: States) -> np.ndarray:
        return self.push.success(states) & self.flip.success(states)


def make_task(spec: str, parameters: TaskParameters | None = None) -> Task:
    """Build a task from its name: ``reach:K``, ``push``, ``flip:COLOUR`` or ``push+flip:COLOUR``.

    Raises `ValueError` naming what is wrong with ``spec``.
    """
    p = parameters or TaskParameters()
    kind, _, argument = spec.strip().partition(":")
    if kind == "reach":
        try:
            k = int(argument)
        except ValueError:
            raise ValueError(f"task {spec!r}: reach needs a goal index, e.g. reach:0") from None
        if not 0 <= k < len(p.reach_goals):
            raise ValueError(f"task {spec!r}: goal index must be in 0..{len(p.reach_goals) - 1}")
        return Reach(np.array(p.reach_goals[k]), p.reach_success_distance_m, name=f"reach:{k}")
    if kind == "push" and not argument:
        return Push(p.push_threshold_y_m, p.push_rho)
    if kind in ("flip", "push+flip"):
        if argument not in CUBE_FACE_COLOURS:
            raise ValueError(f"task {spec!r}: colour must be one of {', '.join(CUBE_FACE_COLOURS)}")
        flip = Flip(argument)
        return flip if kind == "flip" else PushFlip(Push(p.push_threshold_y_m, p.push_rho), flip)
    raise ValueError(f"unknown task {spec!r}; known: reach:K, push, flip:COLOUR, push+flip:COLOUR")


def states_from(robot_states: list) -> dict[str, np.ndarray]:
    """Stack a list of `RobotState` into the arrays tasks take (privileged keys when present)."""
    stacked = {"tip_pos": np.stack([s.tip_pos for s in robot_states])}
    if robot_states and robot_states[0].privileged:
        for key in robot_states[0].privileged:
            stacked[key] = np.stack([s.privileged[key] for s in robot_states])
    return stacked
