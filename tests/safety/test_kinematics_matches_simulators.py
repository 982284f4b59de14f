"""Our forward kinematics (safety/kinematics.py) agrees with both simulators' tool tip to < 2 mm."""

from __future__ import annotations

import numpy as np
import pytest

from robot_drivers import create_driver
from safety import SafetyLimits, kinematics
from sim.config import SimConfig


@pytest.mark.parametrize("backend", ["robosuite", "pybullet"])
def test_forward_kinematics_matches_the_simulator(backend):
    driver = create_driver(backend, SimConfig(backend=backend, cameras=()))
    driver.connect()
    try:
        limits = SafetyLimits()
        rng = np.random.default_rng(0)
        worst = 0.0
        for q in rng.uniform(limits.q_lower, limits.q_upper, (30, 7)):
            state = driver.reset(q)
            worst = max(worst, float(np.linalg.norm(state.tip_pos - kinematics.tip_position(state.q))))
            _, rotation = driver.tip_pose()
            np.testing.assert_allclose(rotation, kinematics.tip_pose(state.q)[1], atol=0.01)
        print(f"{backend}: largest tool-tip difference {1000 * worst:.3f} mm")
        assert worst < 0.002
    finally:
        driver.close()
