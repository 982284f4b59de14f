"""The simulated Panda on raw MuJoCo, with the scene assembled by robosuite (backend ``robosuite``).

robosuite 1.5.2 is used only to ASSEMBLE the MJCF, exactly as its Lift task does it: its Panda
model (with the default Panda gripper and the fixed robot mount/pedestal, base at world
(-0.56, 0, 0.912)), its `TableArena` (0.8 x 0.8 m table, top at world z = 0.8, centred on the world
origin) merged into a `ManipulationTask`.  We then add our own pieces to that XML (the six-coloured
cube, the cameras of `sim.scene.CAMERAS`, velocity servos and feedforward motors in place of the
torque motors, gravity compensation), compile it with ``mujoco.MjModel.from_xml_string`` and step raw MuJoCo ourselves
(``mujoco.mj_step``: one substep at a time while `sim.base`'s command ramp moves, the rest of the
control period in one call).

robosuite's environment classes and controllers are deliberately NOT used: its JOINT_VELOCITY
controller crashes on construction in 1.5.2 (PLATFORM.md), its per-step Python dominates the cost of
a step (159-189 steps/s against 23-31k raw physics steps/s), and its hard reset rebuilds the
renderer (1.6 s with a camera) and throws fast render settings away.

Joint velocity servo: the robot's seven torque motors are replaced by MuJoCo ``velocity``
actuators (force = kv (target - qdot), clamped to the Panda's torque limits 87/87/87/87/12/12/12 Nm),
with kv chosen per joint from the joint-space inertia at home so that every joint tracks its target
with a time constant of `SERVO_TIME_CONSTANT_S`, plus a ``motor`` per joint carrying a
computed-torque feedforward (`RobosuitePanda._command_servo`: joint-space inertia times the
substep's acceleration, plus Coriolis and centrifugal torques), the two together clamped to the
torque limit by the joint's ``actuatorfrcrange``.  `sim.base` sets the targets every substep while
its command ramp moves (Franka's acceleration and jerk limits, plus a position hold), each within
one substep's published acceleration of the joint's measured velocity; with the feedforward the
joints get there within the substep, all together.  Without it an actuator closes only a third of
the gap per substep (time constant 4 ms, substep 2 ms): the arm accelerated at 30-70% of the
published limits and `stop` from 0.5 rad/s took 0.4-0.5 s.  robosuite's link inertias (0.05-0.3
kg m^2, about ten times a Panda's at the wrist) leave the 12 Nm wrist joints short of torque for
the published accelerations in some coupled motions: the feedforward then cuts that joint's change
to what fits, and the joint brakes late (after an emergency stop from 0.5 rad/s on every joint,
joints 5 and 6 come to rest 22 mrad beyond the braking commands' integral; PyBullet's at most 11).
The arm and gripper bodies have ``gravcomp="1"`` so gravity does not pull the tracking off.  Two of
robosuite's model settings are changed because they keep a joint velocity servo from tracking like
a Panda: its air (``density``/``viscosity``, which turn on MuJoCo's fluid forces, sized from the
crude link inertias: several Nm of drag on the wrist) is removed, and its large joint armatures (5.0
down to 0.71 kg m^2, which with the 12 Nm wrist torque limit leave the wrist unable to reach
0.5 rad/s within a control step) are set to `ARM_ARMATURE`.  The integrator is ``implicitfast``,
which treats the servo's velocity feedback implicitly and so stays stable with these stiff gains.
Once the ramp has reached its command the rest of the period is one ``mj_step(nstep=n)`` call.
The gripper's two position actuators are held at closed.

Frames: everything the driver reports and takes (tool tip, cube, camera specs) is in the robot base
frame; the base is only translated from the world frame in this scene (`base_pos_world`,
`base_rot_world` hold its world pose; the conversions use both).

Rendering is headless (``MUJOCO_GL=egl``) through `mujoco.Renderer`, one per distinct image size,
built once in `_build` and never rebuilt, with the fast settings of PLATFORM.md: shadows and
reflections off, no anti-aliasing samples, offscreen buffer sized to the largest image.  Collision
geoms (group 0), robosuite's helper geoms (group 2) and all sites are hidden.

`model` and `data` are public so that benchmarks can step the very same model directly.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import xml.etree.ElementTree as ET

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from robot_drivers.types import NUM_JOINTS
from sim.base import SimPandaDriver
from sim.config import CameraConfig
from sim.scene import (
    CAMERAS,
    CUBE_EDGE,
    CUBE_FACES,
    CUBE_MASS,
    CUBE_START_POS,
    DEFAULT_HOME_Q,
    GRIPPER_CLOSED_WIDTH,
    TOOL_TIP_OFFSET,
)


class _RobosuiteChatter(logging.Filter):
    """robosuite logs five WARNING lines when first imported (no private macro file, no
    robosuite_models, no mink IK) that say nothing a pandalab user can act on: it is only used
    here to assemble the scene.  They are kept at debug level instead of printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("robosuite_logs").addFilter(_RobosuiteChatter())

PANDA_TORQUE_LIMITS = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
"""Franka Panda joint torque limits, Nm: the velocity servos' force range."""
SERVO_TIME_CONSTANT_S = 0.004
"""Time constant of each joint's velocity servo at the home pose, s (kv = inertia / time constant)."""
ARM_ARMATURE = 0.1
"""Reflected rotor inertia of every arm joint, kg m^2 (as in MuJoCo Menagerie's Panda).  robosuite's
5.0/2.5/1.67/1.25/1.0/0.83/0.71 leave the 12 Nm wrist joints unable to reach a 0.5 rad/s command
within one control step (a real Panda accelerates its wrist at 10-20 rad/s^2)."""
CUBE_FRICTION = (0.8, 0.005, 0.0001)
"""Cube sliding, torsional and rolling friction.  The cube geom has the higher contact priority, so
these apply to all its contacts (MuJoCo would otherwise take the larger of the two geoms', the
table's 1.0 or the finger pads' 2.0).  A cube pushed sideways low down slides; pushed at its top edge
it tips over (quasi-statically it tips when friction > edge / (2 * push height), i.e. above 3 cm)."""
CUBE_PLATE_THICKNESS = 0.0005
"""Thickness of the coloured visual plates on the cube faces, m."""

ROBOT_PREFIX = "robot0_"
GRIPPER_PREFIX = "gripper0_right_"
MOUNT_PREFIX = "fixed_mount0_"
HAND_BODY = "robot0_right_hand"
"""The flange: z axis out of the flange, origin on the flange face (0.107 m past joint 7)."""
ARM_JOINTS = tuple(f"robot0_joint{i}" for i in range(1, NUM_JOINTS + 1))
FINGER_JOINTS = ("gripper0_right_finger_joint1", "gripper0_right_finger_joint2")
FINGER_ACTUATORS = ("gripper0_right_gripper_finger_joint1", "gripper0_right_gripper_finger_joint2")
CUBE_BODY = "pandalab_cube"
CUBE_JOINT = "pandalab_cube_joint"
CAMERA_PREFIX = "pandalab_"
HIDDEN_GEOM_GROUPS = (0, 2, 3, 4, 5)
"""Collision geoms (0) and robosuite's helper geoms (2) are not drawn; the visual geoms are group 1."""

ARM_PARTS = tuple(f"link{i}" for i in range(8)) + ("hand", "left_finger", "right_finger")
"""Names `arm_contacts` gives the robot's parts, base to fingertips."""
IGNORED_SELF_PAIRS = frozenset(
    [frozenset((ARM_PARTS[i], ARM_PARTS[i + 1])) for i in range(7)]
    + [
        frozenset(("link7", "hand")),
        frozenset(("hand", "left_finger")),
        frozenset(("hand", "right_finger")),
        frozenset(("left_finger", "right_finger")),
    ]
)
"""Part pairs that touch by construction (adjacent links, hand and fingers, the closed fingers)."""


def _part_of_body(name: str) -> str | None:
    """`ARM_PARTS` name of a robot body, None for a body that is not part of the moving robot."""
    if name.startswith(ROBOT_PREFIX + "link"):
        return name[len(ROBOT_PREFIX) :]
    if name == HAND_BODY or name in (GRIPPER_PREFIX + "right_gripper", GRIPPER_PREFIX + "eef"):
        return "hand"
    if name.startswith(GRIPPER_PREFIX + "leftfinger") or name.startswith(GRIPPER_PREFIX + "finger_joint1"):
        return "left_finger"
    if name.startswith(GRIPPER_PREFIX + "rightfinger") or name.startswith(GRIPPER_PREFIX + "finger_joint2"):
        return "right_finger"
    return None


def _as_slice(indices: np.ndarray) -> slice | np.ndarray:
    """``indices`` as a slice when they are consecutive (indexing with it is a cheap view)."""
    if len(indices) and np.array_equal(indices, np.arange(indices[0], indices[0] + len(indices))):
        return slice(int(indices[0]), int(indices[0]) + len(indices))
    return indices


def _fmt(values) -> str:
    return " ".join(f"{float(v):.9g}" for v in values)


def camera_xyaxes(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """MuJoCo ``xyaxes`` (image right, image up) of a camera at ``eye`` looking at ``target``."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    image_up = np.cross(right, forward)
    return np.concatenate([right, image_up])


def assemble_scene_xml() -> tuple[str, np.ndarray]:
    """The Lift-style scene from robosuite plus our cube, cameras and servos, as MJCF text, and the
    robot base's world position."""
    from robosuite.models.arenas import TableArena
    from robosuite.models.bases import robot_base_factory
    from robosuite.models.grippers import gripper_factory
    from robosuite.models.robots import create_robot
    from robosuite.models.tasks import ManipulationTask

    # As robosuite.robots.Robot.load_model does it ...
    robot = create_robot("Panda", idn=0)
    robot.add_base(base=robot_base_factory(robot.default_base, idn=0))
    robot.update_joints()
    robot.update_actuators()
    gripper = gripper_factory(robot.default_gripper["right"], idn="0_right")
    robot.add_gripper(gripper, robot.eef_name["right"])
    # ... and robosuite.environments.manipulation.lift.Lift._load_model.
    table_full_size = (0.8, 0.8, 0.05)
    table_offset = np.array((0.0, 0.0, 0.8))
    robot.set_base_xpos(robot.base_xpos_offset["table"](table_full_size[0]))
    arena = TableArena(table_full_size=table_full_size, table_friction=(1.0, 5e-3, 1e-4), table_offset=table_offset)
    arena.set_origin([0, 0, 0])
    task = ManipulationTask(mujoco_arena=arena, mujoco_robots=[robot])
    root = ET.fromstring(task.get_xml())

    worldbody = root.find("worldbody")
    base = next(b for b in worldbody.iter("body") if b.get("name") == ROBOT_PREFIX + "base")
    base_pos = np.array([float(v) for v in base.get("pos", "0 0 0").split()])
    if base.get("quat") not in (None, "1 0 0 0") or base.get("euler") or base.get("axisangle"):
        raise RuntimeError("robosuite placed the robot base rotated; the frame conversions assume a translation")

    # Integrator that treats the velocity servos implicitly.
    option = root.find("option")
    if option is None:
        option = ET.SubElement(root, "option")
    option.set("integrator", "implicitfast")
    # No air: robosuite's density 1.2 / viscosity 2e-5 turn on MuJoCo's fluid model, which sizes each
    # body's drag (and buoyancy) from its inertia; the Panda model's crude, large link inertias make
    # that several Nm of drag on the wrist joints, a real Panda feels none of it.
    option.set("density", "0")
    option.set("viscosity", "0")

    # Velocity servos in place of the torque motors (kv is set per joint after compiling).
    actuator = root.find("actuator")
    for motor in list(actuator.findall("motor")):
        if motor.get("joint") in ARM_JOINTS:
            actuator.remove(motor)
    for i, joint in enumerate(ARM_JOINTS):
        limit = PANDA_TORQUE_LIMITS[i]
        ET.SubElement(
            actuator,
            "velocity",
            name=f"pandalab_servo_j{i + 1}",
            joint=joint,
            kv="100",
            ctrllimited="false",
            forcelimited="true",
            forcerange=f"{-limit} {limit}",
        )

    # The servo's torque feedforward (RobosuitePanda._command_servo), one motor per joint; the
    # joint's actuatorfrcrange clamps servo plus feedforward to the torque limit.
    for i, joint in enumerate(ARM_JOINTS):
        ET.SubElement(actuator, "motor", name=f"pandalab_ff_j{i + 1}", joint=joint, gear="1", ctrllimited="false")
    for joint in worldbody.iter("joint"):
        if joint.get("name") in ARM_JOINTS:
            joint.set("armature", f"{ARM_ARMATURE}")
            limit = PANDA_TORQUE_LIMITS[ARM_JOINTS.index(joint.get("name"))]
            joint.set("actuatorfrclimited", "true")
            joint.set("actuatorfrcrange", f"{-limit} {limit}")

    # Gravity compensation on every moving robot body.
    for body in worldbody.iter("body"):
        if _part_of_body(body.get("name", "")) not in (None, "link0"):
            body.set("gravcomp", "1")

    # The cube: a free body with a collision box and six coloured visual plates (group 1).
    half = CUBE_EDGE / 2
    cube = ET.SubElement(worldbody, "body", name=CUBE_BODY, pos=_fmt(base_pos + CUBE_START_POS))
    ET.SubElement(cube, "freejoint", name=CUBE_JOINT)
    ET.SubElement(
        cube,
        "geom",
        name="pandalab_cube_collision",
        type="box",
        size=_fmt([half] * 3),
        mass=f"{CUBE_MASS}",
        friction=_fmt(CUBE_FRICTION),
        priority="1",
        condim="4",
        group="0",
        rgba="0.5 0.5 0.5 1",
    )
    asset = root.find("asset")
    for face in CUBE_FACES:
        # Matte: no specular highlight, so the camera sees the face's own colour from any angle.
        ET.SubElement(
            asset,
            "material",
            name=f"pandalab_cube_{face.colour}_mat",
            rgba=_fmt([*face.rgb, 1.0]),
            specular="0",
            shininess="0",
            reflectance="0",
        )
    for face in CUBE_FACES:
        normal = np.array(face.normal)
        # Plates tile the surface without overlapping: the x plates cover the whole of their faces,
        # the y plates stop at the x plates, the z plates at both (no coincident, flickering edges).
        axis = int(np.argmax(np.abs(normal)))
        size = np.array([half if j > axis else half - CUBE_PLATE_THICKNESS for j in range(3)])
        size[axis] = CUBE_PLATE_THICKNESS / 2
        ET.SubElement(
            cube,
            "geom",
            name=f"pandalab_cube_{face.colour}",
            type="box",
            size=_fmt(size),
            pos=_fmt(normal * (half - CUBE_PLATE_THICKNESS / 2)),
            material=f"pandalab_cube_{face.colour}_mat",
            contype="0",
            conaffinity="0",
            mass="0",
            group="1",
        )

    # Our cameras, converted from the base frame to the world frame.
    for name, spec in CAMERAS.items():
        eye = base_pos + spec.eye
        target = base_pos + spec.target
        ET.SubElement(
            worldbody,
            "camera",
            name=CAMERA_PREFIX + name,
            mode="fixed",
            pos=_fmt(eye),
            xyaxes=_fmt(camera_xyaxes(eye, target, np.array(spec.up, dtype=float))),
            fovy=f"{spec.fovy_deg}",
        )
    return ET.tostring(root, encoding="unicode"), base_pos


@functools.cache
def _compiled_scene() -> tuple[mujoco.MjModel, np.ndarray]:
    """The compiled scene and the base's world position, built once per process (compiling the
    meshes takes about a second); every driver works on its own copy of the model."""
    xml, base_pos = assemble_scene_xml()
    return mujoco.MjModel.from_xml_string(xml), base_pos


class RobosuitePanda(SimPandaDriver):
    """The seed-003 scene on MuJoCo, assembled by robosuite; see the module docstring."""

    model: mujoco.MjModel
    data: mujoco.MjData
    base_pos_world: np.ndarray
    """World position of the robot base (origin of the base frame), m."""
    base_rot_world: np.ndarray
    """World orientation of the robot base (3x3; the identity in this scene)."""

    # ---- build / close ------------------------------------------------------------------------
    def _build(self) -> None:
        cached_model, base_pos = _compiled_scene()
        model = copy.deepcopy(cached_model)
        self.model = model
        self.data = mujoco.MjData(model)
        self.base_pos_world = base_pos.copy()
        self.base_rot_world = np.eye(3)
        self.physics_timestep_s = float(model.opt.timestep)

        def ids(kind, names):
            return np.array([mujoco.mj_name2id(model, kind, n) for n in names])

        joint_ids = ids(mujoco.mjtObj.mjOBJ_JOINT, ARM_JOINTS)
        self._arm_qpos = model.jnt_qposadr[joint_ids].copy()
        self._arm_dof = model.jnt_dofadr[joint_ids].copy()
        finger_ids = ids(mujoco.mjtObj.mjOBJ_JOINT, FINGER_JOINTS)
        self._finger_qpos = model.jnt_qposadr[finger_ids].copy()
        self._servo = ids(mujoco.mjtObj.mjOBJ_ACTUATOR, [f"pandalab_servo_j{i + 1}" for i in range(NUM_JOINTS)])
        self._ff = ids(mujoco.mjtObj.mjOBJ_ACTUATOR, [f"pandalab_ff_j{i + 1}" for i in range(NUM_JOINTS)])
        self._acc_full = np.zeros(model.nv)
        self._force_full = np.zeros(model.nv)
        self._contact_torque_full = np.zeros(model.nv)
        # The same indices as slices where consecutive, for the per-substep code.
        self._qpos_at = _as_slice(self._arm_qpos)
        self._dof_at = _as_slice(self._arm_dof)
        self._servo_at = _as_slice(self._servo)
        self._ff_at = _as_slice(self._ff)
        self._finger_act = ids(mujoco.mjtObj.mjOBJ_ACTUATOR, FINGER_ACTUATORS)
        # Fingers closed: each finger joint at its limit nearest zero opening.
        self._finger_closed_ctrl = np.array([GRIPPER_CLOSED_WIDTH / 2, -GRIPPER_CLOSED_WIDTH / 2])
        self._hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, HAND_BODY)
        cube_joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, CUBE_JOINT)
        self._cube_qpos = int(model.jnt_qposadr[cube_joint])
        self._cube_dof = int(model.jnt_dofadr[cube_joint])
        self._cube_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, CUBE_BODY)
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

        # Servo gains: kv_i = M_ii(home) / time constant, M including the joints' armature.
        self.data.qpos[self._arm_qpos] = DEFAULT_HOME_Q
        mujoco.mj_forward(model, self.data)
        inertia = np.array([self.data.qM[model.dof_Madr[d]] for d in self._arm_dof])
        kv = inertia / SERVO_TIME_CONSTANT_S
        model.actuator_gainprm[self._servo, 0] = kv
        model.actuator_biasprm[self._servo, 2] = -kv
        self._kv = kv

        self._build_contact_tables()
        self._build_renderers()

    def _build_contact_tables(self) -> None:
        """Per geom: the robot part it belongs to (index into `ARM_PARTS`, -1 if none) and the name
        it has as the other side of an arm contact."""
        model = self.model
        body_names = [model.body(b).name for b in range(model.nbody)]
        self._geom_part = np.full(model.ngeom, -1, dtype=np.int64)
        self._geom_other: list[str] = []
        for g in range(model.ngeom):
            body = body_names[model.geom_bodyid[g]]
            part = _part_of_body(body)
            if part is not None:
                self._geom_part[g] = ARM_PARTS.index(part)
                self._geom_other.append(part)
            elif body.startswith(ROBOT_PREFIX) or body.startswith(MOUNT_PREFIX):
                self._geom_other.append("link0")  # the fixed base and its pedestal
            elif body == CUBE_BODY:
                self._geom_other.append("cube")
            else:
                self._geom_other.append("table")  # the table, and the floor beside it
        # Geom pairs whose contact forces act on an arm joint: those involving a robot part, except
        # two parts beyond joint 7 (link 7, hand, fingers: the closed fingers press on each other
        # all the time, and no arm joint lies between them).
        part = self._geom_part
        on_robot, beyond_joint_7 = part >= 0, part >= ARM_PARTS.index("link7")
        self._felt_by_arm_joints = (on_robot[:, None] | on_robot[None, :]) & ~(
            beyond_joint_7[:, None] & beyond_joint_7[None, :]
        )

    def _build_renderers(self) -> None:
        cameras = self.config.cameras
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._camera_ids = {
            name: mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_PREFIX + name) for name in CAMERAS
        }
        self._scene_option = mujoco.MjvOption()
        for group in HIDDEN_GEOM_GROUPS:
            self._scene_option.geomgroup[group] = 0
        self._scene_option.sitegroup[:] = 0
        if not cameras:
            return
        vis = self.model.vis
        vis.global_.offwidth = max(c.width for c in cameras)
        vis.global_.offheight = max(c.height for c in cameras)
        vis.quality.offsamples = 0
        for camera in cameras:
            size = (camera.height, camera.width)
            if size not in self._renderers:
                renderer = mujoco.Renderer(self.model, height=camera.height, width=camera.width)
                renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
                renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
                self._renderers[size] = renderer

    def _close(self) -> None:
        for renderer in getattr(self, "_renderers", {}).values():
            renderer.close()
        self._renderers = {}

    # ---- state ---------------------------------------------------------------------------------
    def _joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.qpos[self._qpos_at].copy(), self.data.qvel[self._dof_at].copy()

    def _tip_pose(self) -> tuple[np.ndarray, np.ndarray]:
        hand_rot = self.data.xmat[self._hand].reshape(3, 3)
        return self._to_base(self._tip_world()), self.base_rot_world.T @ hand_rot

    def _tip_world(self) -> np.ndarray:
        """Tool tip in the world frame: TOOL_TIP_OFFSET along the flange's z axis."""
        hand_rot = self.data.xmat[self._hand].reshape(3, 3)
        return self.data.xpos[self._hand] + hand_rot[:, 2] * TOOL_TIP_OFFSET

    def _tip_jacobian(self) -> np.ndarray:
        mujoco.mj_jac(self.model, self.data, self._jacp, self._jacr, self._tip_world(), self._hand)
        rot = self.base_rot_world.T
        return np.vstack([rot @ self._jacp[:, self._arm_dof], rot @ self._jacr[:, self._arm_dof]])

    def _gripper_width(self) -> float:
        q1, q2 = self.data.qpos[self._finger_qpos]
        return float(q1 - q2)

    def _cube_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pose = self.data.qpos[self._cube_qpos : self._cube_qpos + 7]
        return self._to_base(pose[:3]), pose[3:].copy()  # base frame not rotated: quat unchanged

    def _set_cube_pose(self, position: np.ndarray, quat_wxyz: np.ndarray) -> None:
        self.data.qpos[self._cube_qpos : self._cube_qpos + 3] = self.base_rot_world @ position + self.base_pos_world
        self.data.qpos[self._cube_qpos + 3 : self._cube_qpos + 7] = quat_wxyz / np.linalg.norm(quat_wxyz)
        self.data.qvel[self._cube_dof : self._cube_dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def _to_base(self, world: np.ndarray) -> np.ndarray:
        return self.base_rot_world.T @ (world - self.base_pos_world)

    # ---- physics -------------------------------------------------------------------------------
    def _set_joint_velocity_target(self, joint_velocity: np.ndarray) -> None:
        self.data.ctrl[self._servo] = joint_velocity

    def _command_servo(self, target: np.ndarray, velocity: np.ndarray) -> np.ndarray:
        """Computed-torque feedforward, so the joints reach ``target`` in one substep together:
        the joint-space inertia times the acceleration, plus the Coriolis and centrifugal torques
        (gravity is compensated by ``gravcomp``).  With it the velocity actuator's own force is
        what the implicit integrator cancels, and the joints arrive together, the inertial coupling
        between them (large in robosuite's model) included; without it the actuator closes about a
        third of the gap per substep.  robosuite's joint friction (0.1 Nm) is left out: the joints
        then arrive up to 2% short or long.

        Where the torque (feedforward plus the actuator's explicit force, which MuJoCo clamps to
        the joint's limit) would exceed a joint's limit, that joint's change is cut to what fits
        (robosuite's wrist links are about ten times as heavy as a Panda's, so 12 Nm does not
        always give the published accelerations); its neighbours' feedforward accounts for the
        cut, and the joint catches up, no faster than its published acceleration, when it can."""
        h = self.physics_timestep_s
        data, at = self.data, self._dof_at
        change = target - velocity
        coriolis = data.qfrc_bias[at] - data.qfrc_gravcomp[at]
        room = np.maximum(PANDA_TORQUE_LIMITS - np.abs(coriolis), 0.0)
        inertial = self._inertial_torque(change / h)
        needed = np.abs(inertial + self._kv * change)  # MuJoCo clamps the explicit force
        over = needed > room
        if over.any():
            for _ in range(3):  # cut the joints that do not fit (which changes the others' torque)
                change = np.where(over, change * room / np.maximum(needed, 1e-12), change)
                inertial = self._inertial_torque(change / h)
                needed = np.abs(inertial + self._kv * change)
                over = needed > room
                if not over.any():
                    break
            else:  # still not: the whole change, scaled to fit
                scale = float(np.min(room / np.maximum(needed, 1e-12)))
                change *= scale
                inertial *= scale
            target = velocity + change
        data.ctrl[self._servo_at] = target
        data.ctrl[self._ff_at] = inertial + coriolis
        return target

    def _inertial_torque(self, acceleration: np.ndarray) -> np.ndarray:
        """Joint-space inertia (arm rows and columns, current pose) times ``acceleration``, N m."""
        self._acc_full[self._dof_at] = acceleration
        mujoco.mj_mulM(self.model, self.data, self._force_full, self._acc_full)
        return self._force_full[self._dof_at].copy()

    def _step_physics(self, n: int) -> None:
        mujoco.mj_step(self.model, self.data, nstep=n)

    def _reset_scene(self, home: np.ndarray, cube_pos: np.ndarray, cube_quat: np.ndarray) -> None:
        model, data = self.model, self.data
        mujoco.mj_resetData(model, data)  # zero velocities, controls, warm starts, contacts
        data.qpos[self._arm_qpos] = home
        data.qpos[self._finger_qpos] = self._finger_closed_ctrl
        data.ctrl[self._finger_act] = self._finger_closed_ctrl
        data.ctrl[self._servo] = 0.0
        data.qpos[self._cube_qpos : self._cube_qpos + 3] = self.base_rot_world @ cube_pos + self.base_pos_world
        data.qpos[self._cube_qpos + 3 : self._cube_qpos + 7] = cube_quat / np.linalg.norm(cube_quat)
        mujoco.mj_forward(model, data)

    def _external_joint_torques(self) -> np.ndarray | None:
        """``J^T f`` over the constraint rows of the arm's contacts (MuJoCo's ``qfrc_constraint``
        restricted to contacts that involve the arm or hand): the contact forces solved in the last
        step, at the arm's joints.  Joint limits and joint friction, also constraints, are not
        contacts and are left out."""
        data = self.data
        ncon = data.ncon
        if ncon == 0:
            return None
        contact = data.contact
        geoms = contact.geom[:ncon]
        on_arm = self._felt_by_arm_joints[geoms[:, 0], geoms[:, 1]]
        if not on_arm.any():
            return None
        rows = np.zeros(data.nefc)
        for index in np.flatnonzero(on_arm):
            start = contact.efc_address[index]
            if start < 0:  # excluded or inactive: no force
                continue
            count = (
                contact.dim[index]
                if self.model.opt.cone == mujoco.mjtCone.mjCONE_ELLIPTIC
                else max(1, 2 * (contact.dim[index] - 1))
            )
            rows[start : start + count] = data.efc_force[start : start + count]
        mujoco.mj_mulJacTVec(self.model, data, self._contact_torque_full, rows)
        return self._contact_torque_full[self._dof_at].copy()

    def _arm_contacts(self) -> list[tuple[str, str]]:
        ncon = self.data.ncon
        if ncon == 0:
            return []
        geoms = self.data.contact.geom[:ncon]
        parts = self._geom_part[geoms]
        involved = (parts >= 0).any(axis=1)
        found: list[tuple[str, str]] = []
        for (g1, g2), (p1, p2) in zip(geoms[involved], parts[involved], strict=True):
            if p1 < 0 or 0 <= p2 < p1:  # the arm part first; of two arm parts, the one nearer the base
                g1, g2, p1, p2 = g2, g1, p2, p1
            pair = (ARM_PARTS[p1], self._geom_other[g2])
            if pair[0] == pair[1] or (p2 >= 0 and frozenset(pair) in IGNORED_SELF_PAIRS):
                continue
            if pair not in found:
                found.append(pair)
        return found

    # ---- rendering -----------------------------------------------------------------------------
    def _render(self, camera: CameraConfig) -> np.ndarray:
        renderer = self._renderers[(camera.height, camera.width)]
        renderer.update_scene(self.data, camera=self._camera_ids[camera.name], scene_option=self._scene_option)
        return renderer.render()
