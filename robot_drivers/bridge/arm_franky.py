"""The bridge's ``franky`` arm: a real Franka (FR3, or a Panda with a libfranka < 0.10 build)
through franky (PyPI ``franky-control``, libfranka inside).

- **Motion**: each velocity target becomes a franky ``JointVelocityMotion``, started asynchronously;
  it replaces the running one seamlessly.  franky plans every motion with Ruckig at 1 kHz within the
  robot's velocity, acceleration and jerk limits scaled by ``relative_dynamics_factor``, so a new
  target, a stop included, is never a step (libfranka's discontinuity reflexes).
- **Reflexes and errors**: a ``ControlException`` from the running motion (a collision reflex, a
  limit the robot refused) is latched as the arm's fault; `recover` calls
  ``recover_from_errors()`` up to ``recovery_attempts`` times.
- **Collision behaviour** from the options (`CollisionReflexConfig`: libfranka's example thresholds
  by default; polymetis uses 40 N m / 40 N), set at connect.
- **Connecting never hangs**: libfranka blocks without limit on an address that accepts and never
  answers, so a child process tries the connection first, killed after ``connect_timeout_s``.
- The gripper is closed at connect and held (``gripper: true``).
- Real time: ``realtime: true`` needs a real-time kernel (libfranka's ``RealtimeConfig.Enforce``);
  ``false`` only where the kernel has none (franky-sim, tests).

franky and pylibfranka cannot be imported in one process (a duplicate pybind11 type): this module
imports franky only when an arm connects.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from typing import Any

import numpy as np
from pydantic import Field

from robot_drivers.base import DriverFault, FaultReason
from robot_drivers.bridge.arm import Arm
from robot_drivers.collision_reflex import CollisionReflexConfig
from robot_drivers.types import NUM_JOINTS, RobotState
from safety import kinematics
from safety.strict_model import StrictModel

MOTION_HOLD_MS = 200
"""How long franky holds a velocity target after reaching it, ms: longer than a command period (the
next command replaces the motion), and short, so that if the bridge's own loop stalled (its
watchdog stalled with it) franky still ends the motion itself soon after."""
PROBE = """
import sys, franky
franky.Robot(sys.argv[1], realtime_config=franky.RealtimeConfig.Ignore)
if sys.argv[2] == "1":
    franky.Gripper(sys.argv[1])
"""


class FrankyOptions(StrictModel):
    """Options of the ``franky`` arm (a bridge config's ``options``)."""

    hostname: str = Field(
        description="The robot's FCI address (the Franka controller's IP, or 127.0.0.1 for franky-sim)."
    )
    realtime: bool = Field(
        True,
        description="Require a real-time kernel (libfranka's RealtimeConfig.Enforce); false only for a kernel "
        "without one (franky-sim, tests).",
    )
    relative_dynamics_factor: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Fraction of the robot's velocity, acceleration and jerk limits franky's "
        "motions use (stops included).",
    )
    collision_reflex: CollisionReflexConfig = Field(
        CollisionReflexConfig(), description="Collision behaviour thresholds set at connect (setCollisionBehavior)."
    )
    recovery_attempts: int = Field(3, ge=1, le=10, description="recover_from_errors() tries after a reflex.")
    connect_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=60.0,
        description="Longest a connection attempt may take, s (a child process's start, about 1 s, included).",
    )
    gripper: bool = Field(True, description="Close the gripper at connect and read its opening.")


class FrankyArm(Arm):
    """A Franka through franky."""

    options_class = FrankyOptions
    tick_s = 0.005

    def __init__(self, options: dict[str, Any] | None = None, *, robot_model: str = "fr3", limits: Any = None) -> None:
        self.options = FrankyOptions(**(options or {}))
        self._robot: Any = None
        self._gripper: Any = None
        self._gripper_width = float("nan")
        """The opening read at connect, m: the gripper is held closed (a read is a network request the
        bridge's loop must not wait for)."""
        self._fault: str | None = None
        self._target = np.zeros(NUM_JOINTS)
        self._moving = False
        self._started = time.monotonic()
        self._versions: dict[str, str] = {}

    # ---- connection -------------------------------------------------------------------------------
    def connect(self) -> None:
        hostname = self.options.hostname
        self._probe(hostname)
        import franky

        realtime = franky.RealtimeConfig.Enforce if self.options.realtime else franky.RealtimeConfig.Ignore
        try:
            self._robot = franky.Robot(hostname, realtime_config=realtime)
            self._robot.relative_dynamics_factor = self.options.relative_dynamics_factor
            reflex = self.options.collision_reflex
            self._robot.set_collision_behavior(
                list(reflex.joint_torque_thresholds_nm), list(reflex.tool_wrench_thresholds)
            )
            if self._robot.has_errors:
                self._robot.recover_from_errors()
            if self.options.gripper:
                self._gripper = franky.Gripper(hostname)
                self._gripper.move(0.0, 0.05)
                self._gripper_width = float(self._gripper.width)
        except franky.RealtimeException as error:
            raise DriverFault(
                FaultReason.connection_lost,
                f"{hostname}: no real-time kernel ({error}); set options.realtime: false only on a machine without one",
            ) from None
        except (franky.NetworkException, franky.Exception, RuntimeError) as error:
            raise DriverFault(FaultReason.connection_lost, f"{hostname}: {type(error).__name__}: {error}") from None
        self._versions = {"libfranka": _libfranka_version(), "franky": _franky_version()}
        self._started = time.monotonic()

    def _probe(self, hostname: str) -> None:
        """Connect once in a child process, killed after the timeout: libfranka never returns from
        an address that accepts and does not answer."""
        try:
            done = subprocess.run(
                [sys.executable, "-c", PROBE, hostname, "1" if self.options.gripper else "0"],
                capture_output=True,
                text=True,
                timeout=self.options.connect_timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise DriverFault(
                FaultReason.timeout,
                f"the robot at {hostname} did not answer within {self.options.connect_timeout_s:g} s",
            ) from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise DriverFault(FaultReason.connection_lost, f"cannot connect to the robot at {hostname}: {last}")

    def describe(self) -> dict[str, Any]:
        return {
            "arm": f"Franka at {self.options.hostname} through franky",
            "cameras": [],
            **self._versions,
            "relative_dynamics_factor": self.options.relative_dynamics_factor,
            "collision_reflex": self.options.collision_reflex.model_dump(mode="json"),
        }

    # ---- running ----------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        import franky

        if self._robot is None or self._fault is not None:
            return
        try:  # every tick (non-blocking): right after an asynchronous move the motion may not run yet
            self._moving = bool(self._robot.poll_motion())
        except franky.ControlException as error:  # a reflex or a refused motion: the robot stopped
            self._fault = " ".join(str(error).split())
            self._moving = False

    def state(self, images: bool = False) -> RobotState:
        joint_state = self._robot.current_joint_state
        q = np.array(joint_state.position, dtype=np.float64)
        return RobotState(
            time=time.monotonic() - self._started,
            q=q,
            dq=np.array(joint_state.velocity, dtype=np.float64),
            tip_pos=kinematics.tip_position(q),
            gripper_width=self._gripper_width,
            images={},
            privileged={},
        )

    def set_velocity_target(self, joint_velocity: np.ndarray) -> None:
        import franky

        target = np.array(joint_velocity, dtype=np.float64)
        if self._fault is not None:
            return  # the robot stopped itself; nothing moves before `recover`
        if not np.any(target) and not np.any(self._target):
            return  # zero already asked for: franky holds it (then the robot holds still by itself)
        try:
            motion = franky.JointVelocityMotion(target, franky.Duration(MOTION_HOLD_MS))
            self._robot.move(motion, asynchronous=True)
            self._moving = True
            self._target = target
        except Exception as error:  # ControlException (a reflex), or the link: the robot stopped itself
            self._fault = f"{type(error).__name__}: " + " ".join(str(error).split())
            self._moving = False

    def fault(self) -> str | None:
        return self._fault

    def fault_reason(self) -> str:
        text = (self._fault or "").lower()
        return FaultReason.collision_reflex.value if "reflex" in text else FaultReason.robot_error.value

    def recover(self) -> None:
        for _ in range(self.options.recovery_attempts):
            with contextlib.suppress(Exception):
                if self._robot.recover_from_errors() and not self._robot.has_errors:
                    self._fault = None
                    return
            time.sleep(0.1)
        raise DriverFault(
            FaultReason.robot_error,
            f"the robot did not recover from {self._fault!r} in {self.options.recovery_attempts} tries: "
            "check it (Desk), then resume",
        )

    def reset(self, home: np.ndarray) -> None:
        q = self.state().q
        off = float(np.max(np.abs(q - np.asarray(home))))
        if off > 0.05:
            raise DriverFault(
                FaultReason.reset_failed,
                f"the arm stands {off:.3f} rad from home; the collector's planned reset brings it there first",
            )

    def close(self) -> None:
        if self._robot is not None:
            with contextlib.suppress(Exception):
                self._robot.stop()
        self._robot = None
        self._gripper = None


def _libfranka_version() -> str:
    """franky-control wheels bundle their libfranka (2.0.0: libfranka 0.21.2) and do not expose its
    version; what is known is the wheel's."""
    return f"bundled with franky-control {_dist_version('franky-control')}"


def _franky_version() -> str:
    return _dist_version("franky-control")


def _dist_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
