"""Data types shared by every robot backend: what a driver reports and what it is sent.

DESIGN.md, "Interfaces": a `Command` is joint velocities (7, rad/s) or a tool-tip displacement
(3, m per control step), tagged with its kind; a `RobotState` is a time stamp, joint positions and
velocities, the tool-tip position, the gripper opening, camera images by name and, in simulation
only, `privileged` state (cube pose and top face) that is logged but never shown to an explorer.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

NUM_JOINTS = 7
"""The Panda has seven revolute arm joints."""


class ActionSpace(enum.StrEnum):
    """How an action is interpreted.

    - ``joint_velocity``: 7 joint velocities in rad/s (seed 001's protocol).
    - ``tip_delta``: tool-tip displacement (x, y, z) in metres per control step, orientation held
      pointing down, gripper closed (seed 003's protocol).
    """

    joint_velocity = "joint_velocity"
    tip_delta = "tip_delta"

    @property
    def dim(self) -> int:
        """Number of values in an action of this kind."""
        return NUM_JOINTS if self is ActionSpace.joint_velocity else 3


@dataclasses.dataclass(frozen=True)
class Command:
    """One command for the driver, tagged with its action space.

    ``values`` is float64: joint velocities in rad/s (7) for ``joint_velocity``; tool-tip
    displacement in metres for this control step (3) for ``tip_delta``.
    """

    kind: ActionSpace
    values: np.ndarray

    def __post_init__(self) -> None:
        kind = ActionSpace(self.kind)
        values = np.array(self.values, dtype=np.float64).reshape(-1)
        if values.shape != (kind.dim,):
            raise ValueError(
                f"Command of kind {kind.value!r} needs {kind.dim} values, got shape {np.shape(self.values)}"
            )
        values.setflags(write=False)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "values", values)

    @classmethod
    def stop(cls, kind: ActionSpace = ActionSpace.joint_velocity) -> Command:
        """The command that holds the arm still: zero velocity or zero displacement."""
        return cls(ActionSpace(kind), np.zeros(ActionSpace(kind).dim))

    @property
    def is_stop(self) -> bool:
        return not np.any(self.values)


@dataclasses.dataclass
class RobotState:
    """What the driver reads from the arm at one instant.

    All positions are in the robot base frame (origin at the base of link 0, x forward, z up), so
    logged data from different backends (and hardware) share one frame.

    Attributes:
        time: seconds since the driver connected (simulated time in simulation).
        q: joint positions, rad, shape (7,).
        dq: joint velocities, rad/s, shape (7,).
        tip_pos: tool-tip position (the point between the fingertips, Franka's default TCP 0.1034 m
            past the flange), m, shape (3,), by forward kinematics.
        gripper_width: opening between the fingers, m.
        images: camera name -> uint8 array (height, width, 3), RGB, right way up.
        image_ages_s: camera name -> the age of its image when the state was read, s: how long
            before the read its frame was captured (a real cell's cameras run at their own rate;
            robot_drivers/cameras); 0 for a simulator's cameras (rendered on demand).  Empty when
            the state carries no images, or comes from a bridge that does not report ages.
        privileged: simulation-only ground truth, logged but never fed to an explorer:
            ``cube_pos`` (3,) m, ``cube_quat`` (4,) (w, x, y, z), ``cube_top_face`` () int index
            into ``sim.scene.CUBE_FACE_COLOURS``.  Empty on hardware.
    """

    time: float
    q: np.ndarray
    dq: np.ndarray
    tip_pos: np.ndarray
    gripper_width: float = 0.0
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    image_ages_s: dict[str, float] = dataclasses.field(default_factory=dict)
    privileged: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
