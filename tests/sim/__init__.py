"""Tests of the simulated Panda (sim/)."""

REFLEX_OFF = {"joint_torque_thresholds_nm": (1e6,) * 7, "tool_wrench_thresholds": (1e6,) * 6}
"""Collision reflex thresholds no contact in these tests reaches: for the tests of contact reporting
and of the servo in contact, which press the arm into the table on purpose.  The reflex itself,
at Franka's default thresholds, is tested in test_collision_reflex.py."""
