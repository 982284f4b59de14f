"""Fit the capsules of safety/collision_model.py to both simulators' Panda collision meshes.

    .venv/bin/python benchmarks/fit_collision_capsules.py           # fit, print residuals and the table (~40 s)
    .venv/bin/python benchmarks/fit_collision_capsules.py --pairs   # pairs of the stored table (~15 s)
    .venv/bin/python benchmarks/fit_collision_capsules.py --timing  # cost of the clearances

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
the configurations (how well the engine's chain agrees with the DH frames) is printed.  A capsule
contains the convex hull of its points (it is convex), so containing the points is enough.

The fit: minimum-volume capsule containing the points.  Over the segment's line (direction and
offset, four numbers; Nelder-Mead from the principal axes and some random restarts) and the radius
(bounded scalar search), the shortest segment that keeps every point within the radius is
computed in closed form.  Then the endpoints are rounded to 0.1 mm and the radius set to the
largest point distance to the rounded segment plus `PAD`, rounded up to 0.1 mm.

The pairs (``--pairs``, on the table stored in safety/collision_model.py): per pair of capsules on
non-adjacent links, how often they overlap over 200,000 configurations drawn within Franka's
joint limits, and for those never seen to overlap a branch-and-bound proof (`prove_separated`)
that they cannot, which is what `NEVER_TOUCHING_PAIRS` lists.
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


def collect_points(configs: np.ndarray) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Every part's points per engine ({engine: {part: (N, 3)}}, in the part's frame, from the
    first configuration) and the largest spread of a point over the configurations, per engine."""
    engines = {"pybullet": PyBulletGeometry(), "mujoco": MujocoGeometry()}
    clouds: dict[str, dict[str, np.ndarray]] = {}
    spread: dict[str, float] = {}
    for engine_name, engine in engines.items():
        per_finger: dict[str, list[np.ndarray]] = {}
        worst = 0.0
        for finger in FINGER_OPENINGS:
            reference = None
            for q in configs:
                local = {part: to_part_frame(p, part, q) for part, p in engine.points(q, finger).items()}
                if reference is None:
                    reference = local
                else:
                    for part, p in local.items():
                        worst = max(worst, float(np.abs(p - reference[part]).max()))
            for part, p in reference.items():
                if part == "fingers" or finger == 0.0:
                    per_finger.setdefault(part, []).append(p)
        clouds[engine_name] = {part: np.concatenate(p) for part, p in per_finger.items()}
        spread[engine_name] = worst
    engines["pybullet"].close()
    return clouds, spread


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=5, help="configurations the frames are compared at")
    parser.add_argument("--pairs", action="store_true", help="only the pair analysis (of the stored table)")
    parser.add_argument("--timing", action="store_true", help="only the timing (of the stored table)")
    args = parser.parse_args()
    if args.pairs or args.timing:
        if args.pairs:
            pair_analysis()
        if args.timing:
            timing()
        return
    rng = np.random.default_rng(0)
    configs = rng.uniform(FRANKA_Q_MIN, FRANKA_Q_MAX, (args.configs, 7))
    clouds, spread = collect_points(configs)
    for engine, worst in spread.items():
        print(
            f"{engine}: largest spread of a point in its part's frame over {len(configs)} configurations: "
            f"{1000 * worst:.3f} mm"
        )
    for part in PARTS:
        for engine, by_part in clouds.items():
            if part in by_part:
                p = by_part[part]
                print(
                    f"{part:6s} {engine:8s} {len(p):5d} points, x {p[:, 0].min():+.4f}..{p[:, 0].max():+.4f}"
                    f" y {p[:, 1].min():+.4f}..{p[:, 1].max():+.4f} z {p[:, 2].min():+.4f}..{p[:, 2].max():+.4f}"
                )
    table = []
    print("\npart            radius  length  largest point-to-surface  capsule/hull volume  (unpadded)")
    for part in PARTS:
        points = np.concatenate([by_part[part] for by_part in clouds.values() if part in by_part])
        p0, p1, _ = fit_capsule(points)
        p0, p1, radius = finish(points, p0, p1)
        hull = hull_volume(points)
        residual = float(point_segment_distance(points, p0, p1).max()) - radius
        volume = capsule_volume(p0, p1, radius)
        print(
            f"{part:15s} {radius:.4f}  {np.linalg.norm(p1 - p0):.4f}  {1000 * residual:+7.2f} mm"
            f"                {volume / hull:5.2f}           ({capsule_volume(p0, p1, radius - PAD) / hull:.2f})"
        )
        table.append((part, p0, p1, radius))
    print("\nLINK_CAPSULES: tuple[Capsule, ...] = (")
    for part, p0, p1, radius in table:
        frame = PART_FRAME[part]
        frame_name = "BASE_FRAME" if frame < 0 else str(frame)
        print(f"    Capsule({PART_LINK[part]}, {frame_name}, {_fmt(p0)}, {_fmt(p1)}, {radius:.4f}),  # {part}")
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
            verdict = "touch (sampled)"
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
