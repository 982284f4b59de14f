"""Shared helpers for the safety tests: states inside the limits and the integrator model."""

from __future__ import annotations

import dataclasses

import numpy as np

from safety import kinematics
from safety.filter import SafetyFilter, cartesian_margins
from safety.limits import SafetyLimits
from safety.reset import DEFAULT_HOME_Q

HOME_Q = DEFAULT_HOME_Q
LIMITS = SafetyLimits()


@dataclasses.dataclass
class State:
    """A duck-typed robot state (the fields of robot_drivers.RobotState the filter reads)."""

    q: np.ndarray
    dq: np.ndarray
    tip_pos: np.ndarray
    time: float = 0.0


def make_state(q: np.ndarray, dq: np.ndarray, time: float = 0.0) -> State:
    return State(np.array(q, float), np.array(dq, float), kinematics.tip_position(q), time)


def margins(q: np.ndarray, limits: SafetyLimits = LIMITS) -> tuple[np.ndarray, np.ndarray]:
    """(joint margins (..., 7) rad, Cartesian margins (..., 11) m), negative outside."""
    q = np.asarray(q, float)
    joint = np.minimum(q - limits.q_lower, limits.q_upper - q)
    return joint, cartesian_margins(limits, kinematics.frames(q), q=q)


def inside(q: np.ndarray, limits: SafetyLimits = LIMITS, tol: float = 1e-9) -> bool:
    joint, cart = margins(q, limits)
    return bool(joint.min() >= -tol and cart.min() >= -tol)


def random_inside_q(rng: np.random.Generator, limits: SafetyLimits = LIMITS) -> np.ndarray:
    """A joint configuration drawn uniformly inside the operating joint limits with the tool tip
    in the box and the arm above the table (rejection sampling)."""
    while True:
        q = rng.uniform(limits.q_lower, limits.q_upper)
        if inside(q, limits):
            return q


def explore(
    rng: np.random.Generator, steps: int, action_space: str = "joint_velocity", limits: SafetyLimits = LIMITS
) -> tuple[np.ndarray, np.ndarray]:
    """A configuration and velocity reached from home by uniform random actions through the
    filter on the integrator model (the states a collector actually meets)."""
    safety_filter = SafetyFilter(limits, 20.0, action_space)
    q, v = HOME_Q.copy(), np.zeros(7)
    scale = limits.velocity_cap if action_space == "joint_velocity" else limits.tip_delta_max
    action = rng.uniform(-scale, scale, safety_filter.action_dim)
    for k in range(steps):
        if k % 20 == 0:  # piecewise-constant actions travel further than white noise
            action = rng.uniform(-scale, scale, safety_filter.action_dim)
        command, _ = safety_filter.filter(make_state(q, v), action)
        v = command.values
        q = q + v * safety_filter.period
    return q, v
