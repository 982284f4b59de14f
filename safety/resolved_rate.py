"""Resolved-rate control of the tool tip (``tip_delta`` actions, seed 003): the one implementation
the safety filter and the simulators' own tip_delta mode share.

A ``tip_delta`` action is a Cartesian displacement of the tool tip per control step (m), with the
tool held pointing straight down.  The displacements accumulate into a **tool-tip target** that is
kept within `TIP_TARGET_LEAD_M` of the actual tool tip (a blocked arm does not wind up) and, where
bounds are given, inside the tool-tip box.  The joint velocities that move the tip toward it are
the **damped least-squares** solution ``dq = J^T (J J^T + lambda^2 I)^-1 twist`` (Wampler 1986;
Buss 2004, "Introduction to inverse kinematics with Jacobian transpose, pseudoinverse and damped
least squares methods", its damped least-squares section) of the tool tip's geometric Jacobian, for the twist
``((target - tip) / time_to_go, k * rotation_error(R, R_target))``.

Pure numpy on frames from `safety.kinematics`; no state of its own: the caller keeps the
`TipTarget` between steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from safety import kinematics

TIP_TARGET_LEAD_M = 0.02
"""Largest distance the tool-tip target may lead the actual tool tip, m."""
IK_DAMPING = 0.02
"""Damping lambda of the least-squares inverse of the Jacobian (m)."""
IK_ORIENTATION_GAIN = 5.0
"""Gain k, 1/s, turning the tool's orientation error (rad) into an angular velocity."""


@dataclasses.dataclass(frozen=True)
class TipTarget:
    """Where the tool tip is being taken: position (3,), m, and orientation (3, 3), base frame."""

    position: np.ndarray
    orientation: np.ndarray


def advance_target(
    target: TipTarget | None,
    tip: np.ndarray,
    rotation: np.ndarray,
    delta: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> TipTarget:
    """The target after one ``delta`` (m): the first one starts at the tool tip ``tip`` with the
    tool pointing down at its current yaw; the lead over the tip is cut to `TIP_TARGET_LEAD_M`
    before ``delta`` is added; the result is clipped into ``bounds`` (lower, upper), m, if given."""
    if target is None:
        yaw = np.arctan2(rotation[1, 0], rotation[0, 0])
        target = TipTarget(tip.copy(), kinematics.pointing_down_rotation(yaw))
    lead = target.position - tip
    lead_norm = float(np.linalg.norm(lead))
    if lead_norm > TIP_TARGET_LEAD_M:
        lead *= TIP_TARGET_LEAD_M / lead_norm
    position = tip + lead + delta
    if bounds is not None:
        position = np.clip(position, bounds[0], bounds[1])
    return TipTarget(position, target.orientation)


def joint_velocity_toward(
    target: TipTarget, tip: np.ndarray, rotation: np.ndarray, jacobian: np.ndarray, time_to_go: float
) -> np.ndarray:
    """Joint velocities (7,), rad/s, that take the tool tip from (``tip``, ``rotation``) to
    ``target`` in ``time_to_go`` seconds (the orientation at rate `IK_ORIENTATION_GAIN`), by
    damped least squares on the tool tip's geometric ``jacobian`` (6, 7)."""
    twist = np.concatenate(
        [
            (target.position - tip) / time_to_go,
            IK_ORIENTATION_GAIN * kinematics.rotation_error(rotation, target.orientation),
        ]
    )
    return jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + IK_DAMPING**2 * np.eye(6), twist)
