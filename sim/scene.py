"""The simulated scene both backends build: a Panda on a table with a six-coloured cube (seed 003).

Every position here is in the robot base frame (origin at the base of link 0, x pointing away
from the robot over the table, z up), in metres.  The geometry copies robosuite's table arena
as its Lift task places it relative to the Panda (base 0.112 m above the table top, table centre
0.56 m in front of the base), so the two backends and the logged data agree.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from safety.reset import DEFAULT_HOME_Q  # noqa: F401 - re-exported: sim.scene.DEFAULT_HOME_Q

TABLE_TOP_Z = -0.112
"""Height of the table surface in the base frame, m (robosuite: table top 0.8 m, base 0.912 m)."""
TABLE_CENTER_XY = (0.56, 0.0)
"""Centre of the table top in the base frame, m."""
TABLE_SIZE_XY = (0.8, 0.8)
"""Table top extent along x and y, m."""
TABLE_THICKNESS = 0.05
"""Thickness of the table top slab, m."""

CUBE_EDGE = 0.05
"""Cube edge length, m (a 5 cm cube, seed 003)."""
CUBE_MASS = 0.1
"""Cube mass, kg."""
CUBE_START_POS = np.array([0.56, 0.0, TABLE_TOP_Z + CUBE_EDGE / 2])
"""Fixed start position of the cube's centre, m: on the table in front of the robot."""
CUBE_START_QUAT = np.array([1.0, 0.0, 0.0, 0.0])
"""Fixed start orientation (w, x, y, z): identity, which puts the +z (yellow) face up."""


@dataclasses.dataclass(frozen=True)
class CubeFace:
    """One face of the cube: its outward normal in the cube's own frame and its colour."""

    normal: tuple[float, float, float]
    colour: str
    rgb: tuple[float, float, float]


CUBE_FACES: tuple[CubeFace, ...] = (
    CubeFace((1.0, 0.0, 0.0), "red", (0.9, 0.1, 0.1)),
    CubeFace((-1.0, 0.0, 0.0), "cyan", (0.1, 0.8, 0.9)),
    CubeFace((0.0, 1.0, 0.0), "green", (0.1, 0.75, 0.15)),
    CubeFace((0.0, -1.0, 0.0), "blue", (0.1, 0.2, 0.9)),
    CubeFace((0.0, 0.0, 1.0), "yellow", (0.95, 0.85, 0.1)),
    CubeFace((0.0, 0.0, -1.0), "magenta", (0.85, 0.1, 0.8)),
)
"""The six faces in a fixed order; ``privileged['cube_top_face']`` is an index into this."""
CUBE_FACE_COLOURS: tuple[str, ...] = tuple(face.colour for face in CUBE_FACES)
"""Colour names in face order: index -> colour."""

# DEFAULT_HOME_Q (imported above from safety.reset): the home pose, tool tip in front of the cube.

TOOL_TIP_OFFSET = 0.1034
"""Distance from the flange to the tool tip along the flange z axis, m (Franka hand TCP)."""

GRIPPER_CLOSED_WIDTH = 0.0
"""Finger opening the gripper is held at, m: closed (seeds 001 and 003)."""


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    """A fixed camera: eye position, the point it looks at, the image's up direction (all in the
    base frame, m) and the vertical field of view in degrees."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float]
    fovy_deg: float


CAMERAS: dict[str, CameraSpec] = {
    # Seed 003: "a fixed camera positioned in front of the robot looking downwards at the table".
    "front": CameraSpec(eye=(1.05, 0.0, 0.42), target=(0.42, 0.0, -0.06), up=(0.0, 0.0, 1.0), fovy_deg=50.0),
    "side": CameraSpec(eye=(0.5, 1.1, 0.35), target=(0.5, 0.0, -0.05), up=(0.0, 0.0, 1.0), fovy_deg=50.0),
    "overhead": CameraSpec(eye=(0.56, 0.0, 1.2), target=(0.56, 0.0, -0.112), up=(1.0, 0.0, 0.0), fovy_deg=45.0),
}
"""Cameras every simulated backend provides, by name."""


def top_face_index(cube_quat_wxyz: np.ndarray) -> int:
    """Index into `CUBE_FACES` of the face whose outward normal points most nearly up."""
    w, x, y, z = np.asarray(cube_quat_wxyz, dtype=np.float64) / np.linalg.norm(cube_quat_wxyz)
    # Third row of the rotation matrix: the world-z component of each body axis.
    world_z_of_axes = np.array([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)])
    normals = np.array([face.normal for face in CUBE_FACES])
    return int(np.argmax(normals @ world_z_of_axes))


def quat_with_face_up(face: int) -> np.ndarray:
    """A cube orientation (w, x, y, z) that puts face ``face`` on top."""
    n = np.array(CUBE_FACES[face].normal)
    up = np.array([0.0, 0.0, 1.0])
    if np.allclose(n, up):
        return np.array([1.0, 0.0, 0.0, 0.0])
    if np.allclose(n, -up):
        return np.array([0.0, 1.0, 0.0, 0.0])
    axis = np.cross(n, up)
    axis /= np.linalg.norm(axis)
    half = np.arccos(np.clip(n @ up, -1.0, 1.0)) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * axis])
