"""The arm as the bridge server drives it, and the registry of arm backends.

An `Arm` takes a joint-velocity target and reaches it smoothly within the robot's velocity,
acceleration and jerk limits on its own (the simulated servo's ramp; on hardware, franky's Ruckig
motions at 1 kHz), keeps executing it between calls as a real arm does, and reports its measured
state.  The server calls `tick` every `tick_s` seconds whatever the network does.

A new arm backend is one module plus one line in `ARM_BACKENDS`; modules are imported only when an
arm is created (franky and pylibfranka cannot share a process: DESIGN.md).
"""

from __future__ import annotations

import abc
import importlib
from typing import Any

import numpy as np

from robot_drivers.types import RobotState

ARM_BACKENDS: dict[str, str] = {
    "sim": "sim.bridge_arm:SimArm",
    "franky": "robot_drivers.bridge.arm_franky:FrankyArm",
    "ros2": "robot_drivers.bridge.arm_ros2:Ros2Arm",
}
"""Arm backend name -> ``module:ClassName``."""


class Arm(abc.ABC):
    """One arm behind the bridge server.  Every failure raises `DriverFault`.

    Constructed as ``Arm(options, robot_model=..., limits=...)`` (`create_arm`): the backend's options
    (a dict, validated by `options_class`), the server's robot model (``panda`` or ``fr3``) and the
    safety limits its filter enforces (an arm that shapes its own motion, as ``ros2`` does, keeps
    within their operating accelerations and jerks).
    """

    options_class: type
    """The backend's options model (pydantic), validated before anything connects."""
    tick_s: float
    """How often the server must call `tick`, s."""
    simulated: bool = False
    """Whether the arm is a simulator (privileged state in its states)."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection (bounded in time: never hangs on an address that does not answer)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Robot model, versions and cameras ({name, width, height}), for ``hello`` and ``bridge check``."""

    @abc.abstractmethod
    def tick(self, now: float) -> None:
        """Let the arm run up to ``now`` (monotonic clock, s): a simulator steps its physics to real
        time; a real arm's controller runs by itself and this checks it for errors."""

    @abc.abstractmethod
    def state(self, images: bool = False) -> RobotState:
        """The latest measured state (camera images only if ``images``)."""

    @abc.abstractmethod
    def set_velocity_target(self, joint_velocity: np.ndarray) -> None:
        """The joint velocities (rad/s, 7) to reach, within the limits, and hold until the next target."""

    @abc.abstractmethod
    def fault(self) -> str | None:
        """The error the arm is stopped by (a reflex, a robot error), one line; None if none."""

    @abc.abstractmethod
    def fault_reason(self) -> str:
        """The `FaultReason` value of `fault` (``collision_reflex`` or ``robot_error``)."""

    @abc.abstractmethod
    def recover(self) -> None:
        """Clear `fault` (libfranka's automatic error recovery, a bounded number of tries)."""

    @abc.abstractmethod
    def reset(self, home: np.ndarray) -> None:
        """Start an episode at ``home`` (rad): a simulator puts the arm and the cube back; a real arm
        must already stand there (the collector's planned reset brought it)."""

    def link_alive(self) -> bool:
        """Whether the arm's own link answers now (a ``ros2`` arm: joint states arriving), for a
        collector waiting on a lost link; True for arms the server talks to in process."""
        return True

    @abc.abstractmethod
    def close(self) -> None:
        """Release the arm, brakes engaged where the robot has them.  Idempotent."""


def arm_names() -> list[str]:
    return sorted(ARM_BACKENDS)


def create_arm(config: Any) -> Arm:
    """The arm a `BridgeServerConfig` names, not yet connected."""
    return arm_class(config.arm)(config.options, robot_model=config.robot_model, limits=config.safety)


def arm_class(name: str) -> type[Arm]:
    try:
        target = ARM_BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown bridge arm backend {name!r}; known: {', '.join(arm_names())}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
