"""The bridge's ``ros2`` arm: a Franka (FR3 or Panda) run by franka_ros2 + ros2_control on the robot PC.

What the robot PC loads (``launch/franka_ros2_fr3.launch.py``): franka_ros2's bringup, a ros2_controllers
``velocity_controllers/JointGroupVelocityController`` (``joint_velocity_controller``, the ``controller``
option) over the seven arm joints,
and rmw_cyclonedds as the middleware.  This arm talks to that graph over Cyclone DDS on ROS 2's wire
conventions (`robot_drivers.bridge.ros2_wire`; no rclpy needed):

- **State**: ``sensor_msgs/JointState`` from ``joint_states_topic``.  Joints are found **by name**
  (``joint_names``: ``fr3_joint1..7`` or ``panda_joint1..7`` by default, with any prefix a namespaced
  bringup adds), never by their order in the message, which merges other joints (the fingers).  The
  gripper width is the sum of the two finger joints when the message carries them.
- **Commands**: ``std_msgs/Float64MultiArray`` on ``/<controller>/commands``, one velocity per joint
  in ``joint_names`` order (the controller's ``joints`` parameter must list the same names in the
  same order: tests/bridge/test_launch_files.py checks the shipped YAML).  The controller applies each
  message as it comes and holds it, so this arm shapes the motion itself: every velocity target
  becomes a time-optimal jerk-limited velocity profile (Ruckig, velocity interface) within the
  server's operating accelerations and jerks, sampled and published every ``1 / publish_rate_hz``
  s at the wall time of the tick (a late tick publishes where the profile is by then, never a burst).
- **Faults** (one line each, `fault`):
  - the JointState stream stops (no valid message for ``state_timeout_ms``): ``connection_lost``.
    The arm stops commanding: the published velocity ramps to zero within the limits, zero is
    published ``ZERO_MESSAGES`` times, then nothing.  Cleared by `recover` once the stream is back.
  - the arm does not follow the commands (measured and commanded velocity differ by more than
    ``tracking_tolerance`` for ``tracking_window_ms``: a reflex, or the controller is not active):
    ``robot_error``.  `recover` calls franka_ros2's ``ErrorRecovery`` action through rclpy where
    rclpy and franka_msgs import (the robot PC); otherwise the fault message names the exact
    ``ros2 action send_goal`` command for the operator, and `recover` clears the latch on trust:
    the tracking check catches a robot still stopped within one window of the next motion.

**Safety notes.**  The robot-side filter and watchdog of the bridge apply unchanged (the server's).
A JointGroupVelocityController has no command timeout: if the bridge process itself dies (kill -9,
power) the controller keeps the last velocity until the robot's own limits stop it.  Run the bridge on
the robot PC, under systemd (``launch/pandalab-bridge.service``), so that no network sits between it
and the controller, and keep libfranka's / Desk's limits and the external enabling device in reach.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from robot_drivers.base import DriverFault, FaultReason
from robot_drivers.bridge.arm import Arm
from robot_drivers.bridge.ros2_wire import CycloneOptions, check_ros_topic
from robot_drivers.types import NUM_JOINTS, RobotState
from safety import kinematics
from safety.strict_model import StrictModel

ZERO_MESSAGES = 10
"""Zero-velocity messages published after a stop the stream's loss forced, before publishing stops."""
HEARTBEAT_S = 0.1
"""With the arm commanded to rest, the zero command is repeated this often, s (not every tick)."""
RECOVERY_COMMAND = "ros2 action send_goal {action} franka_msgs/action/ErrorRecovery {{}}"
"""What the operator runs on the robot PC to clear a reflex when rclpy is not importable here."""
DEFAULT_CONTROLLER = "joint_velocity_controller"
"""The JointGroupVelocityController's name in launch/franka_ros2_controllers_{fr3,panda}.yaml."""


class Ros2Options(StrictModel):
    """Options of the ``ros2`` arm (a bridge config's ``options``)."""

    dds: CycloneOptions = Field(
        CycloneOptions(), description="How to join the ROS 2 graph (domain id, interface, peers): Cyclone DDS."
    )
    joint_states_topic: str = Field(
        "/franka/joint_states",
        description="The sensor_msgs/JointState topic to read: franka_ros2's own (the arm's joints at the controller "
        "rate, 1 kHz); /joint_states is a merge with the gripper's at 30 Hz by default.",
    )
    controller: str = Field(
        DEFAULT_CONTROLLER,
        description="Name of the JointGroupVelocityController on the robot PC; commands go to /<controller>/commands.",
    )
    joint_names: tuple[str, ...] | None = Field(
        None,
        description="The seven arm joints, in the controller's `joints` order; None: <robot_model>_joint1..7 "
        "(fr3_joint1..7, panda_joint1..7).",
    )
    finger_joint_names: tuple[str, str] | None = Field(
        None,
        description="The gripper's two finger joints (width = their sum, m); None: <robot_model>_finger_joint1/2.",
    )
    publish_rate_hz: float = Field(
        1000.0, ge=100.0, le=2000.0, description="How often the velocity profile is sampled and published, Hz."
    )
    state_timeout_ms: float = Field(
        100.0, ge=5.0, le=2000.0, description="No valid JointState for this long, ms, is a fault (connection_lost)."
    )
    tracking_tolerance: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="Largest difference between a joint's measured and commanded velocity, rad/s, tolerated for "
        "tracking_window_ms.",
    )
    tracking_window_ms: float = Field(
        200.0, ge=20.0, le=2000.0, description="How long the tracking difference may last before a fault, ms."
    )
    connect_timeout_s: float = Field(
        10.0, gt=0.0, le=120.0, description="Longest wait at connect for joint states and the controller, s."
    )
    error_recovery_action: str = Field(
        "/action_server/error_recovery", description="franka_ros2's ErrorRecovery action (franka_msgs)."
    )
    recovery_timeout_s: float = Field(5.0, gt=0.0, le=60.0, description="Longest an ErrorRecovery call may take, s.")

    @field_validator("joint_states_topic", "error_recovery_action")
    @classmethod
    def _topic(cls, topic: str) -> str:
        return check_ros_topic(topic)

    @field_validator("controller")
    @classmethod
    def _controller(cls, name: str) -> str:
        return check_ros_topic(name).lstrip("/")

    @field_validator("joint_names")
    @classmethod
    def _seven(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is not None and (len(names) != NUM_JOINTS or len(set(names)) != NUM_JOINTS or not all(names)):
            raise ValueError(f"needs {NUM_JOINTS} distinct, non-empty names, got {list(names)}")
        return names

    @model_validator(mode="after")
    def _dds_config(self) -> Ros2Options:
        self.dds.xml()  # a config_file that cannot be read, or one combined with other settings
        return self

    @property
    def commands_topic(self) -> str:
        return f"/{self.controller}/commands"


class Ros2Arm(Arm):
    """A franka_ros2 arm over Cyclone DDS (see the module docstring)."""

    options_class = Ros2Options
    simulated = False

    def __init__(self, options: dict[str, Any] | None = None, *, robot_model: str = "fr3", limits: Any = None) -> None:
        from safety.limits import SafetyLimits
        from safety.robot_model import limits_fields

        self.options = Ros2Options(**(options or {}))
        self.robot_model = robot_model
        self.limits = limits if limits is not None else SafetyLimits(**limits_fields(robot_model, {}))
        self.joint_names = self.options.joint_names or tuple(f"{robot_model}_joint{i}" for i in range(1, 8))
        self.finger_names = self.options.finger_joint_names or (
            f"{robot_model}_finger_joint1",
            f"{robot_model}_finger_joint2",
        )
        self.tick_s = 1.0 / self.options.publish_rate_hz
        self._graph: Any = None
        self._reader: Any = None
        self._writer: Any = None
        self._started = time.monotonic()
        self._q = np.full(NUM_JOINTS, np.nan)
        self._dq = np.zeros(NUM_JOINTS)
        self._gripper_width = float("nan")
        self._state_at = -np.inf
        """When the newest valid JointState arrived (monotonic), s."""
        self.malformed_states = 0
        self._fault: str | None = None
        self._fault_reason = FaultReason.robot_error
        self._profile = _VelocityProfile(self.limits.accelerations, self.limits.jerks)
        self._published_at = -np.inf
        self._zeros_left = 0
        """Zero messages still to publish after a forced stop (then publishing stops)."""
        self._silent = False
        """Publishing stopped: the stream was lost and the stop has been published."""
        self._tracking_since: float | None = None

    # ---- connection ---------------------------------------------------------------------------
    def connect(self) -> None:
        from robot_drivers.bridge.ros2_wire import Float64MultiArray, JointState, Ros2Graph

        options = self.options
        try:
            self._graph = Ros2Graph(options.dds)
            self._reader = self._graph.reader(options.joint_states_topic, JointState)
            self._writer = self._graph.writer(options.commands_topic, Float64MultiArray)
        except Exception as error:  # a Cyclone configuration the library refuses, an interface that is not there
            self.close()
            raise DriverFault(
                FaultReason.not_connected, f"cannot join ROS 2 domain {options.dds.domain_id} over Cyclone DDS: {error}"
            ) from None
        deadline = time.monotonic() + options.connect_timeout_s
        while time.monotonic() < deadline and not np.isfinite(self._state_at):
            self._read_joint_states(time.monotonic())
            time.sleep(0.005)
        if not np.isfinite(self._state_at):
            self.close()
            raise DriverFault(
                FaultReason.not_connected,
                f"no sensor_msgs/JointState with joints {', '.join(self.joint_names)} on {options.joint_states_topic} "
                f"(ROS domain {options.dds.domain_id}) within {options.connect_timeout_s:g} s: is franka_ros2 running "
                "with RMW_IMPLEMENTATION=rmw_cyclonedds_cpp, and do the joint names match?",
            )
        while time.monotonic() < deadline and not self._controller_listening():
            time.sleep(0.01)
        if not self._controller_listening():
            self.close()
            raise DriverFault(
                FaultReason.not_connected,
                f"nothing subscribes to {options.commands_topic} within {options.connect_timeout_s:g} s: load and "
                f"activate the JointGroupVelocityController {options.controller!r} on the robot PC "
                "(launch/franka_ros2_fr3.launch.py does)",
            )
        self._started = time.monotonic()

    def _controller_listening(self) -> bool:
        try:
            return self._writer.get_publication_matched_status().current_count > 0
        except Exception:
            return False

    def describe(self) -> dict[str, Any]:
        return {
            "arm": f"Franka {self.robot_model.upper()} through franka_ros2 (ROS 2 over Cyclone DDS, "
            f"domain {self.options.dds.domain_id})",
            "cameras": [],
            "joint_states_topic": self.options.joint_states_topic,
            "commands_topic": self.options.commands_topic,
            "joint_names": list(self.joint_names),
            "error_recovery": "rclpy" if _rclpy_recovery_available() else "operator",
        }

    # ---- the loop -----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if self._graph is None:
            raise DriverFault(FaultReason.not_connected, "the ros2 arm is not connected")
        self._read_joint_states(now)
        age = now - self._state_at
        if age > self.options.state_timeout_ms / 1000.0 and self._fault_reason_is_not(FaultReason.connection_lost):
            self._latch(
                FaultReason.connection_lost,
                f"no joint state on {self.options.joint_states_topic} for {1000 * age:.0f} ms "
                f"(limit {self.options.state_timeout_ms:g} ms): franka_ros2 stopped or the DDS link broke; "
                "commands ramp to zero, then stop",
            )
            self._zeros_left = ZERO_MESSAGES
        if self._fault is None:
            self._check_tracking(now)
        self._publish(now)

    def _fault_reason_is_not(self, reason: FaultReason) -> bool:
        return self._fault is None or self._fault_reason is not reason

    def _latch(self, reason: FaultReason, message: str) -> None:
        self._fault, self._fault_reason = message, reason
        self._profile.retarget(np.zeros(NUM_JOINTS), time.monotonic())
        self._tracking_since = None

    def _read_joint_states(self, now: float) -> None:
        from robot_drivers.bridge.ros2_wire import newest_valid

        try:
            sample = newest_valid(self._reader)
        except Exception:  # a sample Cyclone cannot deserialise: not data
            self.malformed_states += 1
            return
        if sample is None:
            return
        position = dict(zip(sample.name, sample.position, strict=False))
        velocity = dict(zip(sample.name, sample.velocity, strict=False))
        try:
            q = np.array([position[name] for name in self.joint_names], dtype=np.float64)
            dq = np.array([velocity[name] for name in self.joint_names], dtype=np.float64)
        except KeyError:  # not the arm's joints (or velocities missing): not a state of this arm
            self.malformed_states += 1
            return
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(dq))):
            self.malformed_states += 1
            return
        self._q, self._dq, self._state_at = q, dq, now
        fingers = [position.get(name) for name in self.finger_names]
        if all(f is not None and np.isfinite(f) for f in fingers):
            self._gripper_width = float(sum(fingers))

    def _check_tracking(self, now: float) -> None:
        commanded = self._profile.velocity(now - self.tick_s)  # what the robot had time to receive
        off = float(np.max(np.abs(self._dq - commanded)))
        if off <= self.options.tracking_tolerance:
            self._tracking_since = None
            return
        if self._tracking_since is None:
            self._tracking_since = now
        elif now - self._tracking_since > self.options.tracking_window_ms / 1000.0:
            joint = int(np.argmax(np.abs(self._dq - commanded)))
            how = (
                "call it through rclpy at the next stop"
                if _rclpy_recovery_available()
                else "on the robot PC run: " + RECOVERY_COMMAND.format(action=self.options.error_recovery_action)
            )
            self._latch(
                FaultReason.robot_error,
                f"the arm does not follow the commanded velocities ({self.joint_names[joint]}: measured "
                f"{self._dq[joint]:+.3f}, commanded {commanded[joint]:+.3f} rad/s for more than "
                f"{self.options.tracking_window_ms:g} ms): a reflex or an inactive controller; error recovery: {how}",
            )

    def _publish(self, now: float) -> None:
        from robot_drivers.bridge.ros2_wire import Float64MultiArray

        if self._silent:
            return
        velocity = self._profile.velocity(now)
        at_rest = self._profile.at_rest(now)
        if self._fault_reason is FaultReason.connection_lost and self._fault is not None and at_rest:
            if self._zeros_left <= 0:
                self._silent = True
                return
            self._zeros_left -= 1
        elif at_rest and now - self._published_at < HEARTBEAT_S:
            return
        try:
            self._writer.write(Float64MultiArray(data=velocity.tolist()))
        except Exception as error:
            raise DriverFault(
                FaultReason.connection_lost, f"cannot publish on {self.options.commands_topic}: {error}"
            ) from None
        self._published_at = now

    # ---- the Arm interface ----------------------------------------------------------------------
    def link_alive(self) -> bool:
        return time.monotonic() - self._state_at <= self.options.state_timeout_ms / 1000.0

    def state(self, images: bool = False) -> RobotState:
        q = self._q if np.all(np.isfinite(self._q)) else np.zeros(NUM_JOINTS)
        return RobotState(
            time=time.monotonic() - self._started,
            q=q.copy(),
            dq=self._dq.copy(),
            tip_pos=kinematics.tip_position(q),
            gripper_width=self._gripper_width,
            images={},
            privileged={},
        )

    def set_velocity_target(self, joint_velocity: np.ndarray) -> None:
        target = np.array(joint_velocity, dtype=np.float64).reshape(NUM_JOINTS)
        if self._fault is not None or not np.all(np.isfinite(target)):  # (the server refuses non-finite ones)
            target = np.zeros(NUM_JOINTS)  # stopped by a fault: nothing moves before `recover`
        self._profile.retarget(target, time.monotonic())

    def fault(self) -> str | None:
        return self._fault

    def fault_reason(self) -> str:
        return self._fault_reason.value

    def recover(self) -> None:
        if self._fault is None:
            return
        now = time.monotonic()
        self._read_joint_states(now)
        if self._fault_reason is FaultReason.connection_lost:
            if now - self._state_at > self.options.state_timeout_ms / 1000.0:
                raise DriverFault(FaultReason.connection_lost, f"{self._fault}; still no joint states")
        elif _rclpy_recovery_available():
            _recover_through_rclpy(self.options.error_recovery_action, self.options.recovery_timeout_s)
        self._fault = None
        self._silent = False
        self._zeros_left = 0
        self._tracking_since = None
        self._profile.reset(now)

    def reset(self, home: np.ndarray) -> None:
        self._read_joint_states(time.monotonic())
        off = float(np.max(np.abs(self.state().q - np.asarray(home))))
        if off > 0.05:
            raise DriverFault(
                FaultReason.reset_failed,
                f"the arm stands {off:.3f} rad from home; the collector's planned reset brings it there first",
            )

    def close(self) -> None:
        writer = self._writer
        if writer is not None and not self._silent:
            with contextlib.suppress(Exception):
                if not self._profile.at_rest(time.monotonic()):
                    writer.write(_zero_command())  # last resort: the server ramps to rest before closing
        self._reader = self._writer = None
        if self._graph is not None:
            with contextlib.suppress(Exception):
                self._graph.close()
        self._graph = None


def _zero_command() -> Any:
    from robot_drivers.bridge.ros2_wire import Float64MultiArray

    return Float64MultiArray(data=[0.0] * NUM_JOINTS)


class _VelocityProfile:
    """The commanded joint velocities over wall time: from the velocity and acceleration where the last
    profile is at the moment a new target comes, a time-optimal jerk-limited profile to the target
    (Ruckig's velocity interface; Berscheid & Kroeger 2021), within per-joint acceleration (rad/s^2) and
    jerk (rad/s^3) limits, all joints arriving together; the target is held after it."""

    def __init__(self, accelerations: np.ndarray, jerks: np.ndarray) -> None:
        from ruckig import ControlInterface, InputParameter, Ruckig, Trajectory

        self._ruckig = Ruckig(NUM_JOINTS)
        self._input = InputParameter(NUM_JOINTS)
        self._input.control_interface = ControlInterface.Velocity
        self._input.max_acceleration = [float(a) for a in accelerations]
        self._input.max_jerk = [float(j) for j in jerks]
        self._input.max_velocity = [1e3] * NUM_JOINTS  # unused by the velocity interface; the filter caps speeds
        self._trajectory = Trajectory(NUM_JOINTS)
        self._started_at: float | None = None
        self._target = np.zeros(NUM_JOINTS)

    def _sample(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        if self._started_at is None:
            return np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS)
        elapsed = now - self._started_at
        if elapsed >= self._trajectory.duration:  # arrived: exactly the target (the profile ends ~1e-15 off)
            return self._target.copy(), np.zeros(NUM_JOINTS)
        _, velocity, acceleration = self._trajectory.at_time(max(0.0, elapsed))
        return np.array(velocity), np.array(acceleration)

    def velocity(self, now: float) -> np.ndarray:
        return self._sample(now)[0]

    def at_rest(self, now: float) -> bool:
        velocity, acceleration = self._sample(now)
        return not np.any(self._target) and not np.any(velocity) and not np.any(acceleration)

    def retarget(self, target: np.ndarray, now: float) -> None:
        from ruckig import Result

        velocity, acceleration = self._sample(now)
        if np.array_equal(target, self._target) and self._started_at is not None:
            return
        self._input.current_position = [0.0] * NUM_JOINTS
        self._input.current_velocity = velocity.tolist()
        self._input.current_acceleration = acceleration.tolist()
        self._input.target_velocity = target.tolist()
        self._input.target_acceleration = [0.0] * NUM_JOINTS
        result = self._ruckig.calculate(self._input, self._trajectory)
        if result not in (Result.Working, Result.Finished):
            raise DriverFault(FaultReason.invalid_command, f"no jerk-limited velocity profile to {target}: {result}")
        self._started_at, self._target = now, target.copy()

    def reset(self, now: float) -> None:
        """Start from rest (after a fault: the robot stopped by itself)."""
        self._started_at, self._target = None, np.zeros(NUM_JOINTS)


def _rclpy_recovery_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rclpy") is not None and importlib.util.find_spec("franka_msgs") is not None


def _recover_through_rclpy(action: str, timeout_s: float) -> None:
    """Call franka_ros2's ErrorRecovery action (robot PC, rclpy and franka_msgs importable).
    Not run on our machines (rclpy is not installable here): written to rclpy's action client API."""
    import rclpy
    from franka_msgs.action import ErrorRecovery
    from rclpy.action import ActionClient

    if not rclpy.ok():
        rclpy.init()
    node = rclpy.create_node("pandalab_bridge_error_recovery")
    try:
        client = ActionClient(node, ErrorRecovery, action)
        if not client.wait_for_server(timeout_sec=timeout_s):
            raise DriverFault(FaultReason.robot_error, f"no ErrorRecovery action server at {action}")
        goal = client.send_goal_async(ErrorRecovery.Goal())
        rclpy.spin_until_future_complete(node, goal, timeout_sec=timeout_s)
        handle = goal.result()
        if handle is None or not handle.accepted:
            raise DriverFault(FaultReason.robot_error, f"{action} refused the error recovery")
        result = handle.get_result_async()
        rclpy.spin_until_future_complete(node, result, timeout_sec=timeout_s)
        if result.result() is None:
            raise DriverFault(FaultReason.robot_error, f"{action} did not finish within {timeout_s:g} s")
    finally:
        node.destroy_node()
