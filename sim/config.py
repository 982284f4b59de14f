"""Configuration of a simulated Panda (either backend)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from robot_drivers.collision_reflex import CollisionReflexConfig
from robot_drivers.registry import SIMULATED_BACKENDS
from robot_drivers.types import ActionSpace
from safety.strict_model import StrictModel
from sim.scene import CAMERAS

SIM_BACKENDS: tuple[str, ...] = SIMULATED_BACKENDS
"""The simulated backends (`robot_drivers.registry.SIMULATED_BACKENDS`)."""
SimBackend = Literal[SIMULATED_BACKENDS]  # type: ignore[valid-type]


class CameraConfig(StrictModel):
    """One camera to render at every state read."""

    name: str = Field("front", description=f"Scene camera to render; one of {sorted(CAMERAS)}.")
    width: int = Field(84, gt=0, le=2048, description="Image width, pixels.")
    height: int = Field(84, gt=0, le=2048, description="Image height, pixels.")

    @field_validator("name")
    @classmethod
    def _known_camera(cls, name: str) -> str:
        if name not in CAMERAS:
            raise ValueError(f"unknown camera {name!r}; known cameras: {', '.join(sorted(CAMERAS))}")
        return name


class SimConfig(StrictModel):
    """A simulated Panda + table + cube scene (seed 003), driven by one of two physics backends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: SimBackend = Field("robosuite", description="Physics backend: robosuite (MuJoCo) or pybullet.")
    action_space: ActionSpace = Field(
        ActionSpace.joint_velocity,
        description="joint_velocity: 7 values in rad/s; tip_delta: (x, y, z) in m per step.",
    )
    control_rate_hz: float = Field(20.0, gt=0, le=1000, description="Control rate, Hz (seed 001: 20).")
    cameras: tuple[CameraConfig, ...] = Field(
        (CameraConfig(),), description="Cameras rendered at every state read; empty for none."
    )
    seed: int = Field(0, ge=0, description="Seed of every random choice the simulation makes.")
    collision_reflex: CollisionReflexConfig = Field(
        CollisionReflexConfig(),
        description="Thresholds of the simulated arm's collision reflex (as a real Franka's): an "
        "external force above them stops the arm and faults the command (robot_drivers/collision_reflex.py).",
    )

    @field_validator("cameras")
    @classmethod
    def _unique_camera_names(cls, cameras: tuple[CameraConfig, ...]) -> tuple[CameraConfig, ...]:
        names = [camera.name for camera in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        return cameras
