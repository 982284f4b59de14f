"""The filter in both simulators (issue 3, "Must be true"): adversarial actions (uniform at ten
times the action range, plus bursts of NaN) through the filter never put a joint outside its
operating limit, the tool tip outside the box or into the table, or the arm's watched points
below their height above the table, measured on the simulator's own state; the closest approach
to each limit is printed (run pytest with -s to see it).

The issue asks for 20,000 steps per simulator.  One step costs about 1.5-2 ms here (simulator
plus filter), so 20,000 steps x 2 simulators x 2 action spaces take about 3 minutes on a free
core: too much for the unit suite, which must stay under 15 minutes on 2 cores with everyone's
tests.  This test runs 1,500 steps per simulator and action space (6,000 in all, about 15 s);
the full 20,000-step soak is ``benchmarks/safety_soak.py`` (same code, prints the same table).
"""

from __future__ import annotations

import pytest

from benchmarks.safety_soak import report, soak

STEPS = 1500


@pytest.mark.slow
@pytest.mark.parametrize("action_space", ["joint_velocity", "tip_delta"])
@pytest.mark.parametrize("backend", ["robosuite", "pybullet"])
def test_adversarial_actions_never_leave_the_limits(backend, action_space):
    result = soak(backend, action_space, STEPS, seed=1)
    print()
    print(report(result))
    closest = result["closest"]
    outside = {name: value for name, value in closest.items() if value < 0.0}
    assert not outside, f"outside the limits: {outside}"
    assert result["violations"] == 0
    assert result["collisions"]["table_collision"] == 0
