"""Franka arm models as data: each model's published limits in ``safety/robot_models/<name>.yaml``
(the Panda and the FR3 differ: joint ranges, speeds, accelerations, jerks), and the safety limits of
a session built from them.

A session names its arm (``robot.model``); every hardware field of its `SafetyLimits` that the
session does not set comes from that model, and so does the default operating acceleration (half
the model's maximum).  Adding an arm is one YAML file.
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import resources
from typing import Any

import yaml

ROBOT_MODELS = ("panda", "fr3")
"""The arms with a model file."""
HARDWARE_FIELDS = ("q_min", "q_max", "velocity_max", "acceleration_max", "jerk_max")
"""`SafetyLimits` fields that are the arm's own published limits."""


@dataclasses.dataclass(frozen=True)
class RobotModel:
    """One arm's published limits (per joint, 7 values each)."""

    name: str
    description: str
    libfranka: str
    """The libfranka versions that speak to this arm (a pip version specifier)."""
    q_min: tuple[float, ...]
    q_max: tuple[float, ...]
    velocity_max: tuple[float, ...]
    acceleration_max: tuple[float, ...]
    jerk_max: tuple[float, ...]
    torque_max: tuple[float, ...]


@functools.cache
def robot_model(name: str) -> RobotModel:
    """The model ``name`` (one of `ROBOT_MODELS`); `KeyError` naming the known ones."""
    if name not in ROBOT_MODELS:
        raise KeyError(f"unknown robot model {name!r}; known: {', '.join(ROBOT_MODELS)}")
    text = resources.files("safety").joinpath("robot_models", f"{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    vectors = {key: tuple(float(v) for v in data[key]) for key in (*HARDWARE_FIELDS, "torque_max")}
    for key, values in vectors.items():
        if len(values) != 7:
            raise ValueError(f"robot model {name}: {key} has {len(values)} values, not 7")
    return RobotModel(name=data["name"], description=data["description"], libfranka=data["libfranka"], **vectors)


def limits_fields(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """`SafetyLimits` fields for arm ``name``: its published limits, the default operating
    acceleration (half its maximum), then ``overrides`` (a session's ``safety`` section) on top.
    A plain mapping, validated by `SafetyLimits` itself (so errors name the session's field)."""
    model = robot_model(name)
    fields: dict[str, Any] = {key: list(getattr(model, key)) for key in HARDWARE_FIELDS}
    acceleration_max = (overrides or {}).get("acceleration_max", model.acceleration_max)
    try:
        if len(acceleration_max) == 7:
            fields["acceleration_limit"] = [0.5 * float(a) for a in acceleration_max]
    except (TypeError, ValueError):
        pass  # a malformed override: SafetyLimits names it
    return {**fields, **(overrides or {})}
