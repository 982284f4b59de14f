"""The seed-003 scene in PyBullet: a Panda (pybullet_data's URDF) on a table with a six-coloured cube.

Each driver owns its own physics client (``pybullet.connect(pybullet.DIRECT)``) and passes its id
to every call, so several drivers can live in one process without seeing each other.  The robot's
base sits at the world origin, so the world frame *is* the robot base frame of `sim.scene`.

Physics: fixed 240 Hz steps, sub-stepped to the control period by `sim.base`.  The arm is driven by
PyBullet's joint velocity motors (a velocity constraint solved with the contacts) with the Panda's
torque limits as the largest force; `sim.base` sets their targets every substep while its command
ramp moves (Franka's acceleration and jerk limits, plus a position hold against creep), and each
target lies within one substep's published acceleration of the joint's measured velocity, which a
motor reaches within the substep.  Two settings make the motors do that: `SOLVER_ITERATIONS` (at
PyBullet's default 50 the solver does not converge for joints 1 and 3, nearly parallel at home:
joint 3 missed its target by 0.03 rad/s, reached 16% over its published acceleration and lagged the
commanded integral by 21-35 mrad; 200 iterations cost about 5% of a control step; even so the motors
overshoot by a few percent when several joints accelerate together, so they are asked for at most
90-97% of a substep's published acceleration, `servo_acceleration_fraction`), and
`MAX_JOINT_VELOCITY`, Bullet's clamp on the arm's joint speeds during constraint solving (contact
impulses had driven joint 6 to 4.9 rad/s when the fingers pressed the cube into the table).  The
fingers are held closed by position motors.  Self-collision
is on (parent-child pairs are excluded by PyBullet; the two pairs that always touch in this URDF,
link7-hand through the massless flange and finger-finger of the closed gripper, are filtered out).

Determinism: the state right after building is saved (`saveState`) and restored at every reset,
and every collider is taken out of the broadphase and put back, which drops the contact manifolds
and their warm-start impulses (`restoreState` alone keeps them: the cube resting where the last
episode left it would start with old impulses).  So the same commands after a reset give
bit-identical states, as they do for two fresh drivers.

Rendering: PyBullet's CPU TinyRenderer (PLATFORM.md: faster than its EGL plugin here), with view and
projection matrices computed once per camera when the scene is built.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np
import pybullet_data

from robot_drivers.base import DriverFault, FaultReason
from robot_drivers.types import NUM_JOINTS
from sim.base import SimPandaDriver
from sim.config import CameraConfig
from sim.quiet_pybullet import pybullet
from sim.scene import (
    CAMERAS,
    CUBE_EDGE,
    CUBE_FACES,
    CUBE_MASS,
    GRIPPER_CLOSED_WIDTH,
    TABLE_CENTER_XY,
    TABLE_SIZE_XY,
    TABLE_THICKNESS,
    TABLE_TOP_Z,
    TOOL_TIP_OFFSET,
)

PHYSICS_TIMESTEP_S = 1.0 / 240.0
"""Physics step, s (PyBullet's default; 12 steps per 20 Hz control period)."""
SOLVER_ITERATIONS = 200
"""Constraint solver iterations per physics step (PyBullet's default is 50: too few for the velocity
motors of nearly parallel joints to converge, see the module docstring)."""
ARM_TORQUE_LIMITS = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
"""Largest torque each arm joint's velocity motor may apply, N m (Franka's limits)."""
_ARM_TORQUE_LIMITS_LIST = ARM_TORQUE_LIMITS.tolist()
MAX_JOINT_VELOCITY = 2.175
"""Largest speed of any arm or finger joint, rad/s, enforced by Bullet while it solves the
constraints (``maxJointVelocity``: one value for the whole robot, so the smallest of Franka's
maximum joint speeds; joints 5-7, rated 2.61 rad/s, are held to it too).  Franka's arm faults rather
than exceed its limits; without the clamp contact impulses drove the light wrist joints far past
them."""
FINGER_FORCE = 20.0
"""Largest force each finger's position motor may apply to hold the gripper closed, N."""
TABLE_FRICTION = 0.8
"""Lateral friction coefficient of the table; PyBullet multiplies the two bodies' coefficients."""
CUBE_FRICTION = 0.8
"""Lateral friction coefficient of the cube (cube on table: 0.64; cube on a finger: 0.8)."""
CUBE_SPINNING_FRICTION = 0.001
"""Torsional friction of the cube's contacts, m (stops it spinning forever on the table)."""
TABLE_RGBA = (0.62, 0.5, 0.38, 1.0)
"""Table colour: a light wood, unlike any cube face."""
FACE_PLATE_THICKNESS = 0.002
"""Thickness of the coloured plate that forms each face of the cube's visual shell, m."""
DYNAMIC_FILTER = (1, -1)
"""Broadphase (group, mask) of moving colliders: Bullet's DefaultFilter group, colliding with all."""
STATIC_FILTER = (2, -3)
"""Broadphase (group, mask) of static colliders: Bullet's StaticFilter group, colliding with all but
static ones."""
CONTACT_REPORT_DISTANCE_M = 0.0005
"""`arm_contacts` reports contact points at most this far apart, m (Bullet also keeps points a
few millimetres before touching)."""
CAMERA_NEAR_M = 0.01
CAMERA_FAR_M = 5.0

PANDA_URDF = "franka_panda/panda.urdf"
ARM_JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, NUM_JOINTS + 1))
FINGER_JOINT_NAMES = ("panda_finger_joint1", "panda_finger_joint2")
HAND_LINK_NAME = "panda_hand"
"""The tool frame's link: Franka's hand, rotated -45 deg about the flange (link 8) z axis, origin at
the flange; the tool tip is `TOOL_TIP_OFFSET` along its z axis, between the closed fingertips."""
NEVER_COLLIDING_LINK_PAIRS = (("panda_link7", HAND_LINK_NAME), ("panda_leftfinger", "panda_rightfinger"))
"""Link pairs whose collision meshes always overlap (joined through the massless flange, and the
closed fingers): their collisions are switched off and never reported."""


def cube_urdf() -> str:
    """URDF of the cube: one box collision shape and a visual shell of six coloured face plates."""
    half = CUBE_EDGE / 2
    inertia = CUBE_MASS * CUBE_EDGE**2 / 6
    visuals = []
    for index, face in enumerate(CUBE_FACES):
        normal = np.array(face.normal)
        size = np.where(normal != 0, FACE_PLATE_THICKNESS, CUBE_EDGE)
        centre = normal * (half - FACE_PLATE_THICKNESS / 2)
        r, g, b = face.rgb
        visuals.append(
            f"""
    <visual>
      <origin xyz="{centre[0]} {centre[1]} {centre[2]}" rpy="0 0 0"/>
      <geometry><box size="{size[0]} {size[1]} {size[2]}"/></geometry>
      <material name="face_{index}_{face.colour}"><color rgba="{r} {g} {b} 1"/></material>
    </visual>"""
        )
    return f"""<?xml version="1.0"?>
<robot name="coloured_cube">
  <link name="cube">
    <inertial>
      <origin xyz="0 0 0" rpy="0 0 0"/>
      <mass value="{CUBE_MASS}"/>
      <inertia ixx="{inertia}" ixy="0" ixz="0" iyy="{inertia}" iyz="0" izz="{inertia}"/>
    </inertial>{"".join(visuals)}
    <collision>
      <origin xyz="0 0 0" rpy="0 0 0"/>
      <geometry><box size="{CUBE_EDGE} {CUBE_EDGE} {CUBE_EDGE}"/></geometry>
    </collision>
  </link>
</robot>
"""


def _xyzw(quat_wxyz: np.ndarray) -> list[float]:
    w, x, y, z = (float(v) for v in quat_wxyz)
    return [x, y, z, w]


class PyBulletPanda(SimPandaDriver):
    """The simulated Panda scene in PyBullet (see the module docstring).

    Public after `connect` (a benchmark steps the same scene directly): ``client`` (physics client
    id), ``robot_id``, ``cube_id``, ``table_id``, ``arm_joints`` (7 joint indices),
    ``finger_joints`` (2), ``hand_link`` (tool frame link index) and ``link_names`` (index -> name,
    -1 is the base ``panda_link0``).
    """

    client: int
    robot_id: int
    cube_id: int
    table_id: int

    servo_acceleration_fraction = np.array([0.97, 0.97, 0.90, 0.97, 0.97, 0.97, 0.97])
    """Per joint, the fraction of a substep's published acceleration the velocity motors are asked
    for.  They overshoot what they are asked when several joints accelerate at once (the constraint
    solver's residual at 200 iterations), most for joint 3 with joint 2 near zero, where the axes
    of joints 1 and 3 line up: by up to 7.5% there, by at most 2% for the other joints.  Asked
    for 100%, the safety soak measured 108 free-space substeps over 1.03x the published
    acceleration in 29,000 steps (max 1.069x, joint 3); asked for 97%, 9 in 30,000 (max 1.042x,
    joint 3, q2 = 0.03-0.1 rad); with 90% for joint 3 those episodes peak at 0.97-0.98x
    (`benchmarks/safety_soak.py`; README "Safety" has the full run)."""
    arm_joints: list[int]
    finger_joints: list[int]
    hand_link: int
    link_names: dict[int, str]

    # ---- building ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.client = pybullet.connect(pybullet.DIRECT)
        if self.client < 0:
            raise DriverFault(FaultReason.connection_lost, "could not start a PyBullet physics client")
        try:
            self._build_scene()
        except Exception:
            pybullet.disconnect(physicsClientId=self.client)
            raise

    def _build_scene(self) -> None:
        cid = self.client
        self.physics_timestep_s = PHYSICS_TIMESTEP_S
        pybullet.resetSimulation(physicsClientId=cid)
        pybullet.setPhysicsEngineParameter(
            fixedTimeStep=PHYSICS_TIMESTEP_S,
            numSubSteps=0,
            numSolverIterations=SOLVER_ITERATIONS,
            deterministicOverlappingPairs=1,
            physicsClientId=cid,
        )
        pybullet.setGravity(0.0, 0.0, -9.81, physicsClientId=cid)

        self.robot_id = pybullet.loadURDF(
            os.path.join(pybullet_data.getDataPath(), PANDA_URDF),
            basePosition=[0.0, 0.0, 0.0],
            baseOrientation=[0.0, 0.0, 0.0, 1.0],
            useFixedBase=True,
            flags=pybullet.URDF_USE_SELF_COLLISION,
            physicsClientId=cid,
        )
        joints_by_name: dict[str, int] = {}
        self.link_names = {-1: pybullet.getBodyInfo(self.robot_id, physicsClientId=cid)[0].decode()}
        for index in range(pybullet.getNumJoints(self.robot_id, physicsClientId=cid)):
            info = pybullet.getJointInfo(self.robot_id, index, physicsClientId=cid)
            joints_by_name[info[1].decode()] = index
            self.link_names[index] = info[12].decode()
        self.arm_joints = [joints_by_name[name] for name in ARM_JOINT_NAMES]
        pybullet.changeDynamics(self.robot_id, -1, maxJointVelocity=MAX_JOINT_VELOCITY, physicsClientId=cid)
        self.finger_joints = [joints_by_name[name] for name in FINGER_JOINT_NAMES]
        link_index = {name: index for index, name in self.link_names.items()}
        self.hand_link = link_index[HAND_LINK_NAME]
        for first, second in NEVER_COLLIDING_LINK_PAIRS:
            pybullet.setCollisionFilterPair(
                self.robot_id, self.robot_id, link_index[first], link_index[second], 0, physicsClientId=cid
            )
        # calculateJacobian wants positions of every movable joint, in joint-index order.
        self._movable_joints = [
            index
            for index in range(pybullet.getNumJoints(self.robot_id, physicsClientId=cid))
            if pybullet.getJointInfo(self.robot_id, index, physicsClientId=cid)[2] != pybullet.JOINT_FIXED
        ]
        self._arm_columns = [self._movable_joints.index(joint) for joint in self.arm_joints]

        half_table = [TABLE_SIZE_XY[0] / 2, TABLE_SIZE_XY[1] / 2, TABLE_THICKNESS / 2]
        self.table_id = pybullet.createMultiBody(
            baseMass=0.0,
            baseCollisionShapeIndex=pybullet.createCollisionShape(
                pybullet.GEOM_BOX, halfExtents=half_table, physicsClientId=cid
            ),
            baseVisualShapeIndex=pybullet.createVisualShape(
                pybullet.GEOM_BOX, halfExtents=half_table, rgbaColor=TABLE_RGBA, physicsClientId=cid
            ),
            basePosition=[TABLE_CENTER_XY[0], TABLE_CENTER_XY[1], TABLE_TOP_Z - TABLE_THICKNESS / 2],
            physicsClientId=cid,
        )
        pybullet.changeDynamics(self.table_id, -1, lateralFriction=TABLE_FRICTION, physicsClientId=cid)

        with tempfile.TemporaryDirectory(prefix="pandalab_cube_") as folder:
            path = os.path.join(folder, "cube.urdf")
            with open(path, "w", encoding="utf-8") as file:
                file.write(cube_urdf())
            self.cube_id = pybullet.loadURDF(path, basePosition=[0.5, 0.0, 0.5], physicsClientId=cid)
        pybullet.changeDynamics(
            self.cube_id,
            -1,
            lateralFriction=CUBE_FRICTION,
            spinningFriction=CUBE_SPINNING_FRICTION,
            rollingFriction=0.0,
            physicsClientId=cid,
        )

        self._camera_matrices: dict[str, tuple[list[float], list[float]]] = {}
        for camera in self.config.cameras:
            spec = CAMERAS[camera.name]
            view = pybullet.computeViewMatrix(spec.eye, spec.target, spec.up, physicsClientId=cid)
            projection = pybullet.computeProjectionMatrixFOV(
                spec.fovy_deg, camera.width / camera.height, CAMERA_NEAR_M, CAMERA_FAR_M, physicsClientId=cid
            )
            self._camera_matrices[camera.name] = (view, projection)

        # Every collider with its broadphase filter (Bullet's defaults, made explicit): static ones
        # (table, robot base) do not collide with each other.
        self._colliders = [(self.table_id, -1, *STATIC_FILTER), (self.robot_id, -1, *STATIC_FILTER)]
        self._colliders += [(self.robot_id, link, *DYNAMIC_FILTER) for link in sorted(self.link_names) if link >= 0]
        self._colliders.append((self.cube_id, -1, *DYNAMIC_FILTER))
        self._hold_gripper_closed()
        self._set_joint_velocity_target(np.zeros(NUM_JOINTS))
        self._initial_state = pybullet.saveState(physicsClientId=cid)

    def _close(self) -> None:
        with contextlib.suppress(pybullet.error):
            pybullet.disconnect(physicsClientId=self.client)

    # ---- state -------------------------------------------------------------------------------
    def _joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        states = pybullet.getJointStates(self.robot_id, self.arm_joints, physicsClientId=self.client)
        return np.array([s[0] for s in states]), np.array([s[1] for s in states])

    def _hand_frame(self) -> tuple[np.ndarray, np.ndarray]:
        link = pybullet.getLinkState(
            self.robot_id, self.hand_link, computeForwardKinematics=True, physicsClientId=self.client
        )
        rotation = np.array(pybullet.getMatrixFromQuaternion(link[5])).reshape(3, 3)
        return np.array(link[4]), rotation

    def _tip_pose(self) -> tuple[np.ndarray, np.ndarray]:
        position, rotation = self._hand_frame()
        return position + rotation[:, 2] * TOOL_TIP_OFFSET, rotation

    def _tip_jacobian(self) -> np.ndarray:
        states = pybullet.getJointStates(self.robot_id, self._movable_joints, physicsClientId=self.client)
        positions = [s[0] for s in states]
        zeros = [0.0] * len(positions)
        linear, angular = pybullet.calculateJacobian(
            self.robot_id,
            self.hand_link,
            # The point in the link's URDF frame (checked against finite differences of `_tip_pose`
            # in the tests; offsetting by the link's centre of mass would be 4 cm off).
            [0.0, 0.0, TOOL_TIP_OFFSET],
            positions,
            zeros,
            zeros,
            physicsClientId=self.client,
        )
        jacobian = np.vstack([np.array(linear), np.array(angular)])
        return jacobian[:, self._arm_columns]

    def _external_joint_torques(self) -> np.ndarray | None:
        """Sum over the arm's contact points of ``J(p)^T f``: each point's normal and friction force
        on the arm (Bullet's ``contactNormalOnB`` points from the other body to the arm) through the
        linear Jacobian at that point; for a self contact, the force on each of the two links."""
        cid, robot = self.client, self.robot_id
        contacts = [c for c in pybullet.getContactPoints(bodyA=robot, physicsClientId=cid) if c[9] > 0.0]
        if not contacts:
            return None
        states = pybullet.getJointStates(robot, self._movable_joints, physicsClientId=cid)
        positions = [s[0] for s in states]
        zeros = [0.0] * len(positions)
        frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        torques = np.zeros(NUM_JOINTS)

        def add(link: int, point: tuple[float, ...], force: np.ndarray) -> None:
            if link < 0:  # the fixed base: no joint feels it
                return
            if link not in frames:
                state = pybullet.getLinkState(robot, link, computeForwardKinematics=True, physicsClientId=cid)
                rotation = np.array(pybullet.getMatrixFromQuaternion(state[5])).reshape(3, 3)
                frames[link] = (np.array(state[4]), rotation)
            origin, rotation = frames[link]
            # calculateJacobian takes the point in the link's URDF frame (see `_tip_jacobian`).
            local = rotation.T @ (np.asarray(point) - origin)
            linear, _ = pybullet.calculateJacobian(
                robot, link, local.tolist(), positions, zeros, zeros, physicsClientId=cid
            )
            torques[:] += np.asarray(linear)[:, self._arm_columns].T @ force

        for contact in contacts:
            body_a, body_b, link_a, link_b, point_a, point_b, normal_on_b = contact[1:8]
            force = contact[9] * np.asarray(normal_on_b)
            force += contact[10] * np.asarray(contact[11]) + contact[12] * np.asarray(contact[13])
            if body_a == robot:
                add(link_a, point_a, force)
            if body_b == robot:
                add(link_b, point_b, -force)
        return torques

    def _gripper_width(self) -> float:
        states = pybullet.getJointStates(self.robot_id, self.finger_joints, physicsClientId=self.client)
        return float(sum(s[0] for s in states))

    def _cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        position, (x, y, z, w) = pybullet.getBasePositionAndOrientation(self.cube_id, physicsClientId=self.client)
        return np.array(position), np.array([w, x, y, z])

    # ---- acting ------------------------------------------------------------------------------
    def _set_cube_pose(self, position: np.ndarray, quat_wxyz: np.ndarray) -> None:
        quat = np.asarray(quat_wxyz, dtype=np.float64)
        quat = quat / np.linalg.norm(quat)
        pybullet.resetBasePositionAndOrientation(
            self.cube_id, [float(v) for v in position], _xyzw(quat), physicsClientId=self.client
        )
        pybullet.resetBaseVelocity(self.cube_id, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], physicsClientId=self.client)

    def _set_joint_velocity_target(self, joint_velocity: np.ndarray) -> None:
        pybullet.setJointMotorControlArray(
            self.robot_id,
            self.arm_joints,
            pybullet.VELOCITY_CONTROL,
            targetVelocities=joint_velocity.tolist(),
            forces=_ARM_TORQUE_LIMITS_LIST,
            physicsClientId=self.client,
        )

    def _hold_gripper_closed(self) -> None:
        pybullet.setJointMotorControlArray(
            self.robot_id,
            self.finger_joints,
            pybullet.POSITION_CONTROL,
            targetPositions=[GRIPPER_CLOSED_WIDTH / 2] * 2,
            forces=[FINGER_FORCE] * 2,
            physicsClientId=self.client,
        )

    def _step_physics(self, n: int) -> None:
        for _ in range(n):
            pybullet.stepSimulation(physicsClientId=self.client)

    def _clear_contact_caches(self) -> None:
        """Drop every overlapping pair and contact manifold (with its warm-start impulses).

        `restoreState` does not: a cube put back where it rested would start with the previous
        episode's contact impulses, and the first episode after `connect` would differ from the
        others.  Changing a collider's filter takes it out of the broadphase and puts it back."""
        cid = self.client
        for body, link, _, _ in self._colliders:
            pybullet.setCollisionFilterGroupMask(body, link, 0, 0, physicsClientId=cid)
        pybullet.performCollisionDetection(physicsClientId=cid)
        for body, link, group, mask in self._colliders:
            pybullet.setCollisionFilterGroupMask(body, link, group, mask, physicsClientId=cid)

    def _reset_scene(self, home: np.ndarray, cube_pos: np.ndarray, cube_quat: np.ndarray) -> None:
        cid = self.client
        pybullet.restoreState(stateId=self._initial_state, physicsClientId=cid)
        self._clear_contact_caches()
        for joint, angle in zip(self.arm_joints, home, strict=True):
            pybullet.resetJointState(self.robot_id, joint, float(angle), 0.0, physicsClientId=cid)
        for joint in self.finger_joints:
            pybullet.resetJointState(self.robot_id, joint, GRIPPER_CLOSED_WIDTH / 2, 0.0, physicsClientId=cid)
        self._set_cube_pose(cube_pos, cube_quat)
        self._hold_gripper_closed()
        self._set_joint_velocity_target(np.zeros(NUM_JOINTS))

    # ---- contacts and images ------------------------------------------------------------------
    def _arm_contacts(self) -> list[tuple[str, str]]:
        # Contacts at the current poses (the last step's were found before its integration, and a
        # reset teleports).  Refreshing the contact manifolds at unchanged poses does not change
        # what the next step computes (tested: same states with and without calls in between).
        pybullet.performCollisionDetection(physicsClientId=self.client)
        others = {self.table_id: "table", self.cube_id: "cube"}
        pairs: set[tuple[str, str]] = set()
        for contact in pybullet.getContactPoints(bodyA=self.robot_id, physicsClientId=self.client):
            body_a, body_b, link_a, link_b = contact[1:5]
            if contact[8] > CONTACT_REPORT_DISTANCE_M:  # a cached point that is not touching (yet)
                continue
            if body_a != self.robot_id:  # reported the other way round
                body_a, body_b, link_a, link_b = body_b, body_a, link_b, link_a
            arm_part = self.link_names[link_a]
            if body_b == self.robot_id:
                pairs.add(tuple(sorted((arm_part, self.link_names[link_b]))))
            elif body_b in others:
                pairs.add((arm_part, others[body_b]))
        return sorted(pairs)

    def _render(self, camera: CameraConfig) -> np.ndarray:
        view, projection = self._camera_matrices[camera.name]
        _, _, rgba, _, _ = pybullet.getCameraImage(
            camera.width,
            camera.height,
            viewMatrix=view,
            projectionMatrix=projection,
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
            physicsClientId=self.client,
        )
        image = np.asarray(rgba, dtype=np.uint8).reshape(camera.height, camera.width, 4)
        return np.ascontiguousarray(image[:, :, :3])
