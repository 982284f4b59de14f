"""The `RobotDriver` interface every backend implements, and the one exception drivers raise."""

from __future__ import annotations

import abc
import enum

import numpy as np

from robot_drivers.types import ActionSpace, Command, RobotState


class FaultReason(enum.StrEnum):
    """Machine-readable reason carried by every `DriverFault`."""

    not_connected = "not_connected"
    connection_lost = "connection_lost"
    invalid_command = "invalid_command"
    simulation_unstable = "simulation_unstable"
    reset_failed = "reset_failed"
    robot_error = "robot_error"
    collision_reflex = "collision_reflex"
    camera_error = "camera_error"
    timeout = "timeout"


class DriverFault(RuntimeError):
    """A driver could not do what it was asked. ``reason`` says why in a machine-readable way."""

    def __init__(self, reason: FaultReason | str, message: str) -> None:
        self.reason = FaultReason(reason)
        self.message = message
        super().__init__(f"[{self.reason.value}] {message}")


class RobotDriver(abc.ABC):
    """A Franka Panda, real or simulated.

    Life cycle: ``connect()`` once, then any number of ``read_state()`` / ``send()`` pairs and
    ``reset(home)`` calls, then ``close()``.  ``stop()`` brings the arm to rest and may be called
    at any time after ``connect()``.  Every failure raises `DriverFault`.

    ``send`` must only ever be given commands that passed the safety filter (``safety/``); the
    driver itself does no limit checking beyond rejecting malformed commands.
    """

    action_space: ActionSpace
    control_rate_hz: float
    config_class: type | None = None
    """The backend's options model (pydantic), used to validate a config before anything starts."""
    free_running: bool = False
    """Whether the arm moves on between calls, executing its last command (a real arm, the bridge):
    the caller must pace its commands at ``control_rate_hz``.  A simulator in process (False)
    advances one control period per `send` and waits in between."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection / build the simulation.  Idempotent."""

    @abc.abstractmethod
    def read_state(self) -> RobotState:
        """The current state, including images of every configured camera."""

    @abc.abstractmethod
    def send(self, command: Command) -> None:
        """Apply ``command`` for one control period (in simulation: advance time by one period)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Bring the arm to rest (zero joint velocity) as quickly as its limits allow."""

    @abc.abstractmethod
    def reset(self, home: np.ndarray) -> RobotState:
        """Move the arm to the home joint configuration ``home`` (rad, (7,)) and, in simulation,
        put the cube back at its start pose.  Returns the state after the reset."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every resource.  Idempotent."""

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    def __enter__(self) -> RobotDriver:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
