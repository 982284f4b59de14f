"""Every stop the safety layer orders respects the robot's published acceleration limits.

The watchdog's stop goes through `SafeDriver` to a real simulated arm (PyBullet): a stale state
must produce the filter's emergency stop (the last command sent, braked by the published
acceleration limit each period), never a velocity step to zero.
"""

from __future__ import annotations

import numpy as np

from robot_drivers import create_driver
from robot_drivers.safe_driver import SafeDriver
from safety import SafetyFilter, SafetyLimits, Watchdog
from tests.safety.helpers import HOME_Q, make_state

LIMITS = SafetyLimits()
PERIOD = 0.05
HARD_STEP = np.asarray(LIMITS.acceleration_max) * PERIOD


class Clock:
    """The wall clock the watchdog reads, set by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_stale_state_brakes_at_the_published_limit_from_the_last_command_sent():
    driver = create_driver("pybullet", {"backend": "pybullet", "cameras": []})
    driver.connect()
    clock = Clock()
    safe = SafeDriver(driver, LIMITS, "joint_velocity", watchdog=Watchdog(max_state_age_s=0.1), clock=clock)
    try:
        sent = []
        for _ in range(12):  # ramp joints 2 and 3 up to the 0.5 rad/s cap (braking takes them more than one period)
            state = safe.read_state()
            clock.now += 0.01
            command, events = safe.act(state, np.array([0, 0.5, -0.5, 0, 0, 0, 0]), deadline=clock.now)
            sent.append(command.values)
        assert abs(sent[-1][1]) > 0.45
        for _ in range(4):  # the collector stalls: every state is now older than the watchdog allows
            state = safe.read_state()
            clock.now += 0.5
            command, events = safe.act(state, np.array([0, 0.5, -0.5, 0, 0, 0, 0]), deadline=clock.now)
            assert any(e.kind == "watchdog" for e in events)
            expected = np.sign(sent[-1]) * np.maximum(np.abs(sent[-1]) - HARD_STEP, 0.0)
            np.testing.assert_allclose(command.values, expected, atol=1e-12)
            sent.append(command.values)
        assert np.all(sent[-1] == 0.0), "the emergency stop must reach rest"
        changes = np.abs(np.diff(np.array(sent), axis=0))
        assert np.all(changes <= HARD_STEP + 1e-12), "a stop asked for more than the published acceleration"
    finally:
        driver.close()


def test_a_non_finite_state_gets_the_emergency_stop_braking_from_the_measured_velocity():
    safety_filter = SafetyFilter(LIMITS, 20.0)
    dq = np.array([0.5, -0.5, 0.3, 0.0, 0.2, -0.1, 0.05])
    state = make_state(HOME_Q, dq)
    state.tip_pos = np.array([np.nan, 0.0, 0.0])
    command, events = safety_filter.filter(state, np.zeros(7))
    np.testing.assert_allclose(command.values, np.sign(dq) * np.maximum(np.abs(dq) - HARD_STEP, 0.0))
    assert [e.kind for e in events] == ["nonfinite"]
    command, _ = safety_filter.filter(state, np.zeros(7))  # still unreadable: keeps braking, to rest
    assert command.is_stop


def test_a_non_finite_action_from_a_good_state_is_a_planned_stop_at_the_operating_limit():
    safety_filter = SafetyFilter(LIMITS, 20.0)
    q, v = HOME_Q.copy(), np.zeros(7)
    for _ in range(10):
        v = safety_filter.filter(make_state(q, v), np.array([0, 0.5, -0.5, 0, 0, 0, 0]))[0].values
        q = q + v * PERIOD
    step = LIMITS.accelerations * PERIOD
    for _ in range(5):
        command, events = safety_filter.filter(make_state(q, v), np.full(7, np.nan))
        assert any(e.kind == "nonfinite" for e in events)
        np.testing.assert_allclose(command.values, np.sign(v) * np.maximum(np.abs(v) - step, 0.0), atol=1e-12)
        v = command.values
        q = q + v * PERIOD
    assert command.is_stop
