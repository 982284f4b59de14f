"""Configuration of the bridge: the server's file (`BridgeServerConfig`, ``pandalab bridge serve
--config FILE``) and the collector's ``robot.options`` for ``robot.backend: bridge`` (`BridgeOptions`)."""

from __future__ import annotations

import pathlib
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from robot_drivers.addresses import check_zmq_address
from robot_drivers.bridge.arm import arm_class, arm_names
from robot_drivers.cameras.base import CameraConfig
from robot_drivers.types import ActionSpace
from safety.limits import SafetyLimits
from safety.robot_model import ROBOT_MODELS, limits_fields
from safety.strict_model import StrictModel

DEFAULT_BRIDGE_ADDRESS = "tcp://127.0.0.1:5600"


class BridgeServerConfig(StrictModel):
    """The bridge server on the robot PC: which arm, where it listens, the robot-side safety."""

    address: str = Field(
        DEFAULT_BRIDGE_ADDRESS,
        description="ZMQ address the server binds (tcp://HOST:PORT or ipc:///PATH); loopback by default: "
        "another host's collector only when set to that network's address.",
    )
    arm: str = Field("sim", description=f"Arm backend: one of {arm_names()}.")
    robot_model: Literal[ROBOT_MODELS] = Field(  # type: ignore[valid-type]
        "panda",
        description="The arm: panda or fr3; its published limits are the safety section's defaults, and a "
        "collector's session must name the same model.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="The arm backend's options (its own model; e.g. sim: backend, cameras)."
    )
    safety: SafetyLimits = Field(
        default_factory=SafetyLimits,
        description="The limits the robot-side filter enforces on every command (the collector's must be the same "
        "or tighter).",
    )
    control_rate_hz: float = Field(
        20.0,
        gt=0.0,
        le=1000.0,
        description="The collectors' command rate, Hz (a hello at another rate is refused); the robot-side filter "
        "limits each command's change to one period's acceleration, and commands arriving sooner than half a "
        "period after the last are dropped.",
    )
    watchdog_ms: float = Field(
        100.0,
        ge=10.0,
        le=1000.0,
        description="With no valid command for this long, ms, the arm brakes to rest within its limits and holds "
        "until a fresh command.",
    )
    max_command_age_ms: float = Field(
        100.0,
        gt=0.0,
        le=1000.0,
        description="A command older than this on arrival, ms (by its send time and the clock offset measured at "
        "hello), is dropped and counted.",
    )
    stop_timeout_s: float = Field(5.0, gt=0.0, le=60.0, description="Longest a stop may take to reach rest, s.")
    cameras: tuple[CameraConfig, ...] = Field(
        (),
        description="The cell's cameras (robot_drivers/cameras): opened before the arm is connected, each read by "
        "its own thread; every state with images carries each one's newest frame, resized to its record size, "
        "and its age.  Names must differ from each other and from the arm's own (a simulated arm's) cameras.",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, address: str) -> str:
        return check_zmq_address(address)

    @model_validator(mode="before")
    @classmethod
    def _limits_of_the_robot_model(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        model, safety = data.get("robot_model", "panda"), data.get("safety", {})
        if model not in ROBOT_MODELS or not isinstance(safety, dict):
            return data
        return {**data, "safety": limits_fields(model, safety)}

    @field_validator("arm")
    @classmethod
    def _known_arm(cls, name: str) -> str:
        if name not in arm_names():
            raise ValueError(f"unknown arm backend {name!r}; known: {', '.join(arm_names())}")
        return name

    @model_validator(mode="after")
    def _options_valid(self) -> BridgeServerConfig:
        from pydantic import ValidationError

        from safety.strict_model import validation_problems

        arm = arm_class(self.arm)
        if arm.simulated and self.robot_model != "panda":
            raise ValueError(f"robot_model: the simulated arm is a Panda, not {self.robot_model}")
        options_class = arm.options_class
        try:
            options = options_class(**_without_session_fields(self.options))
        except ValidationError as error:
            raise ValueError("; ".join(validation_problems(error, "options."))) from None
        names = [camera.name for camera in self.cameras]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"cameras: each name once; {', '.join(map(repr, repeated))} repeated")
        arms = {camera.name for camera in getattr(options, "cameras", ())}  # a simulated arm's, defaults included
        clash = sorted(arms & set(names))
        if clash:
            raise ValueError(f"cameras: {', '.join(map(repr, clash))} is also a camera of the arm (options.cameras)")
        return self


def _without_session_fields(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in ("action_space", "control_rate_hz")}


class CameraSpec(StrictModel):
    """A camera image the collector expects in every state."""

    name: str = Field(description="Camera name, as the bridge's arm backend names it.")
    width: int = Field(84, gt=0, le=2048, description="Image width, pixels.")
    height: int = Field(84, gt=0, le=2048, description="Image height, pixels.")


class BridgeOptions(StrictModel):
    """``robot.options`` of a session with ``robot.backend: bridge``."""

    server: str = Field(DEFAULT_BRIDGE_ADDRESS, description="The bridge server's ZMQ address (tcp://HOST:PORT).")
    cameras: tuple[CameraSpec, ...] = Field(
        (), description="Camera images every state must carry (checked against the server's at connect)."
    )
    spawn: pathlib.Path | None = Field(
        None,
        description="A bridge server config file: the collector starts that server as its child process (one-PC "
        "lab) and stops it at the end; its address must be `server`.",
    )
    connect_timeout_s: float = Field(
        10.0, gt=0.0, le=120.0, description="Longest wait for the server's answer at connect, s (never hangs)."
    )
    request_timeout_s: float = Field(
        0.5, gt=0.0, le=10.0, description="Longest wait for the answer to a state or command request, s."
    )
    action_space: ActionSpace = Field(
        ActionSpace.joint_velocity, description="Always joint_velocity: the collector's filter converts tip_delta."
    )
    control_rate_hz: float = Field(20.0, gt=0, le=1000, description="The collector's command rate, Hz.")

    @field_validator("server")
    @classmethod
    def _address(cls, address: str) -> str:
        return check_zmq_address(address)

    @field_validator("cameras")
    @classmethod
    def _unique(cls, cameras: tuple[CameraSpec, ...]) -> tuple[CameraSpec, ...]:
        names = [camera.name for camera in cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        return cameras


class BridgeConfigError(ValueError):
    """A bridge config file that cannot be used; one ``FILE: FIELD: what`` line per problem."""


def load_bridge_config(path: str | pathlib.Path) -> BridgeServerConfig:
    """Read and validate a bridge server config (YAML); `BridgeConfigError` names the file and every
    bad field."""
    from pydantic import ValidationError

    from robot_drivers.config_file import ConfigFileError, read_yaml_file
    from safety.strict_model import validation_problems

    path = pathlib.Path(path)
    try:
        data = read_yaml_file(path, "bridge config")
    except ConfigFileError as error:
        raise BridgeConfigError(str(error)) from None
    if not isinstance(data, dict):
        raise BridgeConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return BridgeServerConfig(**data)
    except ValidationError as error:
        raise BridgeConfigError("\n".join(f"{path}: {line}" for line in validation_problems(error))) from None
    except (TypeError, ValueError) as error:
        raise BridgeConfigError(f"{path}: {' '.join(str(error).split())}") from None
