"""What a session records, resolved once: the one description the collector, every explorer, the
offline dataset, evaluation and the exports read.

The collector resolves its config into a `SessionSpec` when a session starts (the backend's typed
options with their defaults filled in, episode length, cameras, the explorer's observation) and
the store writes it beside session.yaml as ``session_spec.json``.  Everything that reads a
session takes it from `read_session_spec`; for a session recorded before the spec existed (no
``session_spec.json``) it is derived from session.yaml by `spec_from_session_yaml`, the only
place that knows the defaults older sessions left implicit.

The observation an explorer sees is part of the spec: ``proprio`` is (q, dq) (14 values),
``proprio+object`` adds the cube's position and orientation from the simulator's privileged state
(21), ``image`` is the first camera's image.  `SessionSpec.observation` builds it from a step's
fields (live, from a `RobotState`'s record) or from an episode's arrays (replay, datasets), so
adding a field to what is observed is one change, here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SPEC_FILE = "session_spec.json"
"""The spec's file inside a session directory, written atomically with the session."""
SPEC_FORMAT = "pandalab-session-spec"
SPEC_VERSION = 1

ObservationKind = Literal["proprio", "proprio+object", "image"]
OBSERVATION_FIELDS: dict[str, tuple[str, ...]] = {
    "proprio": ("obs/q", "obs/dq"),
    "proprio+object": ("obs/q", "obs/dq", "privileged/cube_pos", "privileged/cube_quat"),
}
"""Store fields making up each vector observation, in order."""
FIELD_SIZES: dict[str, int] = {"obs/q": 7, "obs/dq": 7, "privileged/cube_pos": 3, "privileged/cube_quat": 4}
"""Values per step of each field a vector observation is made of."""
ACTION_DIMS = {"joint_velocity": 7, "tip_delta": 3}
"""Values of an explorer's action per action space (rad/s per joint; m per step along x, y, z)."""

LEGACY_SIMULATED_BACKENDS = ("robosuite", "pybullet")
"""The simulated backends of sessions recorded before the spec (`spec_from_session_yaml` only:
newer sessions record ``simulated`` themselves)."""
LEGACY_DEFAULT_EPISODE_STEPS = {"joint_velocity": 1000, "tip_delta": 200}
"""Episode length of sessions whose session.yaml left episode_steps out, per action space."""
LEGACY_DEFAULT_SIM_CAMERAS = ({"name": "front", "width": 84, "height": 84},)
"""The cameras of simulated sessions whose robot.options left cameras out (sim.config.SimConfig's)."""
LEGACY_DEFAULT_HOME_Q = (0.0, 0.19634954, 0.0, -2.61799388, 0.0, 2.94159265, 0.78539816)
"""The reset pose, rad, of sessions whose session.yaml left home_q out (safety.reset.DEFAULT_HOME_Q)."""


class SpecError(ValueError):
    """A session whose spec cannot be read; the message is one line naming the file."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraSpec(_Spec):
    """One camera recorded at every step as ``obs/images/<name>``: uint8 (height, width, 3)."""

    name: str = Field(description="Camera name; the store field is obs/images/<name>.")
    width: int = Field(gt=0, description="Image width, pixels.")
    height: int = Field(gt=0, description="Image height, pixels.")


class SessionSpec(_Spec):
    """What one session records and how (resolved: no default is left for a reader to guess)."""

    format: Literal["pandalab-session-spec"] = Field(SPEC_FORMAT, description="Identifies the file.")
    version: int = Field(SPEC_VERSION, description="Version of this description.")
    session_id: str = Field(description="The session's directory name.")
    backend: str = Field(description="Robot backend the session drove (robot_drivers registry name).")
    simulated: bool = Field(description="Whether the backend is a simulator (privileged state recorded).")
    robot_options: dict[str, Any] = Field(
        default_factory=dict, description="The backend's options, resolved by its typed options model."
    )
    action_space: Literal["joint_velocity", "tip_delta"] = Field(description="What the explorer's actions are.")
    control_rate_hz: float = Field(gt=0, description="Control rate, Hz: one recorded step per period.")
    episode_steps: int = Field(gt=0, description="Steps per complete episode.")
    home_q: tuple[float, ...] = Field(min_length=7, max_length=7, description="Reset pose, rad.")
    cameras: tuple[CameraSpec, ...] = Field((), description="Cameras recorded at every step, in order.")
    observation: ObservationKind = Field(description="What the explorer saw (see the module docstring).")
    explorer: str = Field(description="The explorer's registry name.")
    safety: dict[str, Any] = Field(
        default_factory=dict, description="The safety limits (safety.limits.SafetyLimits fields) in force."
    )

    # ---- derived ---------------------------------------------------------------------------
    @property
    def action_dim(self) -> int:
        return ACTION_DIMS[self.action_space]

    @property
    def explorer_camera(self) -> str | None:
        """The camera an image explorer sees: the first one recorded."""
        return self.cameras[0].name if self.cameras else None

    def observation_fields(self, kind: str | None = None) -> tuple[str, ...]:
        """Store fields making up an observation of ``kind`` (default: the explorer's)."""
        kind = kind or self.observation
        if kind == "image":
            if self.explorer_camera is None:
                raise SpecError(f"session {self.session_id}: an image observation needs a camera; none recorded")
            return (f"obs/images/{self.explorer_camera}",)
        try:
            return OBSERVATION_FIELDS[kind]
        except KeyError:
            raise SpecError(f"unknown observation kind {kind!r}; known: proprio, proprio+object, image") from None

    def observation_shape(self, kind: str | None = None) -> tuple[int, ...]:
        """Shape of one step's observation of ``kind``: (values,) or (height, width, 3)."""
        kind = kind or self.observation
        if kind == "image":
            camera = self.cameras[0] if self.cameras else None
            if camera is None:
                raise SpecError(f"session {self.session_id}: an image observation needs a camera; none recorded")
            return (camera.height, camera.width, 3)
        return (sum(FIELD_SIZES[name] for name in self.observation_fields(kind)),)

    def observation_from(self, fields: Mapping[str, Any], kind: str | None = None) -> np.ndarray:
        """The observation of ``kind`` from a mapping of store field -> value: one step's values
        (a step record, shape (n,)) or an episode's arrays (shape (T, n)); vectors are float64
        concatenated along the last axis, an image is returned as it is."""
        names = self.observation_fields(kind)
        if (kind or self.observation) == "image":
            return fields[names[0]]
        parts = [np.asarray(fields[name], dtype=np.float64) for name in names]
        if parts[0].ndim > 1:
            parts = [part.reshape(len(part), -1) for part in parts]
        return np.concatenate(parts, axis=-1)

    def env_spec(self) -> dict[str, Any]:
        """How to rebuild the robot the data came from, for evaluation (`learning.evaluate`)."""
        return {
            "backend": self.backend,
            "cameras": [camera.model_dump() for camera in self.cameras],
            "control_rate_hz": self.control_rate_hz,
            "episode_steps": self.episode_steps,
            "home_q": list(self.home_q),
            "safety": dict(self.safety),
        }

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1) + "\n"


def spec_from_session_yaml(data: Mapping[str, Any], session_id: str) -> SessionSpec:
    """The spec of a session recorded before ``session_spec.json`` existed, from its session.yaml
    mapping, filling what those sessions left implicit with the defaults of their time.  Raises
    `SpecError` (one line) on a setting of the wrong type."""
    try:
        robot = _mapping(data.get("robot"), "robot")
        backend = str(robot.get("backend", "robosuite"))
        simulated = backend in LEGACY_SIMULATED_BACKENDS
        options = _mapping(robot.get("options"), "robot.options")
        cameras = options.get("cameras", list(LEGACY_DEFAULT_SIM_CAMERAS) if simulated else [])
        if not isinstance(cameras or [], list) or not all(isinstance(c, dict) for c in cameras or []):
            raise TypeError("robot.options.cameras is not a list of mappings")
        cameras = [{"name": "front", "width": 84, "height": 84, **camera} for camera in cameras or []]
        action_space = data.get("action_space", "joint_velocity")
        explorer = _mapping(data.get("explorer"), "explorer")
        return SessionSpec(
            session_id=str(data.get("session_id") or session_id),
            backend=backend,
            simulated=simulated,
            robot_options=options,
            action_space=action_space,
            control_rate_hz=float(data.get("control_rate_hz", 20.0)),
            episode_steps=int(data.get("episode_steps") or LEGACY_DEFAULT_EPISODE_STEPS.get(action_space, 1000)),
            home_q=tuple(float(x) for x in data.get("home_q", LEGACY_DEFAULT_HOME_Q)),
            cameras=tuple(cameras),
            observation=explorer.get("observation", "proprio"),
            explorer=str(explorer.get("name", "random_linear")),
            safety=_mapping(data.get("safety"), "safety"),
        )
    except ValidationError as error:
        raise SpecError(_first_problem(error)) from None
    except (TypeError, ValueError, AttributeError) as error:
        raise SpecError(" ".join(str(error).split())) from None


def read_session_spec(session_dir: str | Path) -> SessionSpec:
    """The spec of the session at ``session_dir``: its ``session_spec.json``, or for an older
    session the one derived from its session.yaml.  `SpecError`, one line naming the file, when
    neither can be read."""
    from ._format import SESSION_YAML
    from ._read import read_session_yaml

    session_dir = Path(session_dir)
    path = session_dir / SPEC_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read: {' '.join(str(error).split())}") from None
    if text is not None:
        try:
            return SessionSpec.model_validate_json(text)
        except ValidationError as error:
            raise SpecError(f"{path}: damaged {SPEC_FILE}: {_first_problem(error)}") from None
    yaml_path = session_dir / SESSION_YAML
    data, problem = read_session_yaml(session_dir)
    if problem is not None:
        raise SpecError(f"{yaml_path}: {'missing' if problem == 'missing' else 'damaged session.yaml: ' + problem}")
    try:
        return spec_from_session_yaml(data, session_dir.name)
    except SpecError as error:
        raise SpecError(f"{yaml_path}: damaged session.yaml: {error}") from None


def _mapping(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{name} is a {type(value).__name__}, not a mapping")
    return dict(value)


def _first_problem(error: ValidationError) -> str:
    errors = error.errors()
    if not errors:
        return " ".join(str(error).split())
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}" if where else f"{first['msg']}{more}"
