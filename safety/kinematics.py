"""Forward kinematics and the tool-tip Jacobian of the Franka Emika Panda, vectorised over batches.

Parameters: Franka's published modified (Craig) Denavit-Hartenberg table for the Panda
(https://frankaemika.github.io/docs/control_parameters.html, "Denavit-Hartenberg parameters"):

=========  ========  =======  ========
frame      a (m)     d (m)    alpha
=========  ========  =======  ========
joint 1    0         0.333    0
joint 2    0         0        -pi/2
joint 3    0         0.316    pi/2
joint 4    0.0825    0        pi/2
joint 5    -0.0825   0.384    -pi/2
joint 6    0         0        pi/2
joint 7    0.088     0        pi/2
flange     0         0.107    0
=========  ========  =======  ========

Each frame is ``RotX(alpha) TransX(a) RotZ(q) TransZ(d)`` relative to the previous one. The Franka
hand sits on the flange rotated by -pi/4 about the flange z axis; the tool tip (Franka's default
TCP, between the fingertips) is `TOOL_TIP_OFFSET` = 0.1034 m further along that axis.  All
positions are in the robot base frame (origin at the base of link 0, x forward, z up), the frame
every driver reports in.

Everything here is pure numpy and accepts a single configuration ``(7,)`` or a batch ``(..., 7)``.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 7
"""The Panda's seven revolute arm joints."""

DH_A = np.array([0.0, 0.0, 0.0, 0.0825, -0.0825, 0.0, 0.088, 0.0])
"""Modified-DH link lengths a (m) for joints 1..7 and the flange."""
DH_D = np.array([0.333, 0.0, 0.316, 0.0, 0.384, 0.0, 0.0, 0.107])
"""Modified-DH link offsets d (m) for joints 1..7 and the flange (0.107 m to the flange)."""
DH_ALPHA = np.array([0.0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2, 0.0])
"""Modified-DH twists alpha (rad) for joints 1..7 and the flange."""
HAND_YAW = -np.pi / 4
"""Rotation of the Franka hand about the flange z axis, rad."""
TOOL_TIP_OFFSET = 0.1034
"""Distance from the flange to the tool tip along the flange z axis, m (Franka hand TCP)."""
HAND_HALF_WIDTH = 0.1
"""Half the width of the Franka hand along the fingers' opening direction, m."""
HAND_BODY_OFFSET = 0.06
"""Distance from the flange to the middle of the hand body along the flange z axis, m."""

BODY_POINT_NAMES: tuple[str, ...] = ("elbow", "forearm", "wrist", "flange", "hand", "hand_left", "hand_right", "tip")
"""Points of the arm checked against the table by the safety filter (see `body_points`):

- ``elbow``: origin of frame 4 (the elbow joint axis);
- ``forearm``: origin of frame 5 (the forearm's far end, where joint 5 meets joint 6's housing);
- ``wrist``: origin of frame 6/7 (the wrist, where joints 6 and 7 meet);
- ``flange``: the flange centre;
- ``hand``: the middle of the hand, halfway from the flange to the tool tip;
- ``hand_left`` / ``hand_right``: the two ends of the hand body, `HAND_HALF_WIDTH` either side of
  its axis along the fingers' opening direction, `HAND_BODY_OFFSET` past the flange (the hand is
  about 0.2 m wide: tilted sideways, its ends are lower than the tool tip);
- ``tip``: the tool tip.
"""


def _dh_transforms(q: np.ndarray) -> np.ndarray:
    """Local transforms of frames 1..7 and the flange for joint angles ``q`` (..., 7) -> (..., 8, 4, 4)."""
    q = np.asarray(q, dtype=np.float64)
    theta = np.concatenate([q, np.zeros(q.shape[:-1] + (1,))], axis=-1)
    ct, st = np.cos(theta), np.sin(theta)
    ca, sa = np.cos(DH_ALPHA), np.sin(DH_ALPHA)
    out = np.zeros(q.shape[:-1] + (8, 4, 4))
    # RotX(alpha) TransX(a) RotZ(theta) TransZ(d)
    out[..., 0, 0] = ct
    out[..., 0, 1] = -st
    out[..., 0, 3] = DH_A
    out[..., 1, 0] = st * ca
    out[..., 1, 1] = ct * ca
    out[..., 1, 2] = -sa
    out[..., 1, 3] = -sa * DH_D
    out[..., 2, 0] = st * sa
    out[..., 2, 1] = ct * sa
    out[..., 2, 2] = ca
    out[..., 2, 3] = ca * DH_D
    out[..., 3, 3] = 1.0
    return out


def frames(q: np.ndarray) -> np.ndarray:
    """Base-frame poses of frames 1..7, the flange and the tool tip: (..., 9, 4, 4).

    Index 0..6 are the joint frames (their z axis is the joint axis, their origin on it), 7 the
    flange, 8 the tool tip (hand yaw and TCP offset applied).
    """
    local = _dh_transforms(q)
    out = np.empty(local.shape[:-3] + (9, 4, 4))
    current = local[..., 0, :, :]
    out[..., 0, :, :] = current
    for i in range(1, 8):
        current = current @ local[..., i, :, :]
        out[..., i, :, :] = current
    c, s = np.cos(HAND_YAW), np.sin(HAND_YAW)
    tcp = np.array([[c, -s, 0.0, 0.0], [s, c, 0.0, 0.0], [0.0, 0.0, 1.0, TOOL_TIP_OFFSET], [0.0, 0.0, 0.0, 1.0]])
    out[..., 8, :, :] = current @ tcp
    return out


def tip_pose(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tool-tip position (..., 3) in m and orientation (..., 3, 3) in the base frame."""
    pose = frames(q)[..., 8, :, :]
    return pose[..., :3, 3], pose[..., :3, :3]


def tip_position(q: np.ndarray) -> np.ndarray:
    """Tool-tip position (..., 3), m, base frame."""
    return frames(q)[..., 8, :3, 3]


def body_points_from_frames(f: np.ndarray) -> np.ndarray:
    """The `BODY_POINT_NAMES` points (..., 8, 3) from the output of `frames`."""
    flange = f[..., 7, :3, 3]
    tip = f[..., 8, :3, 3]
    body = flange + HAND_BODY_OFFSET * f[..., 8, :3, 2]
    side = HAND_HALF_WIDTH * f[..., 8, :3, 1]
    arm = [f[..., 3, :3, 3], f[..., 4, :3, 3], f[..., 6, :3, 3], flange]
    return np.stack([*arm, 0.5 * (flange + tip), body + side, body - side, tip], axis=-2)


def body_points(q: np.ndarray) -> np.ndarray:
    """Positions (..., 8, 3), m, of the points named in `BODY_POINT_NAMES`, base frame."""
    return body_points_from_frames(frames(q))


def jacobian_from_frames(f: np.ndarray) -> np.ndarray:
    """Geometric Jacobian (..., 6, 7) of the tool tip from the output of `frames`: linear rows
    (m/rad) then angular rows (rad/rad), base frame.  Column i is z_i x (p_tip - o_i) over z_i."""
    z = f[..., :7, :3, 2]
    origins = f[..., :7, :3, 3]
    tip = f[..., 8, :3, 3]
    linear = np.cross(z, tip[..., None, :] - origins)
    return np.concatenate([np.swapaxes(linear, -1, -2), np.swapaxes(z, -1, -2)], axis=-2)


def tip_jacobian(q: np.ndarray) -> np.ndarray:
    """Geometric Jacobian (..., 6, 7) of the tool tip (linear rows, then angular rows)."""
    return jacobian_from_frames(frames(q))


def tip_position_jacobian(q: np.ndarray) -> np.ndarray:
    """The 3x7 position Jacobian of the tool tip, d tip_pos / d q, m/rad: (..., 3, 7)."""
    return tip_jacobian(q)[..., :3, :]


def rotation_error(current: np.ndarray, desired: np.ndarray) -> np.ndarray:
    """Rotation vector (rad, base frame) that turns rotation matrix ``current`` into ``desired``:
    the axis-angle of ``R = desired @ current.T``.

    The axis comes from the antisymmetric part of R (``2 sin(angle) axis``) while that is well
    conditioned; within 0.01 rad of half a turn it vanishes, and the axis is taken from the
    symmetric part ``(R + R^T) / 2 - cos(angle) I = (1 - cos(angle)) axis axis^T`` (its column of
    largest diagonal, signed to agree with the antisymmetric part).  Checked against scipy's
    `Rotation.as_rotvec` in tests/safety/test_kinematics.py; written out because scipy's costs
    about 90 us a call here (orthogonalising the matrix) against about 10 us, in the filter's and
    the simulators' every-step path."""
    relative = desired @ current.T
    cos_angle = min(max((relative[0, 0] + relative[1, 1] + relative[2, 2] - 1.0) / 2.0, -1.0), 1.0)
    angle = np.arccos(cos_angle)
    twice_sin_axis = np.array(
        [relative[2, 1] - relative[1, 2], relative[0, 2] - relative[2, 0], relative[1, 0] - relative[0, 1]]
    )
    if angle < 1e-9:
        return 0.5 * twice_sin_axis
    if angle < np.pi - 1e-2:
        return angle * twice_sin_axis / (2.0 * np.sin(angle))
    symmetric = 0.5 * (relative + relative.T) - cos_angle * np.eye(3)
    k = int(np.argmax(np.diag(symmetric)))
    axis = symmetric[:, k] / np.sqrt(max(symmetric[k, k], 1e-300) * (1.0 - cos_angle))
    axis /= np.linalg.norm(axis)
    if float(axis @ twice_sin_axis) < 0.0:
        axis = -axis
    return angle * axis


def pointing_down_rotation(yaw: float) -> np.ndarray:
    """Tool orientation with its z axis pointing straight down and the given yaw about z (rad)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])
