"""The bridge's ``sim`` arm: a simulated Panda (robosuite or PyBullet) running free in real time.

A real arm keeps executing its last command between messages; so does this one: `tick` steps the
physics, one physics step per control period of the wrapped driver, until simulated time has caught
up with the wall clock, whatever the network does.  A collector that stalls or dies therefore sees
the arm move on, exactly the case the bridge's watchdog is for.  The wrapped `SimPandaDriver`'s
servo is the arm's controller (Franka's acceleration and jerk limits, the collision reflex).

If the physics cannot keep up (a camera frame takes about 15 ms), simulated time falls behind; it
catches up at most `MAX_CATCH_UP_S` at once and otherwise rebases (counted in ``overruns``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from robot_drivers import ActionSpace, Command, DriverFault, FaultReason, create_driver
from robot_drivers.bridge.arm import Arm
from robot_drivers.types import NUM_JOINTS, RobotState
from sim.config import SimConfig

PHYSICS_RATE_HZ = 1000.0
"""Control rate the wrapped driver is built with: above both engines' physics rates, so one `send`
is one physics step (PyBullet 1/240 s, MuJoCo 2 ms)."""
MAX_CATCH_UP_S = 0.25
"""Most simulated time one `tick` runs to catch up with the wall clock, s."""


class SimArm(Arm):
    """A simulated Panda behind the bridge (options: `sim.config.SimConfig`, without the
    session-owned ``action_space`` and ``control_rate_hz``)."""

    options_class = SimConfig
    simulated = True

    def __init__(
        self, options: dict[str, Any] | None = None, *, robot_model: str = "panda", limits: Any = None
    ) -> None:
        options = dict(options or {})
        owned = {"action_space", "control_rate_hz"} & set(options)
        if owned:
            raise ValueError(f"options: {sorted(owned)} are set by the bridge (joint velocities, one physics step)")
        self.config = SimConfig(**options, action_space="joint_velocity", control_rate_hz=PHYSICS_RATE_HZ)
        self.driver = create_driver(self.config.backend, self.config)
        self._target = np.zeros(NUM_JOINTS)
        self._started_at: float | None = None
        self._sim_time_s = 0.0
        self.overruns = 0
        self.tick_s = 0.002

    def connect(self) -> None:
        self.driver.connect()
        self.tick_s = self.driver.physics_timestep_s

    def describe(self) -> dict[str, Any]:
        return {
            "arm": f"simulated Panda ({self.config.backend}, free-running in real time)",
            "cameras": [camera.model_dump() for camera in self.config.cameras],
            "physics_timestep_s": self.driver.physics_timestep_s,
        }

    def tick(self, now: float) -> None:
        if self._started_at is None:
            self._started_at, self._sim_time_s = now, 0.0
        behind = (now - self._started_at) - self._sim_time_s
        if behind > MAX_CATCH_UP_S:  # could not keep up: run what is allowed, forget the rest
            self.overruns += 1
            self._started_at += behind - MAX_CATCH_UP_S
            behind = MAX_CATCH_UP_S
        h = self.driver.physics_timestep_s
        while behind >= h:
            if self.driver.reflex is None:
                try:
                    self.driver.send(Command(ActionSpace.joint_velocity, self._target))
                except DriverFault as fault:
                    if fault.reason is not FaultReason.collision_reflex:
                        raise
                    self._target = np.zeros(NUM_JOINTS)
            else:
                self.driver.idle()  # stopped by the reflex: braking, then holding
            self._sim_time_s += h
            behind -= h

    def state(self, images: bool = False) -> RobotState:
        return self.driver.read_state(images=images)

    def set_velocity_target(self, joint_velocity: np.ndarray) -> None:
        self._target = np.array(joint_velocity, dtype=np.float64)

    def fault(self) -> str | None:
        return self.driver.reflex

    def fault_reason(self) -> str:
        return FaultReason.collision_reflex.value

    def recover(self) -> None:
        self.driver.recover()

    def reset(self, home: np.ndarray) -> None:
        self._target = np.zeros(NUM_JOINTS)
        self.driver.reset(np.asarray(home, dtype=np.float64))
        self._started_at = time.monotonic()
        self._sim_time_s = 0.0

    def close(self) -> None:
        self.driver.close()
