"""Violation monitor, watchdog and contact events."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safety import SafeCommand, SafetyFilter, ViolationMonitor, Watchdog, contact_events
from tests.safety.helpers import HOME_Q, LIMITS, make_state


def test_state_inside_the_limits_continues():
    verdict = ViolationMonitor().check(make_state(HOME_Q, np.zeros(7)), now=0.0)
    assert verdict.ok and verdict.outcome is None and not verdict.events


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda s: s.q.__setitem__(3, LIMITS.q_upper[3] + 0.05), 3),
        (lambda s: s.tip_pos.__setitem__(0, LIMITS.workspace_max[0] + 0.01), "x_max"),
        (lambda s: s.tip_pos.__setitem__(2, LIMITS.table_height + 0.005), "z_min"),
    ],
)
def test_violation_ends_the_episode_with_safety_stop(change, where):
    state = make_state(HOME_Q, np.zeros(7))
    change(state)
    verdict = ViolationMonitor().check(state, now=1.0)
    assert verdict.action == "safety_stop" and verdict.outcome == "safety_stop"
    assert any(e.kind == "violation" and e.where == where for e in verdict.events)


def test_repeated_violations_within_the_window_hold_for_the_operator():
    monitor = ViolationMonitor(max_violations=3, window_s=600.0)
    bad = make_state(HOME_Q, np.zeros(7))
    bad.tip_pos[1] = 1.0
    assert monitor.check(bad, now=0.0).action == "safety_stop"
    assert monitor.check(bad, now=700.0).action == "safety_stop"  # the first fell out of the window
    assert monitor.check(bad, now=800.0).action == "safety_stop"
    verdict = monitor.check(bad, now=900.0)
    assert verdict.action == "hold" and any(e.kind == "hold" for e in verdict.events)
    assert monitor.check(make_state(HOME_Q, np.zeros(7)), now=901.0).action == "hold"
    monitor.release()
    assert monitor.check(make_state(HOME_Q, np.zeros(7)), now=902.0).ok


def test_non_finite_state_is_a_violation():
    state = make_state(HOME_Q, np.zeros(7))
    state.q[0] = math.nan
    assert ViolationMonitor().check(state, now=0.0).action == "safety_stop"


def test_watchdog_stops_on_a_stale_state_or_a_missed_deadline():
    watchdog = Watchdog(max_state_age_s=0.1, max_overrun_s=0.025)
    command = SafeCommand(np.full(7, 0.2))
    assert watchdog.guard(command, now=10.0, state_time=9.95, deadline=10.01)[0] is command
    stopped, events = watchdog.guard(command, now=10.0, state_time=9.8)
    assert stopped.is_stop and events[0].kind == "watchdog" and events[0].where == "state_age"
    stopped, events = watchdog.guard(command, now=10.0, deadline=9.96)
    assert stopped.is_stop and events[0].where == "deadline"
    assert watchdog.guard(command, now=math.nan)[0].is_stop


def test_after_a_watchdog_stop_the_filter_ramps_up_from_zero():
    safety_filter = SafetyFilter()
    state = make_state(HOME_Q, np.zeros(7))
    for _ in range(5):
        safety_filter.filter(state, np.full(7, 0.5))
    safety_filter.notify_stopped()
    command, _ = safety_filter.filter(state, np.full(7, 0.5))
    np.testing.assert_allclose(command.values, np.minimum(0.5, LIMITS.accelerations * 0.05))


def test_contact_events():
    events = contact_events(
        [("link7", "table"), ("hand", "cube"), ("link2", "link6"), ("link6", "link2"), ("table", "left_finger")]
    )
    assert [(e.kind, e.where) for e in events] == [
        ("table_collision", "link7"),
        ("self_collision", "link2-link6"),
        ("table_collision", "left_finger"),
    ]
    assert contact_events([]) == []
    assert events[0].to_dict()["kind"] == "table_collision"
