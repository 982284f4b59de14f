"""Bad simulation configs fail before anything is built, naming the field."""

import pytest
from pydantic import ValidationError

from robot_drivers import backend_names, driver_class
from sim.config import SimConfig


def _error_fields(info) -> set[str]:
    return {".".join(str(part) for part in error["loc"]) for error in info.value.errors()}


def test_unknown_backend_is_rejected_naming_the_field():
    with pytest.raises(ValidationError) as info:
        SimConfig(backend="gazebo")
    assert _error_fields(info) == {"backend"}


def test_unknown_camera_is_rejected_naming_the_field():
    with pytest.raises(ValidationError) as info:
        SimConfig(cameras=[{"name": "wrist"}])
    assert _error_fields(info) == {"cameras.0.name"}
    assert "wrist" in str(info.value)


def test_unknown_action_space_is_rejected_naming_the_field():
    with pytest.raises(ValidationError) as info:
        SimConfig(action_space="torque")
    assert _error_fields(info) == {"action_space"}


def test_typo_and_impossible_values_are_each_named():
    with pytest.raises(ValidationError) as info:
        SimConfig(control_rate_hz=-5, camreas=[], cameras=[{"name": "front", "width": 0}])
    assert _error_fields(info) == {"control_rate_hz", "camreas", "cameras.0.width"}


def test_registry_names_backends_without_importing_them():
    assert backend_names() == ["bridge", "pybullet", "robosuite"]
    with pytest.raises(KeyError, match="unknown robot backend 'gazebo'"):
        driver_class("gazebo")
