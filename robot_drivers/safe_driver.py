"""`SafeDriver`: the only path from an action to `RobotDriver.send` (non-negotiable 2).

Everything in pandalab that moves an arm — the collector's step loop, the gym environment used to
evaluate policies, `pandalab sim check`, the reset — goes through `SafeDriver.act`, which runs the
safety filter (and, when the loop is paced in real time, the watchdog) before the driver sees a
command.  The filter always emits joint velocities (``tip_delta`` actions are converted with the
safety layer's own kinematics), so the wrapped driver must be configured for ``joint_velocity``.

This module imports `safety` (a leaf that imports nothing of ours); `robot_drivers/__init__` does
not import it, so loading the driver interface still loads nothing else of ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from robot_drivers.base import DriverFault, FaultReason, RobotDriver
from robot_drivers.types import ActionSpace, Command, RobotState
from safety import ResetController, SafetyEvent, SafetyFilter, SafetyLimits, Watchdog, plan_reset

RESET_TIMEOUT_S = 30.0
"""Longest a planned reset may take before it is declared failed, s."""


class SafeDriver:
    """A driver behind the safety filter.

    Args:
        driver: a connected (or connectable) driver configured for ``joint_velocity`` commands.
        limits: the safety limits (Panda defaults if None).
        action_space: what the caller's actions are (``joint_velocity`` or ``tip_delta``).
        watchdog: checks the state's age and the loop deadline against ``clock`` (real-time loops
            only; in a simulation that waits for the controller there is nothing to go stale).
        clock: the wall clock the watchdog uses, s.
    """

    def __init__(
        self,
        driver: RobotDriver,
        limits: SafetyLimits | None = None,
        action_space: ActionSpace | str = ActionSpace.joint_velocity,
        watchdog: Watchdog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ActionSpace(driver.action_space) is not ActionSpace.joint_velocity:
            raise ValueError(
                "the safety filter sends joint velocities: configure the driver with action_space joint_velocity "
                "and give the action space of the actions to SafeDriver"
            )
        self.driver = driver
        self.limits = limits if limits is not None else SafetyLimits()
        self.action_space = ActionSpace(action_space)
        self.filter = SafetyFilter(self.limits, driver.control_rate_hz, self.action_space.value)
        self.watchdog = watchdog
        self.clock = clock
        self._read_at: float | None = None

    @property
    def action_limit(self) -> np.ndarray:
        """Symmetric bound of each action component: the velocity cap (rad/s) or the largest
        tool-tip displacement per step (m)."""
        if self.action_space is ActionSpace.joint_velocity:
            return self.limits.velocity_caps.copy()
        return np.full(3, self.limits.tip_delta_max)

    def read_state(self) -> RobotState:
        state = self.driver.read_state()
        self._read_at = self.clock()
        return state

    def act(
        self, state: RobotState, action: np.ndarray, deadline: float | None = None
    ) -> tuple[Command, list[SafetyEvent]]:
        """Filter ``action`` for ``state`` (which must come from `read_state`), send the result,
        and return the command sent with every safety event."""
        sent_before = self.filter.previous_command
        safe, events = self.filter.filter(state, action)
        if self.watchdog is not None:
            late = self.watchdog.check(now=self.clock(), state_time=self._read_at, deadline=deadline)
            if late:  # stale information: brake as fast as the arm allows, from what was last sent
                safe = self.filter.emergency_stop(state.dq, from_command=sent_before)
                events = events + late
        command = Command(ActionSpace(safe.kind), safe.values)
        self.driver.send(command)
        return command, events

    def stop(self) -> None:
        """Bring the arm to rest now (driver's own stop), and ramp up from zero afterwards."""
        self.driver.stop()
        self.filter.notify_stopped()

    def reset(self, home: np.ndarray, planned: bool = False) -> RobotState:
        """Return the arm to ``home`` and start a new episode.

        ``planned`` (hardware; optional in simulation): plan a joint-space move inside the limits
        (`safety.plan_reset`) and execute it through a joint-velocity filter with the same limits,
        closed loop, then let the driver finish (in simulation: exact home and the cube put back).
        Without ``planned`` the driver's own reset is used (simulation: an instant teleport).
        """
        home = np.asarray(home, dtype=np.float64)
        if planned:
            self._execute_reset(home)
        state = self.driver.reset(home)
        self.filter.reset()
        self._read_at = self.clock()
        return state

    def _execute_reset(self, home: np.ndarray) -> None:
        state = self.read_state()
        plan = plan_reset(state.q, state.dq, home, self.limits, self.driver.control_rate_hz)
        controller = ResetController(plan, tolerance=self.limits.reset_tolerance, rest_speed=self.limits.rest_speed)
        joint_filter = SafetyFilter(self.limits, self.driver.control_rate_hz, ActionSpace.joint_velocity.value)
        steps = int(RESET_TIMEOUT_S * self.driver.control_rate_hz)
        period = 1.0 / self.driver.control_rate_hz
        next_deadline = time.monotonic() + period
        for _ in range(steps):
            if controller.is_done(state):
                return
            safe, _ = joint_filter.filter(state, controller.action(state))
            self.driver.send(Command(ActionSpace.joint_velocity, safe.values))
            if self.driver.free_running:  # the arm runs on its own: one command per period, never a burst
                delay = next_deadline - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_deadline = max(next_deadline + period, time.monotonic())
            state = self.read_state()
        self.driver.stop()
        raise DriverFault(FaultReason.reset_failed, f"the planned reset did not reach home within {RESET_TIMEOUT_S} s")
