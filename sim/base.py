"""What both simulated backends share: the control period, the two action spaces, state assembly.

A backend subclasses `SimPandaDriver` and implements the physics hooks (the abstract methods starting
with an underscore); everything the rest of the system sees
(`RobotDriver`'s methods) is implemented once, here, so the backends cannot drift apart.

Control (both backends): joint velocities are tracked by the backend's joint velocity servo.
``tip_delta`` actions (seed 003: Cartesian displacement per step, orientation held pointing down)
are turned into joint velocities by resolved-rate control with damped least squares on the tool
tip's Jacobian, re-solved several times per control period, towards a tool-tip target that
accumulates the commanded displacements (kept within `TIP_TARGET_LEAD_M` of the tool tip, so a
blocked arm does not wind up).
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from robot_drivers.base import DriverFault, FaultReason, RobotDriver
from robot_drivers.types import NUM_JOINTS, ActionSpace, Command, RobotState
from safety.kinematics import pointing_down_rotation, rotation_error
from sim.config import CameraConfig, SimConfig
from sim.scene import CUBE_START_POS, CUBE_START_QUAT, DEFAULT_HOME_Q, top_face_index

TIP_TARGET_LEAD_M = 0.02
"""Largest distance the internal tool-tip target may lead the actual tool tip, m."""
IK_DAMPING = 0.02
"""Damping of the least-squares inverse of the Jacobian (tip_delta control)."""
IK_ORIENTATION_GAIN = 5.0
"""Gain, 1/s, turning the orientation error (rad) into an angular velocity (tip_delta control)."""
IK_SOLVE_INTERVAL_S = 0.01
"""Time between two inverse-kinematics solves inside one control period, s."""
JOINT_SPEED_HARD_LIMIT = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
"""Franka's own maximum joint speeds, rad/s: the resolved-rate controller never asks for more."""


class SimPandaDriver(RobotDriver):
    """A simulated Panda in the seed-003 scene; subclasses provide the physics engine."""

    config_class = SimConfig
    """Options model; the collector validates a session's robot options with it before starting."""
    physics_timestep_s: float
    """Physics step, s; set by the subclass before `connect` returns."""

    def __init__(self, config: SimConfig | dict[str, Any] | None = None) -> None:
        if config is None:
            config = SimConfig()
        elif isinstance(config, dict):
            config = SimConfig(**config)
        self.config = config
        self.action_space = config.action_space
        self.control_rate_hz = config.control_rate_hz
        self.rng = np.random.default_rng(config.seed)
        self._connected = False
        self._time_s = 0.0
        self._tip_target: np.ndarray | None = None
        self._tip_orientation_target: np.ndarray | None = None

    # ---- RobotDriver -------------------------------------------------------------------------
    def connect(self) -> None:
        if self._connected:
            return
        self._build()
        self._connected = True
        self.reset(DEFAULT_HOME_Q)

    def read_state(self) -> RobotState:
        self._require_connected()
        q, dq = self._joint_state()
        cube_pos, cube_quat = self._cube_pose()
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(dq)) and np.all(np.isfinite(cube_pos))):
            raise DriverFault(FaultReason.simulation_unstable, "the simulation produced non-finite state")
        images = {camera.name: self._render(camera) for camera in self.config.cameras}
        return RobotState(
            time=self._time_s,
            q=q,
            dq=dq,
            tip_pos=self.tip_pose()[0],
            gripper_width=self._gripper_width(),
            images=images,
            privileged={
                "cube_pos": cube_pos,
                "cube_quat": cube_quat,
                "cube_top_face": np.array(top_face_index(cube_quat), dtype=np.int64),
            },
        )

    def send(self, command: Command) -> None:
        self._require_connected()
        if not isinstance(command, Command):
            raise DriverFault(FaultReason.invalid_command, f"expected a Command, got {type(command).__name__}")
        if command.kind is not self.action_space:
            raise DriverFault(
                FaultReason.invalid_command,
                f"this driver takes {self.action_space.value} commands, got {command.kind.value}",
            )
        if not np.all(np.isfinite(command.values)):
            raise DriverFault(FaultReason.invalid_command, f"non-finite command values {command.values}")
        if command.kind is ActionSpace.joint_velocity:
            self._advance_with_joint_velocity(command.values)
        else:
            self._advance_with_tip_delta(command.values)

    def stop(self) -> None:
        """Command zero joint velocity for up to one second of simulated time, until at rest."""
        self._require_connected()
        for _ in range(max(1, round(self.control_rate_hz))):
            self._advance_with_joint_velocity(np.zeros(NUM_JOINTS))
            if np.max(np.abs(self._joint_state()[1])) < 1e-3:
                break
        self._tip_target = None

    def reset(self, home: np.ndarray | None = None) -> RobotState:
        """Put the arm at ``home`` (rad) at rest and the cube at its start pose, instantly.

        In simulation the arm is teleported; the safe joint-space move that hardware needs is
        planned by ``safety/`` and executed by the collector through the safety filter.
        """
        self._require_connected()
        home = DEFAULT_HOME_Q if home is None else np.asarray(home, dtype=np.float64)
        if home.shape != (NUM_JOINTS,) or not np.all(np.isfinite(home)):
            raise DriverFault(FaultReason.reset_failed, f"home must be 7 finite joint angles, got {home!r}")
        self._reset_scene(home.copy(), CUBE_START_POS.copy(), CUBE_START_QUAT.copy())
        self._time_s = 0.0
        self._tip_target = None
        self._tip_orientation_target = None
        return self.read_state()

    def close(self) -> None:
        if self._connected:
            self._close()
        self._connected = False

    # ---- extras used by tests and tools -----------------------------------------------------
    def tip_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Tool-tip position (m) and orientation (3x3 rotation matrix), base frame."""
        self._require_connected()
        return self._tip_pose()

    def place_cube(self, position: np.ndarray, quat_wxyz: np.ndarray, settle_s: float = 0.5) -> None:
        """Teleport the cube to a pose (base frame), at rest, then let physics run ``settle_s``
        seconds with the arm holding still."""
        self._require_connected()
        self._set_cube_pose(np.asarray(position, float), np.asarray(quat_wxyz, float))
        for _ in range(round(settle_s * self.control_rate_hz)):
            self._advance_with_joint_velocity(np.zeros(NUM_JOINTS))

    def arm_contacts(self) -> list[tuple[str, str]]:
        """Contacts of the arm (links and hand) at this instant, as (arm part, other) pairs where
        other is another arm part (self-collision), ``"table"`` or ``"cube"``.  Used by the
        collector to report self and table collisions as safety events (simulation only)."""
        self._require_connected()
        return self._arm_contacts()

    # ---- control ----------------------------------------------------------------------------
    def _substeps_per_period(self) -> int:
        return max(1, round(self.control_period_s / self.physics_timestep_s))

    def _advance_with_joint_velocity(self, joint_velocity: np.ndarray) -> None:
        self._set_joint_velocity_target(np.asarray(joint_velocity, dtype=np.float64))
        n = self._substeps_per_period()
        self._step_physics(n)
        self._time_s += n * self.physics_timestep_s

    def _advance_with_tip_delta(self, delta: np.ndarray) -> None:
        tip, rotation = self._tip_pose()
        if self._tip_target is None:
            self._tip_target = tip.copy()
            yaw = np.arctan2(rotation[1, 0], rotation[0, 0])
            self._tip_orientation_target = pointing_down_rotation(yaw)
        lead = self._tip_target - tip
        lead_norm = np.linalg.norm(lead)
        if lead_norm > TIP_TARGET_LEAD_M:
            lead *= TIP_TARGET_LEAD_M / lead_norm
        self._tip_target = tip + lead + delta

        n_total = self._substeps_per_period()
        n_chunk = max(1, round(IK_SOLVE_INTERVAL_S / self.physics_timestep_s))
        done = 0
        while done < n_total:
            n = min(n_chunk, n_total - done)
            time_to_go = max((n_total - done) * self.physics_timestep_s, 2 * n * self.physics_timestep_s)
            tip, rotation = self._tip_pose()
            twist = np.concatenate(
                [
                    (self._tip_target - tip) / time_to_go,
                    IK_ORIENTATION_GAIN * rotation_error(rotation, self._tip_orientation_target),
                ]
            )
            jacobian = self._tip_jacobian()
            jjt = jacobian @ jacobian.T + IK_DAMPING**2 * np.eye(6)
            joint_velocity = jacobian.T @ np.linalg.solve(jjt, twist)
            scale = np.max(np.abs(joint_velocity) / JOINT_SPEED_HARD_LIMIT)
            if scale > 1.0:
                joint_velocity /= scale
            self._set_joint_velocity_target(joint_velocity)
            self._step_physics(n)
            done += n
        self._time_s += n_total * self.physics_timestep_s

    def _require_connected(self) -> None:
        if not self._connected:
            raise DriverFault(FaultReason.not_connected, f"{type(self).__name__} is not connected; call connect()")

    # ---- physics hooks, implemented by each backend -------------------------------------------
    @abc.abstractmethod
    def _build(self) -> None:
        """Build the scene (robot, table, cube, cameras) and set `physics_timestep_s`."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the physics engine and renderers."""

    @abc.abstractmethod
    def _joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Arm joint positions (rad) and velocities (rad/s), copies, shape (7,) each."""

    @abc.abstractmethod
    def _tip_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Tool-tip position (m) and rotation matrix in the base frame."""

    @abc.abstractmethod
    def _tip_jacobian(self) -> np.ndarray:
        """(6, 7) Jacobian of the tool tip, linear rows then angular rows, base frame."""

    @abc.abstractmethod
    def _gripper_width(self) -> float:
        """Opening between the fingers, m."""

    @abc.abstractmethod
    def _cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Cube centre position (m) and orientation (w, x, y, z), base frame."""

    @abc.abstractmethod
    def _set_cube_pose(self, position: np.ndarray, quat_wxyz: np.ndarray) -> None:
        """Teleport the cube to a pose, at rest."""

    @abc.abstractmethod
    def _set_joint_velocity_target(self, joint_velocity: np.ndarray) -> None:
        """Set the target of the joint velocity servo, rad/s (held over the following steps)."""

    @abc.abstractmethod
    def _step_physics(self, n: int) -> None:
        """Advance the physics by ``n`` steps of `physics_timestep_s`, gripper held closed."""

    @abc.abstractmethod
    def _arm_contacts(self) -> list[tuple[str, str]]:
        """See `arm_contacts`; finger-finger contact of the closed gripper is not reported."""

    @abc.abstractmethod
    def _render(self, camera: CameraConfig) -> np.ndarray:
        """RGB uint8 image (height, width, 3) of a configured camera, right way up."""

    @abc.abstractmethod
    def _reset_scene(self, home: np.ndarray, cube_pos: np.ndarray, cube_quat: np.ndarray) -> None:
        """Arm at ``home`` at rest, gripper closed, cube at the given pose at rest, servo target
        zero; all transient simulator state (contacts, warm starts) cleared, so that the same
        commands after a reset give the same states.  Must not rebuild the renderer."""
