"""SafetyLimits: Franka's defaults, and bad configurations rejected with the field named."""

import numpy as np
import pytest
from pydantic import ValidationError

from safety.limits import FRANKA_Q_MAX, FRANKA_Q_MIN, SafetyLimits


def field_names(error: ValidationError) -> set[str]:
    return {str(e["loc"][0]) for e in error.errors() if e["loc"]}


def test_defaults_are_franka_limits_with_the_seed_001_cap():
    limits = SafetyLimits()
    np.testing.assert_allclose(limits.q_lower, np.array(FRANKA_Q_MIN) + 0.1)
    np.testing.assert_allclose(limits.q_upper, np.array(FRANKA_Q_MAX) - 0.1)
    np.testing.assert_allclose(limits.velocity_caps, 0.5)
    np.testing.assert_allclose(limits.accelerations, [7.5, 3.75, 5.0, 6.25, 7.5, 10.0, 10.0])
    assert limits.tip_lower[2] == pytest.approx(-0.112 + 0.02)
    assert SafetyLimits.model_json_schema()["properties"]["velocity_cap"]["description"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"q_min": FRANKA_Q_MAX, "q_max": FRANKA_Q_MIN}, "q_max"),
        ({"velocity_cap": 3.0}, "velocity_cap"),
        ({"velocity_cap": -0.1}, "velocity_cap"),
        ({"acceleration_limit": (16.0, 1, 1, 1, 1, 1, 1)}, "acceleration_limit"),
        ({"acceleration_limit": (0.0, 1, 1, 1, 1, 1, 1)}, "acceleration_limit"),
        ({"workspace_min": (0.8, -0.3, 0.0), "workspace_max": (0.3, 0.3, 0.5)}, "workspace_max"),
        ({"q_min": tuple(x - 0.2 for x in FRANKA_Q_MAX)}, "joint_margin"),  # no room left to move
        ({"joint_margin": -0.1}, "joint_margin"),
        ({"min_tip_height": 0.7}, "min_tip_height"),
        ({"velocity_cpa": 0.3}, "velocity_cpa"),  # typo: unknown keys are rejected
        ({"q_min": (0.0, 0.0)}, "q_min"),
    ],
)
def test_bad_configuration_names_the_field(overrides, field):
    with pytest.raises(ValidationError) as info:
        SafetyLimits(**overrides)
    assert field in field_names(info.value), info.value


def test_every_bad_field_is_named_at_once():
    with pytest.raises(ValidationError) as info:
        SafetyLimits(velocity_cap=5.0, max_tip_speed=-1.0, tabel_height=0.0)
    assert {"velocity_cap", "max_tip_speed", "tabel_height"} <= field_names(info.value)


def test_limits_round_trip_through_a_dict():
    limits = SafetyLimits(velocity_cap=0.3, workspace_max=(0.7, 0.3, 0.4))
    assert SafetyLimits(**limits.model_dump()) == limits
