"""A Franka arm's collision reflex: the arm stops when an external force exceeds its thresholds.

A real Panda or FR3 estimates the external torque on each joint (measured torque minus what its
dynamic model needs) and the external wrench at the tool (``(J^T)^+ tau_ext``).  When either exceeds
the thresholds set with libfranka's ``Robot::setCollisionBehavior``, the robot stops the motion
and reports a reflex error (libfranka's ``ControlException``, robot mode ``Reflex``) until it is
recovered (``automaticErrorRecovery``).  This is the robot's last line of defence, below our safety
filter: a commanded motion the filter allowed can still meet an object (the cube on the table, a
person).

The simulators model it (sim/base.py) with the joint torques of the contact forces on the arm, the
physics engine's own, checked after every physics substep; the real arm is configured from the
same `CollisionReflexConfig`.  The thresholds default to the values libfranka's examples set
(`safety.limits.FRANKA_COLLISION_TORQUE_THRESHOLDS_NM`, `FRANKA_COLLISION_FORCE_THRESHOLDS`).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from safety.limits import FRANKA_COLLISION_FORCE_THRESHOLDS, FRANKA_COLLISION_TORQUE_THRESHOLDS_NM
from safety.strict_model import StrictModel

WRENCH_NAMES = ("force x", "force y", "force z", "torque x", "torque y", "torque z")
WRENCH_UNITS = ("N", "N", "N", "N m", "N m", "N m")
JACOBIAN_RCOND = 1e-3
"""Singular values of the tool Jacobian below this fraction of the largest are ignored when the
wrench is estimated from joint torques (near a singularity the estimate is unbounded, on the real
arm too; the joint torque thresholds still apply there)."""


class CollisionReflexConfig(StrictModel):
    """Thresholds of the arm's collision reflex (``setCollisionBehavior``'s upper thresholds)."""

    joint_torque_thresholds_nm: tuple[float, ...] = Field(
        FRANKA_COLLISION_TORQUE_THRESHOLDS_NM,
        description="External torque per joint (7 values, N m) above which the arm stops; "
        "libfranka's example defaults.",
    )
    tool_wrench_thresholds: tuple[float, ...] = Field(
        FRANKA_COLLISION_FORCE_THRESHOLDS,
        description="External wrench at the tool (force x, y, z in N; torque x, y, z in N m; base "
        "frame) above which the arm stops; libfranka's example defaults.",
    )

    @field_validator("joint_torque_thresholds_nm")
    @classmethod
    def _seven_positive(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        return _positive(values, 7)

    @field_validator("tool_wrench_thresholds")
    @classmethod
    def _six_positive(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        return _positive(values, 6)


def _positive(values: tuple[float, ...], count: int) -> tuple[float, ...]:
    if len(values) != count:
        raise ValueError(f"needs {count} values, got {len(values)}")
    if min(values) <= 0.0:
        raise ValueError(f"every threshold must be positive, got {list(values)}")
    return values


def tool_wrench(external_joint_torques: np.ndarray, tool_jacobian: np.ndarray) -> np.ndarray:
    """The wrench at the tool that explains the external joint torques, ``(J^T)^+ tau_ext``: force
    (N) then torque (N m), in the frame of the (6, 7) Jacobian (linear rows first)."""
    jacobian = np.asarray(tool_jacobian, dtype=np.float64)
    return np.linalg.lstsq(jacobian.T, np.asarray(external_joint_torques, np.float64), rcond=JACOBIAN_RCOND)[0]


def reflex_reason(
    external_joint_torques: np.ndarray, tool_jacobian: np.ndarray, config: CollisionReflexConfig
) -> str | None:
    """One line naming the threshold the external torques exceed most (by ratio), or None when
    every joint torque and every wrench component is within its threshold.

    ``external_joint_torques``: (7,) N m; ``tool_jacobian``: (6, 7), linear rows then angular."""
    torques = np.abs(np.asarray(external_joint_torques, dtype=np.float64))
    joint_limit = np.asarray(config.joint_torque_thresholds_nm)
    joint_ratio = torques / joint_limit
    wrench = np.abs(tool_wrench(external_joint_torques, tool_jacobian))
    wrench_limit = np.asarray(config.tool_wrench_thresholds)
    wrench_ratio = wrench / wrench_limit
    if not (np.isfinite(joint_ratio).all() and np.isfinite(wrench_ratio).all()):
        return "collision reflex: the external torque estimate is not finite"
    j, w = int(np.argmax(joint_ratio)), int(np.argmax(wrench_ratio))
    if max(joint_ratio[j], wrench_ratio[w]) <= 1.0:
        return None
    if joint_ratio[j] >= wrench_ratio[w]:
        return (
            f"collision reflex: external torque {torques[j]:.1f} N m on joint {j + 1} "
            f"(threshold {joint_limit[j]:g} N m)"
        )
    return (
        f"collision reflex: external {WRENCH_NAMES[w]} {wrench[w]:.1f} {WRENCH_UNITS[w]} at the tool "
        f"(threshold {wrench_limit[w]:g} {WRENCH_UNITS[w]})"
    )
