"""Session configuration: one YAML file describes a whole collection session.

Every field is documented; unknown keys are rejected, and a bad file is refused before anything
is created on disk or the robot moves, with every wrong field named (`load_session_config`).
"""

from __future__ import annotations

import pathlib
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from collector.explorers import explorer_class
from robot_drivers import ActionSpace, backend_names, driver_class
from robot_drivers.addresses import check_zmq_address
from robot_drivers.config_file import ConfigFileError, read_yaml_file
from robot_drivers.registry import SIMULATED_BACKENDS
from safety.limits import SafetyLimits
from safety.reset import DEFAULT_HOME_Q as SAFETY_HOME_Q
from safety.robot_model import ROBOT_MODELS, limits_fields
from safety.strict_model import ConfigTooLarge, StrictModel, non_finite_paths, validation_problems
from store.spec import SessionSpec

SESSION_OWNED_OPTIONS = frozenset({"action_space", "control_rate_hz", "seed", "backend"})
"""Backend options set from the session's own fields, never in robot.options."""
DEFAULT_HOME_Q = tuple(float(x) for x in SAFETY_HOME_Q)
"""Home joint configuration, rad (`safety.reset.DEFAULT_HOME_Q`, as a tuple for the config field)."""
DEFAULT_EPISODE_STEPS = {ActionSpace.joint_velocity: 1000, ActionSpace.tip_delta: 200}
"""Seed 001: 1000-step episodes in joint space; seed 003: 200-step episodes in Cartesian space."""


_Strict = StrictModel


class RobotConfig(_Strict):
    backend: str = Field("robosuite", description=f"Robot backend: one of {', '.join(backend_names())}.")
    model: Literal[ROBOT_MODELS] = Field(  # type: ignore[valid-type]
        "panda",
        description="The arm: panda (Franka Emika Panda, FER) or fr3 (Franka Research 3). Its published limits "
        "(safety/robot_models/) are the defaults of the safety section's hardware fields; the simulators are "
        "Pandas; a bridge must serve this model.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend options (simulation: cameras, e.g. [{name: front, width: 84, height: 84}]). "
        "action_space, control_rate_hz and seed come from the session, not from here.",
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, backend: str) -> str:
        if backend not in backend_names():
            raise ValueError(f"unknown robot backend {backend!r}; known: {', '.join(backend_names())}")
        return backend


class ExplorerSettings(_Strict):
    name: str = Field(
        "random_linear",
        description="Explorer: random, random_linear (default, seed 001), gep, rnd, gcrnd (seed 003), sse (seed 001).",
    )
    observation: Literal["proprio", "proprio+object", "image"] = Field(
        "proprio",
        description="What the explorer sees: proprio (q, dq: 14 values); proprio+object adds the cube pose "
        "(privileged, simulation experiments only); image (the first camera).",
    )
    parameters: dict[str, Any] = Field(default_factory=dict, description="The explorer's own settings.")


class StopCondition(_Strict):
    steps: int | None = Field(
        None,
        gt=0,
        description="Stop after this many recorded control steps (finished episodes; resumed runs count "
        "the steps already recorded). Was `transitions` before (refused now, with a message).",
    )
    episodes: int | None = Field(None, gt=0, description="Stop after this many finished episodes.")
    wall_time_s: float | None = Field(None, gt=0, description="Stop after this many seconds.")

    def planned_steps(self, episode_steps: int) -> int | None:
        """The recorded steps this condition plans (``steps``, or ``episodes`` x ``episode_steps``, the
        smaller), None when it stops only on time or by request."""
        budgets = [b for b in (self.steps, self.episodes and self.episodes * episode_steps) if b]
        return min(budgets) if budgets else None


MAX_FLUSH_EVERY_STEPS = 10_000
"""Most steps one chunk of the `.partial` may gather before it is flushed."""
MAX_CHUNK_BUFFER_BYTES = 256 << 20
"""Largest memory one chunk buffer of the store may take (steps x bytes a step), bytes; the writer
keeps a handful of such buffers, so this bounds the store's memory to about a GiB."""
MAX_SEED = 2**32 - 1
"""Largest seed: numpy, torch and both simulators all take a 32-bit seed."""


class StoreSettings(_Strict):
    flush_every_steps: int = Field(
        50,
        gt=0,
        le=MAX_FLUSH_EVERY_STEPS,
        description="Steps per chunk flushed (fsynced) to the .partial file; a crash loses at most this many "
        "steps (or 1 s of them). Its memory (steps x bytes a step, images included) must stay under 256 MiB.",
    )
    free_space_floor_mb: float = Field(
        500.0,
        ge=0,
        le=1e9,
        description="Hold the robot when free disk falls below this, MB (plus the room the episode being "
        "recorded needs to be finished).",
    )


class SessionConfig(_Strict):
    """A collection session."""

    session_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        max_length=128,
        description="Folder name under data_root: letters, digits, '_', '.', '-', not starting with '.'; "
        "default: the start time.",
    )
    data_root: pathlib.Path = Field(pathlib.Path("data"), description="Where sessions are stored.")
    robot: RobotConfig = Field(default_factory=RobotConfig, description="Which arm and its options.")
    action_space: ActionSpace = Field(
        ActionSpace.joint_velocity, description="joint_velocity (rad/s) or tip_delta (m)."
    )
    control_rate_hz: float = Field(20.0, gt=0, le=1000, description="Control rate, Hz (seed 001: 20).")
    realtime: bool | None = Field(
        None, description="Pace the loop at control_rate_hz; default true on hardware, false in simulation."
    )
    episode_steps: int | None = Field(
        None, gt=0, description="Steps per episode; default 1000 for joint_velocity, 200 for tip_delta."
    )
    home_q: tuple[float, float, float, float, float, float, float] = Field(
        DEFAULT_HOME_Q, description="Home joint configuration, rad."
    )
    safety: SafetyLimits = Field(default_factory=SafetyLimits, description="Safety limits (safety/limits.py).")
    explorer: ExplorerSettings = Field(default_factory=ExplorerSettings, description="Exploration policy.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the explorer and the simulator, 0..2**32-1.")
    stop: StopCondition = Field(default_factory=StopCondition, description="When the session ends.")
    store: StoreSettings = Field(default_factory=StoreSettings, description="Episode store settings.")
    control_address: str = Field(
        "tcp://127.0.0.1:5555",
        description="ZMQ REP address for operator commands: tcp://HOST:PORT or ipc:///PATH; bound before "
        "anything is created on disk.",
    )
    telemetry_address: str = Field(
        "tcp://127.0.0.1:5556", description="ZMQ PUB address for telemetry (tcp://HOST:PORT or ipc:///PATH)."
    )

    @field_validator("control_address", "telemetry_address")
    @classmethod
    def _zmq_address(cls, address: str) -> str:
        return check_zmq_address(address)

    @model_validator(mode="before")
    @classmethod
    def _limits_of_the_robot_model(cls, data: Any) -> Any:
        """The safety section's hardware fields default to the arm's published limits."""
        if not isinstance(data, dict):
            return data
        robot, safety = data.get("robot"), data.get("safety", {})
        model = robot.get("model", "panda") if isinstance(robot, dict) else getattr(robot, "model", "panda")
        if model not in ROBOT_MODELS or not isinstance(safety, dict):
            return data  # the fields' own validation names the problem
        return {**data, "safety": limits_fields(model, safety)}

    @property
    def simulated(self) -> bool:
        return self.robot.backend in SIMULATED_BACKENDS

    @property
    def resolved_episode_steps(self) -> int:
        return self.episode_steps or DEFAULT_EPISODE_STEPS[self.action_space]

    @property
    def resolved_realtime(self) -> bool:
        return (not self.simulated) if self.realtime is None else self.realtime

    def driver_options(self) -> dict[str, Any]:
        """Options for the robot backend, with the session-wide fields filled in."""
        options = {"action_space": self.action_space.value, "control_rate_hz": self.control_rate_hz}
        if self.simulated:
            options |= {"backend": self.robot.backend, "seed": self.seed}
        return {**self.robot.options, **options}

    def resolved_robot_options(self) -> dict[str, Any]:
        """``robot.options`` through the backend's typed options model (its ``config_class``):
        every default filled in, without the session-wide fields (`driver_options` adds those)."""
        config_class = getattr(driver_class(self.robot.backend), "config_class", None)
        if config_class is None:
            return dict(self.robot.options)
        options = self.driver_options() | {"action_space": ActionSpace.joint_velocity.value}
        resolved = config_class(**options).model_dump(mode="json")
        return {k: v for k, v in resolved.items() if k not in SESSION_OWNED_OPTIONS}

    def resolved(self, session_id: str) -> SessionConfig:
        """This config as the session records it: its id and the backend's resolved options."""
        robot = self.robot.model_copy(update={"options": self.resolved_robot_options()})
        return self.model_copy(update={"session_id": session_id, "robot": robot})

    def session_spec(self) -> SessionSpec:
        """What a session of this (resolved) config records (`store.spec`)."""
        options = self.resolved_robot_options()
        return SessionSpec(
            session_id=self.session_id or "",
            backend=self.robot.backend,
            simulated=self.simulated,
            robot_options=options,
            action_space=self.action_space.value,
            control_rate_hz=self.control_rate_hz,
            episode_steps=self.resolved_episode_steps,
            home_q=tuple(self.home_q),
            cameras=tuple(options.get("cameras", ())),
            observation=self.explorer.observation,
            explorer=self.explorer.name,
            safety=self.safety.model_dump(mode="json"),
        )

    @model_validator(mode="after")
    def _consistent(self) -> SessionConfig:
        if self.explorer.observation == "image" and not self.robot.options.get("cameras", True):
            raise ValueError("explorer.observation: image needs at least one camera in robot.options.cameras")
        if self.simulated and self.robot.model != "panda":
            raise ValueError(f"robot.model: the simulated arms are Pandas, not {self.robot.model}")
        if self.explorer.observation == "proprio+object" and not self.simulated:
            raise ValueError("explorer.observation: proprio+object needs privileged state, only in simulation")
        home = np.array(self.home_q)
        low, high = self.safety.q_lower, self.safety.q_upper
        if np.any(home < low) or np.any(home > high):
            raise ValueError(f"home_q: {list(home)} lies outside the safety joint limits")
        if self.control_address == self.telemetry_address:
            raise ValueError(f"telemetry_address: the same as control_address ({self.control_address})")
        clash = SESSION_OWNED_OPTIONS & set(self.robot.options)
        if clash:
            raise ValueError(f"robot.options: {sorted(clash)} are session fields; set them at the top level")
        return self


class ConfigError(ValueError):
    """A session config file that cannot be used; the message names every bad field."""


def _format_errors(error: ValidationError, prefix: str = "") -> list[str]:
    return validation_problems(error, prefix)


def _option_problems(data: dict[str, Any]) -> list[str]:
    """Errors in the backend's and the explorer's own options, checked from the raw mapping so
    they are reported together with the session's own errors."""
    problems: list[str] = []
    robot = data.get("robot") if isinstance(data.get("robot"), dict) else {}
    backend = robot.get("backend", RobotConfig.model_fields["backend"].default)
    options = robot.get("options", {})
    if backend in backend_names() and isinstance(options, dict):
        config_class = getattr(driver_class(backend), "config_class", None)
        owned = ("action_space", "control_rate_hz", "seed") if backend in SIMULATED_BACKENDS else ("control_rate_hz",)
        session = {k: data[k] for k in owned if k in data}
        if config_class is not None:
            filled = {**options, **session}
            if backend in SIMULATED_BACKENDS:
                filled["backend"] = backend
            filled["action_space"] = ActionSpace.joint_velocity.value  # the filter sends joint velocities
            try:
                config_class(**filled)
            except ValidationError as error:
                problems += [p for p in _format_errors(error, "robot.options.") if p.split(":")[0] != "robot.options."]
            except TypeError as error:
                problems.append(f"robot.options: {error}")
    explorer = data.get("explorer") if isinstance(data.get("explorer"), dict) else {}
    name = explorer.get("name", ExplorerSettings.model_fields["name"].default)
    parameters = explorer.get("parameters", {})
    try:
        cls = explorer_class(name) if isinstance(name, str) else None
    except KeyError as error:
        problems.append(f"explorer.name: {error.args[0]}")
        cls = None
    if cls is not None and isinstance(parameters, dict):
        try:
            cls.config_class(**parameters)
        except ValidationError as error:
            problems += _format_errors(error, "explorer.parameters.")
        observation = explorer.get("observation", "proprio")
        kind = "image" if observation == "image" else "vector"
        if kind not in cls.observation_kinds:
            problems.append(f"explorer.observation: explorer {name!r} cannot act on {observation!r} observations")
    return problems


RENAMED_KEYS = {("stop", "transitions"): "stop.steps"}
"""Keys of earlier pandalab versions, refused with the new name: `stop.transitions` counted recorded
control steps, which the collector now calls steps (transitions are (s, a, s') pairs, T - 1 per episode)."""


def _renamed_problems(data: dict[str, Any]) -> list[str]:
    """One problem per renamed key; the key is removed from ``data`` (the caller's copy) so that it is
    not also reported as unknown."""
    problems = []
    for (section, key), new in RENAMED_KEYS.items():
        part = data.get(section)
        if isinstance(part, dict) and key in part:
            data[section] = {k: v for k, v in part.items() if k != key}
            problems.append(f"{section}.{key}: renamed to {new} (it counts recorded control steps)")
    return problems


def parse_session_config(data: Any, source: str = "config") -> SessionConfig:
    """Validate a config mapping, including the backend's and the explorer's own options; the
    `ConfigError` lists every problem found, one per line, each starting with its field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        non_finite = non_finite_paths(data)
    except ConfigTooLarge as error:
        raise ConfigError(f"{source}: {error}") from None
    if non_finite:
        problems = [
            f"{where.split(' = ')[0]}: must be a finite number, got {where.split(' = ')[1]}" for where in non_finite
        ]
        raise ConfigError(_one_per_line(source, problems))
    data = dict(data)  # renamed keys are taken out of this copy, never out of the caller's mapping
    problems = _option_problems(data) + _renamed_problems(data)
    config = None
    try:
        config = SessionConfig(**data)
    except ValidationError as error:
        problems = _format_errors(error) + problems
    if config is not None and not problems:
        problems += _chunk_memory_problems(config, data)
    if problems or config is None:
        raise ConfigError(_one_per_line(source, problems))
    return config


def _one_per_line(source: str, problems: list[str]) -> str:
    """Each problem on its own line, each naming the file and the field: ``FILE: FIELD: what``."""
    return "\n".join(f"{source}: {problem}" for problem in problems)


def _chunk_memory_problems(config: SessionConfig, data: dict[str, Any]) -> list[str]:
    """The store keeps whole chunks of steps in memory: refuse a flush interval whose buffer
    (flush_every_steps x bytes a step, the cameras' frames included) exceeds MAX_CHUNK_BUFFER_BYTES."""
    cameras = config.robot.options.get("cameras")
    if cameras is None:
        config_class = getattr(driver_class(config.robot.backend), "config_class", None)
        default = config_class.model_fields.get("cameras") if config_class is not None else None
        cameras = [c.model_dump() for c in default.default] if default is not None and default.default else []
    frame_bytes = sum(int(c.get("width", 84)) * int(c.get("height", 84)) * 3 for c in cameras if isinstance(c, dict))
    step_bytes = frame_bytes + 512  # proprioception, action, command, privileged state, time
    chunk_bytes = config.store.flush_every_steps * step_bytes
    if chunk_bytes > MAX_CHUNK_BUFFER_BYTES:
        most = MAX_CHUNK_BUFFER_BYTES // step_bytes
        return [
            f"store.flush_every_steps: {config.store.flush_every_steps} steps of {step_bytes} bytes need "
            f"{chunk_bytes / 2**20:.0f} MiB per chunk buffer; at most {most} steps with these cameras"
        ]
    return []


def load_session_config(path: str | pathlib.Path) -> SessionConfig:
    """Read and validate a YAML session config; `ConfigError` names the file and every bad field."""
    try:
        data = read_yaml_file(path, "session config")
    except ConfigFileError as error:
        raise ConfigError(str(error)) from None
    return parse_session_config(data, source=str(path))


def dump_session_config(config: SessionConfig) -> str:
    """The fully resolved config as YAML (written once to session.yaml)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
