"""Fit the capsules of safety/collision_model.py to both simulators' Panda collision meshes.

    .venv/bin/python benchmarks/fit_collision_capsules.py                # fit, print the table (~30 s)
    .venv/bin/python benchmarks/fit_collision_capsules.py --pairs        # pairs of the stored table (~15 s)
    .venv/bin/python benchmarks/fit_collision_capsules.py --wrist        # map, fit, verify the wrist exclusion (~15 s)
    .venv/bin/python benchmarks/fit_collision_capsules.py --verify-wrist # verify the stored one (~5 s)
    .venv/bin/python benchmarks/fit_collision_capsules.py --sweeps       # home, joint 7/6 sweeps vs the engines
    .venv/bin/python benchmarks/fit_collision_capsules.py --timing       # cost of the clearances

What is fitted.  For each part of the arm (links 0..7; the hand, and its fingers closed and fully
open; the simulated mount as far as it rises above the table top) the collision geometry of BOTH
simulators, placed by each engine's own model:

- PyBullet (pybullet_data ``franka_panda/panda.urdf``): the OBJ collision meshes
  (``meshes/collision/*.obj``) read from the files and placed by the URDF link frames and the
  collision origins (the right finger's is turned by pi about z), together with the convex hulls
  PyBullet actually collides with (``getMeshData``, placed by the links' inertial frames);
- MuJoCo (our robosuite-assembled scene, sim/robosuite_backend.py): every collision geom of the
  compiled model (robosuite's ``robots/panda/meshes/link*.stl``, the gripper's
  ``grippers/meshes/panda_gripper/{hand,finger}.stl`` and the finger pad boxes), placed by the
  compiled model's geom frames (MuJoCo recentres meshes and moves the geom frame to match), and the
  mount (robosuite's RethinkMount: pedestal cylinder and controller box) clipped at the table top.

Every point is taken to the base frame by the engine at several random configurations and then
into the frame of `safety.kinematics.frames` the part is attached to; the spread of a point over
the configurations (how well the engine's chain agrees with the DH frames) is printed.  Each shape
is kept apart (`collect_shapes`): both engines collide with the convex hull of each.

The capsules (`PIECES`): one per part, or several, each covering the part's share of a cell (an
intersection of half-spaces in the part's frame; a part's cells cover space).  A shape's hull cut
by a plane is the hull of its vertices on the kept side and of its edges' crossings of the plane
(`clip_hull`), so a capsule containing those points of every shape (`cell_points`) contains the
part's share of its cell, and the part's capsules together contain the part.  The fit: the
minimum-volume capsule containing the points.  Over the segment's line (direction and offset, four
numbers; Nelder-Mead from the principal axes and some random restarts) and the radius (bounded
scalar search), the shortest segment that keeps every point within the radius is computed in
closed form.  Then the endpoints are rounded to 0.1 mm and the radius set to the largest point
distance to the rounded segment plus `PAD`, rounded up to 0.1 mm.

The pairs (``--pairs``, on the table stored in safety/collision_model.py): per pair of capsules on
non-adjacent links, how often they overlap over 200,000 configurations drawn within Franka's
joint limits, and for those never seen to overlap a branch-and-bound proof (`prove_separated`)
that they cannot, which is what `NEVER_TOUCHING_PAIRS` lists.

The wrist (``--wrist``): link 5 - link 7 and link 6 - hand/fingers depend on q6 and q7 alone.
`wrist_map` is a branch and bound over (q6, q7) with the engines' own distances (`WristEngines`)
and Lipschitz bounds; the cells it cannot clear are where a contact may occur, `fit_wrist_boundary`
puts a piecewise linear boundary `collision_model.WRIST_MARGIN` above them, and
`verify_wrist_exclusion` clears every cell outside that boundary.

The sweeps (``--sweeps``): the smallest checked capsule clearance against both engines' distances
at home and turning joints 7 and 6 from it (`sweeps`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safety import kinematics
from safety.limits import FRANKA_Q_MAX, FRANKA_Q_MIN, SIM_TABLE_TOP_Z

PAD = 0.005
"""Added to every fitted radius, m.  Covers PyBullet's 1 mm collision margin around each convex
hull and its 0.5 mm contact report distance, the 0.5 mm by which robosuite's hand sits nearer
link 7 than Franka's flange (0.1065 m against 0.107 m), and rounding."""

PARTS = (
    "link0",
    "pedestal",
    "controller_box",
    "link1",
    "link2",
    "link3",
    "link4",
    "link5",
    "link6",
    "link7",
    "hand",
    "fingers",
)
"""Parts the capsules cover, one capsule each, base to hand: link 0 and the simulated mount
(robosuite's RethinkMount) as far as it rises above the table top, i.e. its pedestal (a cylinder
whose top is 3 cm above the robot's base) and its controller box (7 mm above the table top); links
1..7; the hand and its two fingers.  Each part is a set of whole convex collision shapes (the
hand's mesh; the finger meshes and pads), so a capsule containing a part's points contains every
shape of it, as the engines see it."""
PART_LINK = {**{f"link{i}": i for i in range(8)}, "hand": 8, "fingers": 8, "pedestal": 0, "controller_box": 0}
"""Link number (`safety.collision_model.CAPSULE_LINK`) of each part: the mount is fixed to link 0
(MuJoCo reports its contacts as link 0's), the fingers belong to the hand (8)."""
PART_FRAME = {
    **{f"link{i}": i - 1 for i in range(1, 8)},
    "link0": -1,
    "hand": 8,
    "fingers": 8,
    "pedestal": -1,
    "controller_box": -1,
}
"""Index into `kinematics.frames`'s output the part is attached to (-1: the base frame).  Link i's
frame is DH frame i (Franka's frames are the URDF's link frames); the hand's is the tool-tip frame
(the hand frame moved `TOOL_TIP_OFFSET` along its z axis)."""
FINGER_OPENINGS = (0.0, 0.04)
"""Finger joint positions the hand's capsule must cover, m each: closed and fully open."""
MOUNT_CIRCLE_POINTS = 720
"""Points per circle sampling the pedestal cylinder's rims (the chord error at r = 0.18 m is
0.18 * (1 - cos(pi / 720)) < 2 microns)."""

PYBULLET_PART = {
    **{f"panda_link{i}": f"link{i}" for i in range(8)},
    "panda_hand": "hand",
    "panda_leftfinger": "fingers",
    "panda_rightfinger": "fingers",
}


_TUBE_NORMAL = (0.0, 0.9713, -0.2380)
"""Normal, in link 5's frame, of the plane that halves link 5's forearm tube lengthwise: it contains
the x axis and the tube's slanted axis (y = 0.065 + 0.245 z, from the middle of the elbow-end rim to
the middle of the wrist housing), so each half is a slab as long as the tube and half as wide."""
_TUBE_OFFSET = 0.0631
"""Offset of that plane (normal . x = offset; 0.065 / |(1, -0.245)|), m."""

PIECES: tuple[tuple[str, str, tuple[tuple[tuple[float, float, float], float], ...]], ...] = (
    ("link0", "link0", ()),
    ("pedestal", "pedestal", ()),
    ("controller_box", "controller_box", ()),
    ("link1", "link1", ()),
    ("link2", "link2", ()),
    ("link3", "link3", ()),
    ("link4", "link4", ()),
    ("link5_wrist", "link5", (((0.0, 0.0, -1.0), 0.0),)),
    ("link5_tube_a", "link5", (((0.0, 0.0, 1.0), 0.0), (_TUBE_NORMAL, _TUBE_OFFSET))),
    ("link5_tube_b", "link5", (((0.0, 0.0, 1.0), 0.0), (tuple(-v for v in _TUBE_NORMAL), -_TUBE_OFFSET))),
    ("link6", "link6", ()),
    ("link7", "link7", ()),
    ("hand", "hand", ()),
    ("fingers", "fingers", ()),
)
"""The capsules, base to hand: (capsule name, part, cell).  A capsule covers the part of its part's
collision geometry inside its cell, the points x with n . x <= d for every (n, d) of the cell, in
the part's frame (an empty cell is all of space).  The cells of one part cover all of space (they
are the leaves of a binary partition: each plane's two sides), so the capsules of a part together
cover the whole part.  Link 5 is cut by the plane z = 0 of its frame into its wrist housing (a
cylinder about joint 6's axis, y) and its forearm tube, and the tube lengthwise into two halves:
one capsule for the whole link is 2 cm fatter than the housing all round, and the hand turns
about the housing (joints 6 and 7).  The other parts are single capsules: each is one convex blob
(the engines collide with the convex hull of each mesh), which one capsule fits about as well as
two (for link 2 and link 5, no plane cutting them in two lowers the total volume: link 5's split
pays in volume for being tight around the housing, where the hand passes), and every extra
capsule adds pairs to check."""


# ---- geometry from the engines -------------------------------------------------------------------
def _obj_vertices(path: str) -> np.ndarray:
    with open(path, encoding="utf-8") as file:
        return np.array([[float(v) for v in line.split()[1:4]] for line in file if line.startswith("v ")])


def _rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


class PyBulletGeometry:
    """The pybullet_data Panda loaded as the PyBullet backend loads it; `points(q, finger)` gives
    each part's collision points in the base frame (the robot's base is at the world origin)."""

    def __init__(self) -> None:
        import xml.etree.ElementTree as ET

        import pybullet
        import pybullet_data

        self.p = pybullet
        self.client = pybullet.connect(pybullet.DIRECT)
        urdf = os.path.join(pybullet_data.getDataPath(), "franka_panda", "panda.urdf")
        self.robot = pybullet.loadURDF(
            urdf, useFixedBase=True, flags=pybullet.URDF_USE_SELF_COLLISION, physicsClientId=self.client
        )
        self.link_names = {-1: pybullet.getBodyInfo(self.robot, physicsClientId=self.client)[0].decode()}
        joints = {}
        for index in range(pybullet.getNumJoints(self.robot, physicsClientId=self.client)):
            info = pybullet.getJointInfo(self.robot, index, physicsClientId=self.client)
            self.link_names[index] = info[12].decode()
            joints[info[1].decode()] = index
        self.arm_joints = [joints[f"panda_joint{i}"] for i in range(1, 8)]
        self.finger_joints = [joints["panda_finger_joint1"], joints["panda_finger_joint2"]]
        # The mesh files with their collision origins in the link frame, from the URDF.
        self.file_points: dict[int, np.ndarray] = {}
        root = ET.parse(urdf).getroot()
        index_of = {name: index for index, name in self.link_names.items()}
        folder = os.path.dirname(urdf)
        for link in root.iter("link"):
            clouds = []
            for collision in link.iter("collision"):
                origin = collision.find("origin")
                xyz = [float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()]
                rpy = [float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()]
                mesh = collision.find("geometry/mesh")
                path = os.path.join(folder, mesh.get("filename").replace("package://", ""))
                clouds.append(_obj_vertices(path) @ _rpy_matrix(*rpy).T + np.array(xyz))
            if clouds:
                self.file_points[index_of[link.get("name")]] = np.concatenate(clouds)

    def set(self, q: np.ndarray, finger: float = 0.0) -> None:
        for joint, angle in zip(self.arm_joints, q, strict=True):
            self.p.resetJointState(self.robot, joint, float(angle), physicsClientId=self.client)
        for joint in self.finger_joints:
            self.p.resetJointState(self.robot, joint, float(finger), physicsClientId=self.client)

    def _pose(self, link: int, urdf_frame: bool) -> tuple[np.ndarray, np.ndarray]:
        if link < 0:
            position, orientation = self.p.getBasePositionAndOrientation(self.robot, physicsClientId=self.client)
            if urdf_frame:  # the base's URDF frame: its inertial frame less the inertial origin
                rotation = np.array(self.p.getMatrixFromQuaternion(orientation)).reshape(3, 3)
                inertial = self.p.getDynamicsInfo(self.robot, -1, physicsClientId=self.client)[3]
                return np.array(position) - rotation @ np.array(inertial), rotation
        else:
            state = self.p.getLinkState(self.robot, link, computeForwardKinematics=True, physicsClientId=self.client)
            position, orientation = (state[4], state[5]) if urdf_frame else (state[0], state[1])
        return np.array(position), np.array(self.p.getMatrixFromQuaternion(orientation)).reshape(3, 3)

    def shapes(self, q: np.ndarray, finger: float = 0.0) -> list[tuple[str, str, np.ndarray]]:
        """(part, label, base-frame points) of every convex collision shape: per link, its mesh
        file's vertices (PyBullet collides with their convex hull) and the hull PyBullet built."""
        self.set(q, finger)
        out: list[tuple[str, str, np.ndarray]] = []
        for link, name in self.link_names.items():
            part = PYBULLET_PART.get(name)
            if part is None:
                continue
            if link in self.file_points:
                position, rotation = self._pose(link, urdf_frame=True)
                out.append((part, f"pybullet {name} file", self.file_points[link] @ rotation.T + position))
            count, vertices = self.p.getMeshData(self.robot, link, physicsClientId=self.client)
            if count:  # hull vertices in the link's inertial frame
                position, rotation = self._pose(link, urdf_frame=False)
                out.append((part, f"pybullet {name} hull", np.array(vertices) @ rotation.T + position))
        return out

    def points(self, q: np.ndarray, finger: float = 0.0) -> dict[str, np.ndarray]:
        """Base-frame collision points per part: the mesh files' vertices and the engine's hulls."""
        return _by_part(self.shapes(q, finger))

    def close(self) -> None:
        self.p.disconnect(physicsClientId=self.client)


class MujocoGeometry:
    """Our robosuite-assembled MuJoCo scene (sim/robosuite_backend.py); `points(q, finger)` gives
    each part's collision points in the base frame."""

    def __init__(self, table_top_z: float = SIM_TABLE_TOP_Z) -> None:
        import mujoco

        from sim.robosuite_backend import (
            ARM_JOINTS,
            FINGER_JOINTS,
            MOUNT_PREFIX,
            ROBOT_PREFIX,
            _compiled_scene,
            _part_of_body,
        )

        self.mujoco = mujoco
        model, base_pos = _compiled_scene()
        self.model, self.base_pos = model, base_pos
        self.data = mujoco.MjData(model)
        self.table_top_z = table_top_z
        self.arm_qpos = [model.jnt_qposadr[model.joint(name).id] for name in ARM_JOINTS]
        self.finger_qpos = [model.jnt_qposadr[model.joint(name).id] for name in FINGER_JOINTS]
        self.geoms: list[tuple[int, str]] = []
        for g in range(model.ngeom):
            if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
                continue  # visual only
            body = model.body(model.geom_bodyid[g]).name
            part = _part_of_body(body)
            if body == MOUNT_PREFIX + "pedestal":
                part = "pedestal"
            elif body == MOUNT_PREFIX + "controller_box":
                part = "controller_box"
            elif body.startswith(MOUNT_PREFIX) or (part is None and body.startswith(ROBOT_PREFIX)):
                part = "mount_below_table"  # the pedestal's feet: checked below to be under the table top
            if part is None:
                continue  # table, floor, cube
            part = "fingers" if part in ("left_finger", "right_finger") else part
            self.geoms.append((g, part))

    def _local_points(self, g: int) -> np.ndarray:
        """Points of geom g in its own frame whose convex hull is the geom (meshes: MuJoCo collides
        with their convex hulls; boxes: the corners; cylinders: points on both rims)."""
        model, mj = self.model, self.mujoco
        kind, size = model.geom_type[g], model.geom_size[g]
        if kind == mj.mjtGeom.mjGEOM_MESH:
            mesh = model.geom_dataid[g]
            start, count = model.mesh_vertadr[mesh], model.mesh_vertnum[mesh]
            return model.mesh_vert[start : start + count].astype(np.float64)
        if kind == mj.mjtGeom.mjGEOM_BOX:
            corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1).T
            return corners * size[:3]
        if kind == mj.mjtGeom.mjGEOM_CYLINDER:
            angle = np.linspace(0.0, 2 * np.pi, MOUNT_CIRCLE_POINTS, endpoint=False)
            circle = np.stack([size[0] * np.cos(angle), size[0] * np.sin(angle)], axis=-1)
            rims = [np.column_stack([circle, np.full(len(circle), z)]) for z in (-size[1], size[1])]
            return np.concatenate(rims)
        raise ValueError(f"geom {model.geom(g).name}: type {kind} not handled")

    def shapes(self, q: np.ndarray, finger: float = 0.0) -> list[tuple[str, str, np.ndarray]]:
        """(part, label, base-frame points) of every convex collision geom of the robot and mount."""
        model, data = self.model, self.data
        data.qpos[self.arm_qpos] = q
        data.qpos[self.finger_qpos] = [finger, -finger]
        self.mujoco.mj_kinematics(model, data)
        out: list[tuple[str, str, np.ndarray]] = []
        for g, part in self.geoms:
            local = self._local_points(g)
            world = local @ data.geom_xmat[g].reshape(3, 3).T + data.geom_xpos[g]
            base = world - self.base_pos  # the base is only translated in this scene
            if part == "controller_box":  # only its top rises above the table top
                base = _clip_above(base, data.geom_xmat[g].reshape(3, 3), self.table_top_z)
            elif part == "mount_below_table":
                if base[:, 2].max() > self.table_top_z:
                    raise ValueError(f"{model.geom(g).name} rises above the table top: give it a capsule")
                continue
            out.append((part, f"mujoco {model.geom(g).name or g}", base))
        return out

    def points(self, q: np.ndarray, finger: float = 0.0) -> dict[str, np.ndarray]:
        """Base-frame collision points per part (every geom's points)."""
        return _by_part(self.shapes(q, finger))


def _by_part(shapes: list[tuple[str, str, np.ndarray]]) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for part, _, points in shapes:
        out.setdefault(part, []).append(points)
    return {part: np.concatenate(clouds) for part, clouds in out.items()}


def _clip_above(points: np.ndarray, rotation: np.ndarray, z_min: float) -> np.ndarray:
    """The part of an upright box (its corner points) above height z_min: the corners below are
    moved up to z_min.  Below the table top the table plane check catches every arm capsule."""
    if not np.allclose(rotation, np.eye(3)) or points[:, 2].max() <= z_min:
        raise ValueError("expected an upright box rising above the table top")
    clipped = points.copy()
    clipped[:, 2] = np.maximum(clipped[:, 2], z_min)
    return clipped


# ---- frames ----------------------------------------------------------------------------------------
def to_part_frame(points: np.ndarray, part: str, q: np.ndarray) -> np.ndarray:
    """Base-frame points of a part into the `kinematics.frames` frame the part is attached to."""
    index = PART_FRAME[part]
    if index < 0:
        return points.copy()
    frame = kinematics.frames(q)[index]
    return (points - frame[:3, 3]) @ frame[:3, :3]


def collect_shapes(configs: np.ndarray) -> tuple[dict[str, list[tuple[str, np.ndarray]]], dict[str, float]]:
    """Every convex collision shape of both engines in its part's frame ({part: [(label, points)]},
    placed at the first configuration; a finger's points at every opening of `FINGER_OPENINGS`
    together, so their hull is the space the finger sweeps) and the largest spread of a point over
    the configurations, per engine."""
    engines = {"pybullet": PyBulletGeometry(), "mujoco": MujocoGeometry()}
    shapes: dict[str, dict[str, list[np.ndarray]]] = {}
    spread: dict[str, float] = {}
    for engine_name, engine in engines.items():
        worst = 0.0
        for finger in FINGER_OPENINGS:
            reference = None
            for q in configs:
                local = [(part, label, to_part_frame(p, part, q)) for part, label, p in engine.shapes(q, finger)]
                if reference is None:
                    reference = local
                else:
                    for (_, _, p), (_, _, r) in zip(local, reference, strict=True):
                        worst = max(worst, float(np.abs(p - r).max()))
            for part, label, p in reference:
                if part == "fingers" or finger == 0.0:
                    shapes.setdefault(part, {}).setdefault(label, []).append(p)
        spread[engine_name] = worst
    engines["pybullet"].close()
    return {
        part: [(label, np.concatenate(p)) for label, p in by_label.items()] for part, by_label in shapes.items()
    }, spread


def clip_hull(points: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray | None:
    """Points whose convex hull is the part of the convex hull of ``points`` where normal . x <=
    offset (None where that is empty): the points on that side and the points where the hull's edges
    cross the plane (the vertices of a convex polytope cut by a plane are its vertices on the kept
    side and its edges' crossings; the edges of the hull's triangulation include every edge)."""
    from scipy.spatial import ConvexHull

    side = points @ np.asarray(normal, dtype=np.float64) - offset
    if (side <= 0.0).all():
        return points
    if (side > 0.0).all():
        return None
    simplices = ConvexHull(points).simplices
    edges = np.unique(
        np.sort(np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [0, 2]]]), axis=1), axis=0
    )
    a, b = side[edges[:, 0]], side[edges[:, 1]]
    crossing = a * b < 0.0
    t = a[crossing] / (a[crossing] - b[crossing])
    start, end = points[edges[crossing, 0]], points[edges[crossing, 1]]
    return np.concatenate([points[side <= 0.0], start + t[:, None] * (end - start)])


def cell_points(shapes: list[np.ndarray], cell) -> np.ndarray:
    """Points whose hulls, shape by shape, are the parts of the shapes (each the convex hull of its
    points) inside ``cell`` ((normal, offset) half-spaces), all shapes together."""
    pieces = []
    for points in shapes:
        for normal, offset in cell:
            points = clip_hull(points, normal, offset)
            if points is None:
                break
        if points is not None:
            pieces.append(points)
    return np.concatenate(pieces) if pieces else np.empty((0, 3))


def check_cells_cover(samples: int = 100_000, seed: int = 0) -> None:
    """Every part's cells together cover space (checked on random points around the robot's parts)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(-0.7, 0.7, (samples, 3))
    for part in dict.fromkeys(part for _, part, _ in PIECES):
        inside = np.zeros(samples, dtype=bool)
        for _, piece_part, cell in PIECES:
            if piece_part == part:
                inside |= np.all([points @ np.array(n) <= d for n, d in cell], axis=0) if cell else True
        if not inside.all():
            raise AssertionError(f"the cells of {part} leave {np.sum(~inside)} of {samples} points uncovered")


# ---- fitting --------------------------------------------------------------------------------------
def point_segment_distance(points: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    d = p1 - p0
    length2 = float(d @ d)
    t = np.zeros(len(points)) if length2 == 0 else np.clip((points - p0) @ d / length2, 0.0, 1.0)
    return np.linalg.norm(points - (p0 + t[:, None] * d), axis=-1)


def capsule_volume(p0: np.ndarray, p1: np.ndarray, radius: float) -> float:
    return float(np.pi * radius**2 * np.linalg.norm(p1 - p0) + 4.0 / 3.0 * np.pi * radius**3)


def _line_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.array([1.0, 0.0, 0.0]) if abs(direction[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(direction, u)


def _best_on_line(points: np.ndarray, direction: np.ndarray, through: np.ndarray):
    """Minimum-volume capsule with its segment on the line through ``through`` along ``direction``:
    (volume, p0, p1, radius)."""
    from scipy.optimize import minimize_scalar

    rel = points - through
    t = rel @ direction
    rho2 = np.maximum(np.einsum("ij,ij->i", rel, rel) - t * t, 0.0)
    r_min = float(np.sqrt(rho2.max()))

    def segment(r: float) -> tuple[float, float]:
        reach = np.sqrt(np.maximum(r * r - rho2, 0.0))
        return float((t - reach).max()), float((t + reach).min())  # t_high, t_low

    def volume(r: float) -> float:
        high, low = segment(r)
        return np.pi * r * r * max(high - low, 0.0) + 4.0 / 3.0 * np.pi * r**3

    extent = float(t.max() - t.min())
    result = minimize_scalar(volume, bounds=(r_min, r_min + extent + 1e-9), method="bounded", options={"xatol": 1e-7})
    r = float(result.x) if result.fun < volume(r_min) else r_min
    high, low = segment(r)
    if high < low:
        high = low = 0.5 * (high + low)
    return volume(r), through + low * direction, through + high * direction, r


def fit_capsule(points: np.ndarray, restarts: int = 6, seed: int = 0):
    """Minimum-volume capsule (p0, p1, radius) containing ``points`` (no pad, no rounding)."""
    from scipy.optimize import minimize
    from scipy.spatial import ConvexHull

    points = points[ConvexHull(points).vertices]
    centre = points.mean(axis=0)
    _, _, axes = np.linalg.svd(points - centre)
    rng = np.random.default_rng(seed)
    starts = list(axes) + [v / np.linalg.norm(v) for v in rng.normal(size=(restarts, 3))]
    best = None
    for start in starts:
        u, v = _line_basis(start)

        def unpack(x, start=start, u=u, v=v):
            direction = start + x[0] * u + x[1] * v
            direction = direction / np.linalg.norm(direction)
            return direction, centre + x[2] * u + x[3] * v

        def objective(x, unpack=unpack):
            direction, through = unpack(x)
            return _best_on_line(points, direction, through)[0]

        result = minimize(
            objective,
            np.zeros(4),
            method="Nelder-Mead",
            options={"xatol": 1e-6, "fatol": 1e-10, "maxiter": 4000},
        )
        candidate = _best_on_line(points, *unpack(result.x))
        if best is None or candidate[0] < best[0]:
            best = candidate
    _, p0, p1, radius = best
    return p0, p1, radius


def finish(points: np.ndarray, p0: np.ndarray, p1: np.ndarray, pad: float = PAD):
    """Endpoints rounded to 0.1 mm; radius: the largest point distance to the rounded segment plus
    ``pad``, rounded up to 0.1 mm."""
    p0, p1 = np.round(p0, 4), np.round(p1, 4)
    reach = float(point_segment_distance(points, p0, p1).max())
    return p0, p1, float(np.ceil((reach + pad) * 1e4) / 1e4)


def hull_volume(points: np.ndarray) -> float:
    from scipy.spatial import ConvexHull

    return float(ConvexHull(points).volume)


def fit_table(configs: np.ndarray) -> list[tuple[str, str, np.ndarray, np.ndarray, float]]:
    """Fit every capsule of `PIECES` to both engines' shapes placed at ``configs`` (the first places
    them, the others measure how well the engines' frames agree with ours); prints the residuals.
    Returns (name, part, p0, p1, radius) per capsule."""
    check_cells_cover()
    shapes, spread = collect_shapes(configs)
    for engine, worst in spread.items():
        print(
            f"{engine}: largest spread of a point in its part's frame over {len(configs)} configurations: "
            f"{1000 * worst:.3f} mm"
        )
    for part in PARTS:
        for label, p in shapes[part]:
            print(
                f"{part:15s} {label:42s} {len(p):5d} points, x {p[:, 0].min():+.4f}..{p[:, 0].max():+.4f}"
                f" y {p[:, 1].min():+.4f}..{p[:, 1].max():+.4f} z {p[:, 2].min():+.4f}..{p[:, 2].max():+.4f}"
            )
    table = []
    print("\ncapsule         radius  length  largest point-to-surface  capsule/hull volume  (unpadded)")
    for name, part, cell in PIECES:
        points = cell_points([p for _, p in shapes[part]], cell)
        p0, p1, _ = fit_capsule(points)
        p0, p1, radius = finish(points, p0, p1)
        hull = hull_volume(points)
        residual = float(point_segment_distance(points, p0, p1).max()) - radius
        volume = capsule_volume(p0, p1, radius)
        print(
            f"{name:15s} {radius:.4f}  {np.linalg.norm(p1 - p0):.4f}  {1000 * residual:+7.2f} mm"
            f"                {volume / hull:5.2f}           ({capsule_volume(p0, p1, radius - PAD) / hull:.2f})"
        )
        table.append((name, part, p0, p1, radius))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=5, help="configurations the frames are compared at")
    parser.add_argument("--pairs", action="store_true", help="only the pair analysis (of the stored table)")
    parser.add_argument("--wrist", action="store_true", help="only the wrist exclusion: map, fit and verify")
    parser.add_argument("--verify-wrist", action="store_true", help="only verify the stored wrist exclusion")
    parser.add_argument("--sweeps", action="store_true", help="only the home pose and joint 6/7 sweeps")
    parser.add_argument("--timing", action="store_true", help="only the timing (of the stored table)")
    args = parser.parse_args()
    if args.pairs or args.wrist or args.verify_wrist or args.sweeps or args.timing:
        if args.pairs:
            pair_analysis()
        if args.wrist:
            wrist_exclusion()
        if args.verify_wrist:
            verify_wrist_exclusion(verbose=True)
        if args.sweeps:
            sweeps()
        if args.timing:
            timing()
        return
    configs = np.random.default_rng(0).uniform(FRANKA_Q_MIN, FRANKA_Q_MAX, (args.configs, 7))
    table = fit_table(configs)
    print("\nLINK_CAPSULES: tuple[Capsule, ...] = (")
    for name, part, p0, p1, radius in table:
        frame = PART_FRAME[part]
        frame_name = "BASE_FRAME" if frame < 0 else str(frame)
        print(f'    Capsule("{name}", {PART_LINK[part]}, {frame_name}, {_fmt(p0)}, {_fmt(p1)}, {radius:.4f}),')
    print(")")


def pair_analysis(samples: int = 200_000, chunk: int = 20_000, seed: int = 1) -> None:
    """Every pair of capsules on non-adjacent links: how often they overlap over configurations
    drawn uniformly within Franka's published joint limits, their clearance range, and for the
    pairs never seen to overlap, `prove_separated`'s verdict."""
    from safety import collision_model as cm

    pairs = [(a, b) for a in range(cm.NUM_CAPSULES) for b in range(a + 1, cm.NUM_CAPSULES) if not cm.adjacent(a, b)]
    ia, ib = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    radii = cm.CAPSULE_RADII[ia] + cm.CAPSULE_RADII[ib]
    rng = np.random.default_rng(seed)
    overlap = np.zeros(len(pairs))
    low, high = np.full(len(pairs), np.inf), np.full(len(pairs), -np.inf)
    for _ in range(samples // chunk):
        q = rng.uniform(FRANKA_Q_MIN, FRANKA_Q_MAX, (chunk, 7))
        p0, p1 = cm.capsule_segments(kinematics.frames(q))
        clearance = cm.segment_distances(p0[:, ia], p1[:, ia], p0[:, ib], p1[:, ib]) - radii
        overlap += (clearance <= 0).sum(axis=0)
        low, high = np.minimum(low, clearance.min(axis=0)), np.maximum(high, clearance.max(axis=0))
    print(f"\nnon-adjacent capsule pairs, {samples} configurations drawn within Franka's joint limits:")
    print("pair                       overlapping  clearance min .. max (m)  verdict")
    never: dict[tuple[str, str], float] = {}
    for k, (a, b) in enumerate(pairs):
        names = (cm.CAPSULE_NAMES[a], cm.CAPSULE_NAMES[b])
        if overlap[k]:
            verdict = "touch (sampled)" + (": wrist pair, left to wrist_clearance" if cm.wrist_pair(a, b) else "")
        else:
            outcome, smallest, evaluations = prove_separated(a, b)
            verdict = f"{outcome} (branch and bound: {evaluations} cells, smallest {smallest:+.4f} m)"
            if outcome == "never":
                never[names] = smallest
        print(f"{'-'.join(names):26s} {100 * overlap[k] / samples:8.3f} %  {low[k]:+.3f} .. {high[k]:+.3f}   {verdict}")
    print("\nNEVER_TOUCHING_PAIRS = {")
    for names, smallest in never.items():
        print(f"    {names}: {np.floor(smallest * 1e4) / 1e4:.4f},")
    print("}")
    stored = set(cm.NEVER_TOUCHING_PAIRS)
    print("matches safety/collision_model.py" if stored == set(never) else f"DIFFERS from the stored {sorted(stored)}")


def _pair_joints(link_a: int, link_b: int) -> list[int]:
    """Indices into q of the joints between two links: the capsules' relative pose depends on
    these alone (link i hangs on DH frame i; the hand on the flange, after joint 7)."""
    return list(range(link_a, min(link_b, 7)))


def _reach_bounds(capsule: int, joints: list[int]) -> np.ndarray:
    """Per joint of ``joints``: an upper bound, over every configuration, on the distance of the
    capsule's segment from that joint's axis (m), so turning the joint by d rad moves the segment
    by at most bound * |d|.  The axis passes through the origin of frame k (index k in q); a point
    of frame j is at most sum(|translation| of DH steps k+1..j) + |local point| from it (each step
    rotates, which keeps lengths, and translates by sqrt(a^2 + d^2))."""
    from safety import collision_model as cm

    steps = [float(np.hypot(a, d)) for a, d in zip(kinematics.DH_A, kinematics.DH_D, strict=True)]
    steps.append(kinematics.TOOL_TIP_OFFSET)  # flange -> tool-tip frame (8)
    c = cm.LINK_CAPSULES[capsule]
    local = max(float(np.linalg.norm(c.p0)), float(np.linalg.norm(c.p1)))
    # DH step m (index m in steps) leads from frame m-1 to frame m (frame -1: the base); steps after
    # joint k's frame (index k) up to the capsule's frame: indices k+1 .. frame.
    return np.array([sum(steps[k + 1 : c.frame + 1]) + local for k in joints])


def prove_separated(a: int, b: int, budget: int = 4_000_000, initial: int = 8) -> tuple[str, float, int]:
    """Branch and bound over the joints between capsules a and b (a on the nearer link): either a
    proof that their clearance stays positive everywhere within Franka's joint limits ("never"),
    a configuration where they overlap ("touch"), or "undecided" within ``budget`` evaluations.
    Returns (verdict, the smallest clearance evaluated, evaluations)."""
    from safety import collision_model as cm

    joints = _pair_joints(int(cm.CAPSULE_LINK[a]), int(cm.CAPSULE_LINK[b]))
    reach = _reach_bounds(b, joints)
    low, high = np.array(FRANKA_Q_MIN)[joints], np.array(FRANKA_Q_MAX)[joints]
    grids = np.meshgrid(
        *[
            np.linspace(lo + (hi - lo) / (2 * initial), hi - (hi - lo) / (2 * initial), initial)
            for lo, hi in zip(low, high, strict=True)
        ],
        indexing="ij",
    )
    centres = np.stack([g.ravel() for g in grids], axis=-1)
    half = np.tile((high - low) / (2 * initial), (len(centres), 1))
    radii = cm.CAPSULE_RADII[a] + cm.CAPSULE_RADII[b]
    evaluations, smallest = 0, np.inf
    while len(centres):
        if evaluations + len(centres) > budget:
            return "undecided", smallest, evaluations
        q = np.zeros((len(centres), 7))
        q[:, joints] = centres
        p0, p1 = cm.capsule_segments(kinematics.frames(q))
        clearance = cm.segment_distances(p0[:, a], p1[:, a], p0[:, b], p1[:, b]) - radii
        evaluations += len(centres)
        smallest = min(smallest, float(clearance.min()))
        if smallest <= 0.0:
            return "touch", smallest, evaluations
        slack = half * reach
        open_cells = clearance - slack.sum(axis=1) <= 0.0
        centres, half, slack = centres[open_cells], half[open_cells], slack[open_cells]
        split = np.argmax(slack, axis=1)  # halve each open cell across its loosest joint
        rows = np.arange(len(centres))
        half[rows, split] /= 2
        offset = np.zeros_like(centres)
        offset[rows, split] = half[rows, split]
        centres, half = np.concatenate([centres - offset, centres + offset]), np.concatenate([half, half])
    return "never", smallest, evaluations


# ---- the wrist: joints 6 and 7 ------------------------------------------------------------------------
WRIST_PARTS = (("link5", "link7"), ("link6", "hand"), ("link6", "fingers"))
"""Engine part pairs on `collision_model.WRIST_LINK_PAIRS`: their relative pose depends on q6 and q7
alone (and the fingers' opening)."""
CONTACT_DISTANCE = 0.0005
"""Distance, m, up to which an engine's shapes count as touching (PyBullet reports contact points up
to `sim.pybullet_backend.CONTACT_REPORT_DISTANCE_M` = 0.5 mm; MuJoCo's geom margins are 0)."""
WRIST_OPENING = 0.02
"""Finger position at which the fingers' distances are measured, m: every opening in [0, 0.04] is
within 0.02 m of it, and a finger moves by as much as its joint."""
WRIST_KNOT_STEP = 0.05
"""Spacing of the knots of the wrist exclusion's boundary in q7, rad."""
WRIST_CELL = 0.005
"""Smallest cell edge of the wrist map, rad: cells this small that cannot be cleared are where
contacts may occur."""


class WristEngines:
    """Both engines' distances between the parts of `WRIST_PARTS` at (q6, q7), the other joints at
    home, and Lipschitz bounds on how fast q6 and q7 change them.

    PyBullet: ``getClosestPoints`` (its own distance, margins included).  MuJoCo: a separating-axis
    lower bound on the distance between its geoms (each the convex hull of its vertices, as MuJoCo
    collides with it): along the direction between PyBullet's closest points, the gap between the
    geoms' vertices' projections (exact where the two engines' shapes agree, as for link 5, link 7
    and the hand; a valid lower bound everywhere).  MuJoCo's own distance query is not used: its
    native solver returns 0 for some pairs of meshes centimetres apart."""

    def __init__(self) -> None:
        import mujoco

        from safety.reset import DEFAULT_HOME_Q

        self.home = np.array(DEFAULT_HOME_Q, dtype=np.float64)
        self.pb, self.mj, self.mujoco = PyBulletGeometry(), MujocoGeometry(), mujoco
        self.pb_links: dict[str, list[int]] = {}
        for link, name in self.pb.link_names.items():
            if PYBULLET_PART.get(name):
                self.pb_links.setdefault(PYBULLET_PART[name], []).append(link)
        self.mj_geoms: dict[str, list[tuple[int, np.ndarray]]] = {}
        for g, part in self.mj.geoms:
            self.mj_geoms.setdefault(part, []).append((g, self.mj._local_points(g)))
        shapes, _ = collect_shapes(self.home[None])
        self.lipschitz = {pair: self._lipschitz(pair, shapes) for pair in WRIST_PARTS}

    @staticmethod
    def _lipschitz(pair: tuple[str, str], shapes) -> tuple[float, float]:
        """(L6, L7), m/rad: how fast q6 and q7 can move the second part relative to the first.  Its
        points p (in its frame, on joint 7's axis; every point of both engines' shapes, plus
        PyBullet's 1 mm margin) turn about joint 7's axis at distance <= |p_xy| and about joint 6's,
        which passes 0.088 m from the origin of frame 7, at distance <= |p| + 0.088 (+ 0.2104 for
        the hand's frame, 0.1034 + 0.107 m along joint 7's axis).  Link 6 and the hand turn only
        with q7."""
        points = np.concatenate([p for _, p in shapes[pair[1]]])
        along = 0.0 if pair[1] == "link7" else kinematics.TOOL_TIP_OFFSET + float(kinematics.DH_D[7])
        l7 = float(np.hypot(points[:, 0], points[:, 1]).max()) + 0.001
        moved = points + np.array([0.0, 0.0, along])  # relative to frame 7's origin (same z axis)
        l6 = float(np.linalg.norm(moved, axis=1).max()) + abs(float(kinematics.DH_A[6])) + 0.001
        return (l6 if pair[0] == "link5" else 0.0), l7

    def distances(self, q6: float, q7: float) -> np.ndarray:
        """(len(WRIST_PARTS), 2): PyBullet's distance and MuJoCo's lower bound per pair, m (the
        fingers' less `WRIST_OPENING`, so they hold for every opening)."""
        q = self.home.copy()
        q[5], q[6] = q6, q7
        self.pb.set(q, WRIST_OPENING)
        mj = self.mj
        mj.data.qpos[mj.arm_qpos] = q
        mj.data.qpos[mj.finger_qpos] = [WRIST_OPENING, -WRIST_OPENING]
        self.mujoco.mj_kinematics(mj.model, mj.data)
        out = np.empty((len(WRIST_PARTS), 2))
        p = self.pb.p
        for k, (first, second) in enumerate(WRIST_PARTS):
            best, direction = np.inf, None
            for la in self.pb_links[first]:
                for lb in self.pb_links[second]:
                    for point in p.getClosestPoints(
                        self.pb.robot, self.pb.robot, 0.5, la, lb, physicsClientId=self.pb.client
                    ):
                        if point[8] < best:
                            best, direction = point[8], np.array(point[6]) - np.array(point[5])
            if direction is None or best <= 0.0:
                out[k] = best if direction is not None else 0.5, -np.inf
                continue
            direction /= np.linalg.norm(direction)
            gaps = []
            for ga, va in self.mj_geoms[first]:
                a = (va @ mj.data.geom_xmat[ga].reshape(3, 3).T + mj.data.geom_xpos[ga]) @ direction
                for gb, vb in self.mj_geoms[second]:
                    b = (vb @ mj.data.geom_xmat[gb].reshape(3, 3).T + mj.data.geom_xpos[gb]) @ direction
                    gaps.append(float(b.min() - a.max()))
            out[k] = best, min(gaps)
        out[[pair[1] == "fingers" for pair in WRIST_PARTS]] -= WRIST_OPENING
        return out


def wrist_map(
    engines: WristEngines,
    boundary=None,
    initial: tuple[int, int] = (16, 24),
    smallest: float = WRIST_CELL,
    stop_at_first: bool = False,
):
    """Branch and bound over (q6, q7) within Franka's limits: a cell is clear when, for every pair
    of `WRIST_PARTS` and both engines, the distance at its centre less the Lipschitz bound on how
    far the joints move the parts within the cell exceeds `CONTACT_DISTANCE`; other cells are
    halved across their loosest joint down to ``smallest``.  With ``boundary`` (knots q7, q6), cells
    entirely below it (inside the exclusion) are skipped; ``stop_at_first``: return at the first
    blocked cell.  Returns (blocked cells as rows (q6 low, q6 high, q7 low, q7 high), cells
    evaluated, the smallest distance evaluated in a cleared cell)."""
    low, high = np.array(FRANKA_Q_MIN)[5:7], np.array(FRANKA_Q_MAX)[5:7]
    n6, n7 = initial
    edges6, edges7 = np.linspace(low[0], high[0], n6 + 1), np.linspace(low[1], high[1], n7 + 1)
    centres = np.array([[a, b] for a in (edges6[:-1] + edges6[1:]) / 2 for b in (edges7[:-1] + edges7[1:]) / 2])
    half = np.tile([(high[0] - low[0]) / (2 * n6), (high[1] - low[1]) / (2 * n7)], (len(centres), 1))
    lipschitz = np.array([engines.lipschitz[pair] for pair in WRIST_PARTS])  # (pairs, 2)
    blocked, evaluations, smallest_clear = [], 0, np.inf
    while len(centres):
        if boundary is not None:  # skip cells inside the exclusion: q6 high <= the boundary's minimum over the cell
            q7s = [
                np.concatenate([[lo, hi], boundary[0][(boundary[0] > lo) & (boundary[0] < hi)]])
                for lo, hi in zip(centres[:, 1] - half[:, 1], centres[:, 1] + half[:, 1], strict=True)
            ]
            floor = np.array([np.interp(q7, *boundary).min() for q7 in q7s])
            keep = centres[:, 0] + half[:, 0] > floor
            centres, half = centres[keep], half[keep]
        next_centres, next_half = [], []
        for centre, h in zip(centres, half, strict=True):
            evaluations += 1
            slack = lipschitz * h  # (pairs, 2): per joint
            distance = engines.distances(*centre)
            margin = distance - slack.sum(axis=1)[:, None] - CONTACT_DISTANCE
            if (margin > 0.0).all():
                smallest_clear = min(smallest_clear, float(distance.min()))
                continue
            # PyBullet touching everywhere in the cell: blocked as a whole (mapping needs only its top).
            certain = (distance[:, 0] + slack.sum(axis=1) <= CONTACT_DISTANCE).any()
            if certain or h.max() <= smallest / 2 + 1e-12:
                blocked.append([centre[0] - h[0], centre[0] + h[0], centre[1] - h[1], centre[1] + h[1]])
                if stop_at_first:
                    return np.array(blocked).reshape(-1, 4), evaluations, smallest_clear
                continue
            split = int(np.argmax(slack.max(axis=0) * (h > smallest / 2 + 1e-12)))
            h = h.copy()
            h[split] /= 2
            offset = np.zeros(2)
            offset[split] = h[split]
            next_centres += [centre - offset, centre + offset]
            next_half += [h, h]
        centres, half = np.array(next_centres).reshape(-1, 2), np.array(next_half).reshape(-1, 2)
    return np.array(blocked).reshape(-1, 4), evaluations, smallest_clear


def fit_wrist_boundary(blocked: np.ndarray, margin: float, step: float = WRIST_KNOT_STEP):
    """Knots (q7, q6) of a piecewise linear boundary lying `margin` above every blocked cell: the
    knot at q7_k is the highest blocked q6 over [q7_(k-1), q7_(k+1)] plus ``margin`` (so on each
    interval between knots both ends, hence the line between them, clear the cells over it), rounded
    up to 1 mrad; knots with no blocked cell near are at q6's lower limit."""
    low, high = FRANKA_Q_MIN[6], FRANKA_Q_MAX[6]
    count = int(np.ceil((high - low) / step))
    knots = np.linspace(low, high, count + 1)
    values = np.full(len(knots), FRANKA_Q_MIN[5])
    for k, q7 in enumerate(knots):
        near = (blocked[:, 3] >= q7 - step) & (blocked[:, 2] <= q7 + step)
        if near.any():
            values[k] = max(FRANKA_Q_MIN[5], float(np.ceil((blocked[near, 1].max() + margin) * 1e3) / 1e3))
    return knots, values


def wrist_exclusion() -> None:
    """Map where the engines' wrist pairs can touch, fit `collision_model.WRIST_EXCLUSION_*` above it
    with `collision_model.WRIST_MARGIN`, and verify the fit; prints the table."""
    import time

    from safety import collision_model as cm

    engines = WristEngines()
    print(
        "\nwrist pairs' Lipschitz bounds (L6, L7), m/rad:",
        {f"{a}-{b}": tuple(round(v, 4) for v in lip) for (a, b), lip in engines.lipschitz.items()},
    )
    start = time.perf_counter()
    blocked, evaluations, smallest = wrist_map(engines)
    print(f"map: {evaluations} cells evaluated in {time.perf_counter() - start:.0f} s, {len(blocked)} blocked")
    if len(blocked):
        print(
            f"  blocked cells span q6 {blocked[:, 0].min():+.4f}..{blocked[:, 1].max():+.4f},"
            f" q7 {blocked[:, 2].min():+.4f}..{blocked[:, 3].max():+.4f}"
        )
    knots, values = fit_wrist_boundary(blocked, cm.WRIST_MARGIN)
    print("\nWRIST_EXCLUSION_Q7: tuple[float, ...] = (")
    print(_wrap([f"{v:.4f}" for v in knots]))
    print(")\nWRIST_EXCLUSION_Q6: tuple[float, ...] = (")
    print(_wrap([f"{v:.3f}" for v in values]))
    print(")")
    ok, evaluations, smallest = verify_wrist_exclusion((knots, values), engines)
    print(f"verified: {ok} ({evaluations} cells evaluated, smallest distance in a cleared cell {smallest:.4f} m)")


def verify_wrist_exclusion(
    boundary=None, engines: WristEngines | None = None, verbose: bool = False, stop_at_first: bool = False
):
    """Branch and bound over (q6, q7) outside the wrist exclusion (the stored one by default):
    (True if no cell there may hold a contact, cells evaluated, smallest distance evaluated)."""
    from safety import collision_model as cm

    if boundary is None:
        boundary = (np.array(cm.WRIST_EXCLUSION_Q7), np.array(cm.WRIST_EXCLUSION_Q6))
    engines = engines if engines is not None else WristEngines()
    blocked, evaluations, smallest = wrist_map(engines, boundary=boundary, stop_at_first=stop_at_first)
    if verbose:
        print(
            f"wrist exclusion: {evaluations} cells outside it evaluated, {len(blocked)} not cleared;"
            f" smallest distance {smallest:.4f} m"
        )
    return len(blocked) == 0, evaluations, smallest


def _wrap(values: list[str], per_line: int = 10) -> str:
    return "\n".join("    " + ", ".join(values[i : i + per_line]) + "," for i in range(0, len(values), per_line))


# ---- sweeps: the model against the engines at home and turning joints 6 and 7 from it -------------------
ENGINE_PARTS = ("link0", "link1", "link2", "link3", "link4", "link5", "link6", "link7", "hand", "fingers")
PART_LINK_NUMBER = {part: PART_LINK[part] for part in ENGINE_PARTS}


def _capsule_part(name: str) -> str:
    """Engine part a capsule covers (the mount's capsules: link 0, the mount being fixed to it)."""
    return "link0" if name in ("pedestal", "controller_box") else name.split("_")[0]


class EngineDistances:
    """Both engines' smallest distance between two parts: PyBullet ``getClosestPoints`` (margins
    included), MuJoCo ``mj_geomDistance`` (native solver) where its closest points confirm it,
    else MuJoCo's geoms' separating-axis gap along PyBullet's closest points' direction (a lower
    bound; the native solver returns 0 for some meshes centimetres apart)."""

    def __init__(self) -> None:
        import mujoco

        self.wrist = WristEngines()
        self.mujoco = mujoco

    def set(self, q: np.ndarray, finger: float = 0.0) -> None:
        w = self.wrist
        w.pb.set(q, finger)
        w.mj.data.qpos[w.mj.arm_qpos] = q
        w.mj.data.qpos[w.mj.finger_qpos] = [finger, -finger]
        self.mujoco.mj_kinematics(w.mj.model, w.mj.data)

    def distance(self, first: str, second: str, cutoff: float = 0.5) -> tuple[float, float]:
        w, p, mj = self.wrist, self.wrist.pb.p, self.wrist.mj
        best, direction = cutoff, None
        for la in w.pb_links[first]:
            for lb in w.pb_links[second]:
                for point in p.getClosestPoints(w.pb.robot, w.pb.robot, cutoff, la, lb, physicsClientId=w.pb.client):
                    if point[8] < best:
                        best, direction = point[8], np.array(point[6]) - np.array(point[5])
        mj_best, fromto = cutoff, np.zeros(6)
        for ga, va in w.mj_geoms[first]:
            for gb, vb in w.mj_geoms[second]:
                r = self.mujoco.mj_geomDistance(mj.model, mj.data, ga, gb, cutoff, fromto)
                if (
                    r < cutoff
                    and abs(np.linalg.norm(fromto[3:] - fromto[:3]) - abs(r)) > 1e-6
                    and direction is not None
                ):
                    u = direction / max(np.linalg.norm(direction), 1e-12)
                    a = (va @ mj.data.geom_xmat[ga].reshape(3, 3).T + mj.data.geom_xpos[ga]) @ u
                    b = (vb @ mj.data.geom_xmat[gb].reshape(3, 3).T + mj.data.geom_xpos[gb]) @ u
                    r = float(b.min() - a.max())
                mj_best = min(mj_best, r)
        return best, mj_best


def sweep_configs() -> dict[str, np.ndarray]:
    """Home, joint 7 swept from -2.9 to 2.9 rad at home, joint 6 swept over its range at home (10 mrad)."""
    from safety.reset import DEFAULT_HOME_Q

    home = np.array(DEFAULT_HOME_Q, dtype=np.float64)
    out = {"home": home[None]}
    for joint, values in (
        (6, np.arange(-2.9, 2.9 + 1e-9, 0.01)),
        (5, np.arange(FRANKA_Q_MIN[5], FRANKA_Q_MAX[5] + 1e-9, 0.01)),
    ):
        configs = np.tile(home, (len(values), 1))
        configs[:, joint] = values
        out[f"q{joint + 1}"] = configs
    return out


def sweeps(model=None, engines: EngineDistances | None = None, every: int = 20) -> dict[str, dict[str, np.ndarray]]:
    """The smallest checked capsule clearance against both engines' smallest distance over the same
    part pairs, at home and along the joint 7 and joint 6 sweeps (`sweep_configs`), and the same for
    link 5 - hand; prints every ``every``-th row and a summary per sweep.  ``model``: a module with
    the collision model's interface (default `safety.collision_model`)."""
    from safety import collision_model

    model = model if model is not None else collision_model
    engines = engines if engines is not None else EngineDistances()
    part_pairs = sorted(
        {
            tuple(sorted((_capsule_part(name) for name in names.split("-")), key=ENGINE_PARTS.index))
            for names in model.SELF_COLLISION_PAIR_NAMES
        }
    )
    link5_hand = [
        k
        for k, names in enumerate(model.SELF_COLLISION_PAIR_NAMES)
        if {_capsule_part(n) for n in names.split("-")} == {"link5", "hand"}
    ]
    results = {}
    for sweep, configs in sweep_configs().items():
        capsule = model.self_clearances(kinematics.frames(configs))
        engine = np.empty((len(configs), len(part_pairs), 2))
        for i, q in enumerate(configs):
            engines.set(q)
            for k, pair in enumerate(part_pairs):
                engine[i, k] = engines.distance(*pair)
        hand_pair = part_pairs.index(("link5", "hand"))
        results[sweep] = {
            "q": configs,
            "capsule": capsule.min(axis=1),
            "capsule_pair": np.array(model.SELF_COLLISION_PAIR_NAMES)[capsule.argmin(axis=1)],
            "engines": engine.min(axis=1),  # (n, 2): pybullet, mujoco
            "engine_pair": np.array(["-".join(part_pairs[k]) for k in engine.min(axis=2).argmin(axis=1)]),
            "capsule_link5_hand": capsule[:, link5_hand].min(axis=1),
            "engines_link5_hand": engine[:, hand_pair],
        }
        r = results[sweep]
        print(
            f"\n{sweep}: q6, q7; smallest checked capsule clearance (pair); engines' smallest distance over"
            " the same link pairs, PyBullet / MuJoCo (pair); link 5 - hand: capsules, engines (m)"
        )
        for i in list(range(0, len(configs), every)) + ([len(configs) - 1] if len(configs) > 1 else []):
            print(
                f"  {configs[i, 5]:+.3f} {configs[i, 6]:+.3f}  {r['capsule'][i]:+.4f} ({r['capsule_pair'][i]:24s})"
                f"  {r['engines'][i, 0]:+.4f} / {r['engines'][i, 1]:+.4f} ({r['engine_pair'][i]:13s})"
                f"  {r['capsule_link5_hand'][i]:+.4f}"
                f"  {r['engines_link5_hand'][i, 0]:+.4f} / {r['engines_link5_hand'][i, 1]:+.4f}"
            )
        apart = r["engines"].min(axis=1) >= 0.05
        hand_apart = r["engines_link5_hand"].min(axis=1) >= 0.05
        apart_min = r["capsule"][apart].min() if apart.any() else np.nan
        hand_min = r["capsule_link5_hand"][hand_apart].min() if hand_apart.any() else np.nan
        print(
            f"  summary: smallest capsule clearance {r['capsule'].min():+.4f} m (engines there"
            f" {r['engines'][r['capsule'].argmin()].min():+.4f}); where the engines are >= 5 cm apart"
            f" ({apart.sum()} of {len(configs)}): smallest capsule clearance {apart_min:+.4f},"
            f" {np.sum(r['capsule'][apart] < 0.03)} under 3 cm; link 5 - hand where >= 5 cm apart"
            f" ({hand_apart.sum()}): smallest {hand_min:+.4f}, {np.sum(r['capsule_link5_hand'][hand_apart] < 0.03)}"
            " under 3 cm"
        )
    return results


def timing(number: int = 200, repeat: int = 10) -> None:
    """Cost of the clearances for 17 candidates x 20 rollout steps (best of ``repeat`` timeit runs),
    with and without the kinematics, next to a reference operation for the machine's speed."""
    import timeit

    from safety import collision_model as cm

    q = np.random.default_rng(2).uniform(FRANKA_Q_MIN, FRANKA_Q_MAX, (17, 20, 7))
    frames = kinematics.frames(q)
    reference = np.random.default_rng(3).random(10_000)
    cases = {
        "reference: 10k-element multiply": lambda: reference * reference,
        "kinematics.frames": lambda: kinematics.frames(q),
        "capsule_segments": lambda: cm.capsule_segments(frames),
        "self_clearances": lambda: cm.self_clearances(frames),
        "table_clearances": lambda: cm.table_clearances(frames, SIM_TABLE_TOP_Z),
        "clearances_from_frames (both)": lambda: cm.clearances_from_frames(frames, SIM_TABLE_TOP_Z),
        "clearances(q) (frames + both)": lambda: cm.clearances(q, SIM_TABLE_TOP_Z),
    }
    print(
        f"\n17 x 20 configurations, {len(cm.SELF_COLLISION_PAIRS)} pairs, {cm.NUM_CAPSULES} capsules, best of {repeat}:"
    )
    print(f"  {'':34s} {'as is':>8s}  {'warm heap':>9s}  (us per call)")
    results = {name: min(timeit.repeat(call, number=number, repeat=repeat)) / number for name, call in cases.items()}
    # glibc returns freed memory above its (initially 128 KB) trim threshold to the system, so in a
    # fresh process every call page-faults its temporaries back in.  Freeing one large block raises
    # the thresholds for the rest of the process (as any long-running process soon has done).
    np.ones(1 << 20).sum()
    for name, call in cases.items():
        warm = min(timeit.repeat(call, number=number, repeat=repeat)) / number
        print(f"  {name:34s} {1e6 * results[name]:8.1f}  {1e6 * warm:9.1f}")


def _fmt(point: np.ndarray) -> str:
    return "(" + ", ".join(f"{v + 0.0:.4f}" for v in point) + ")"


if __name__ == "__main__":
    main()
