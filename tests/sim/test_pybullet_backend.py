"""Tests specific to the PyBullet backend (the contract both backends meet is in test_driver_contract.py)."""

from __future__ import annotations

import numpy as np
import pybullet
import pytest

from robot_drivers import ActionSpace, Command, create_driver
from safety.kinematics import rotation_error
from sim.config import SimConfig
from sim.pybullet_backend import ARM_TORQUE_LIMITS, PyBulletPanda
from sim.scene import CUBE_FACES, CUBE_START_POS, DEFAULT_HOME_Q, TABLE_TOP_Z, TOOL_TIP_OFFSET, quat_with_face_up
from tests.sim import REFLEX_OFF

POINTING_DOWN_Q = np.array([0.0, 0.19634954, 0.0, -2.61799388, 0.0, 0.19634954 + 2.61799388, 0.78539816])
"""Home with joint 6 chosen so that the tool points straight down (q6 = q2 - q4)."""


def make(**options) -> PyBulletPanda:
    driver = create_driver("pybullet", SimConfig(backend="pybullet", **options))
    driver.connect()
    return driver


@pytest.fixture(scope="module")
def driver():
    driver = make(cameras=())
    yield driver
    driver.close()


def test_public_handles_name_the_scene(driver):
    assert isinstance(driver, PyBulletPanda)
    names = [pybullet.getJointInfo(driver.robot_id, j, physicsClientId=driver.client)[1] for j in driver.arm_joints]
    assert names == [f"panda_joint{i}".encode() for i in range(1, 8)]
    assert len(driver.finger_joints) == 2
    position, _ = pybullet.getBasePositionAndOrientation(driver.cube_id, physicsClientId=driver.client)
    np.testing.assert_allclose(position, driver.read_state().privileged["cube_pos"])


def test_tool_tip_lies_between_the_closed_fingertips(driver):
    driver.reset(POINTING_DOWN_Q)
    tip, rotation = driver.tip_pose()
    assert rotation[2, 2] < -0.9999, "the tool should point straight down in this pose"
    assert driver.read_state().gripper_width == pytest.approx(0.0, abs=1e-6)
    lows, highs = [], []
    for finger in driver.finger_joints:
        low, high = pybullet.getAABB(driver.robot_id, finger, physicsClientId=driver.client)
        lows.append(low)
        highs.append(high)
    low, high = np.min(lows, axis=0), np.max(highs, axis=0)
    assert low[0] < tip[0] < high[0] and low[1] < tip[1] < high[1], "tip is not between the fingers"
    # Franka's TCP sits on the finger pads, a little short of the fingertips' ends (9 mm in this
    # URDF's mesh; the bounding boxes add the collision margin).
    assert 0.005 < tip[2] - low[2] < 0.015, f"fingertips end {tip[2] - low[2]:.4f} m below the tool tip"
    flange = pybullet.getLinkState(driver.robot_id, 7, computeForwardKinematics=True, physicsClientId=driver.client)
    assert np.linalg.norm(tip - np.array(flange[4])) == pytest.approx(TOOL_TIP_OFFSET, abs=1e-6)


def test_tip_jacobian_matches_finite_differences_of_the_tip_pose(driver):
    q0 = DEFAULT_HOME_Q + np.array([0.1, -0.2, 0.3, 0.2, -0.1, 0.1, 0.2])
    driver.reset(q0)
    jacobian = driver._tip_jacobian()
    numeric = np.zeros((6, 7))
    h = 1e-3  # link poses come back in single precision
    for i in range(7):
        step = np.zeros(7)
        step[i] = h
        driver.reset(q0 + step)
        tip_plus, rotation_plus = driver.tip_pose()
        driver.reset(q0 - step)
        tip_minus, rotation_minus = driver.tip_pose()
        numeric[:3, i] = (tip_plus - tip_minus) / (2 * h)
        numeric[3:, i] = rotation_error(rotation_minus, rotation_plus) / (2 * h)
    np.testing.assert_allclose(jacobian, numeric, atol=2e-4)


def test_arm_contacts_none_at_home_and_the_table_when_driven_into_it():
    driver = make(cameras=(), collision_reflex=REFLEX_OFF)  # pressed into the table on purpose
    driver.reset(DEFAULT_HOME_Q)
    assert driver.arm_contacts() == []
    seen = set()
    for _ in range(30):
        driver.send(Command(ActionSpace.joint_velocity, [0.0, 0.5, 0.0, 0.3, 0.0, -0.3, 0.0]))
        seen.update(driver.arm_contacts())
    assert ("panda_leftfinger", "table") in seen and ("panda_rightfinger", "table") in seen, seen
    assert all(other == "table" for _, other in seen), seen
    assert driver.tip_pose()[0][2] > TABLE_TOP_Z - 0.01, "the arm went through the table"
    driver.close()


def test_arm_contacts_report_self_collision_but_not_the_closed_fingers(driver):
    folded = DEFAULT_HOME_Q.copy()
    folded[5] = -0.05  # wrist folded back onto link 5
    driver.reset(folded)
    contacts = driver.arm_contacts()
    assert ("panda_link5", "panda_link7") in contacts, contacts
    assert all(b not in ("table", "cube") for _, b in contacts)
    assert ("panda_leftfinger", "panda_rightfinger") not in contacts


def test_arm_contacts_report_the_cube_and_do_not_change_the_simulation():
    commands = [np.array([0.0, 0.5, 0.0, 0.3, 0.0, -0.3, 0.0])] * 30
    watched, unwatched = make(cameras=(), collision_reflex=REFLEX_OFF), make(cameras=(), collision_reflex=REFLEX_OFF)
    try:
        contacts = set()
        for driver in (watched, unwatched):
            driver.reset(DEFAULT_HOME_Q)
            driver.place_cube(np.array([0.40, 0.0, CUBE_START_POS[2]]), np.array([1.0, 0.0, 0.0, 0.0]), settle_s=0.1)
        for command in commands:
            watched.send(Command(ActionSpace.joint_velocity, command))
            contacts.update(watched.arm_contacts())
            unwatched.send(Command(ActionSpace.joint_velocity, command))
            a, b = watched.read_state(), unwatched.read_state()
            np.testing.assert_array_equal(a.q, b.q)
            np.testing.assert_array_equal(a.privileged["cube_pos"], b.privileged["cube_pos"])
        assert any(other == "cube" for _, other in contacts), contacts
    finally:
        watched.close()
        unwatched.close()


def test_two_drivers_in_one_process_do_not_interfere():
    commands = np.random.default_rng(1).uniform(-0.5, 0.5, size=(10, 7))
    alone = make(cameras=({"name": "front", "width": 32, "height": 32},))
    reference = []
    for command in commands:
        alone.send(Command(ActionSpace.joint_velocity, command))
        reference.append(alone.read_state())
    alone.close()
    first = make(cameras=({"name": "front", "width": 32, "height": 32},))
    second = make(cameras=({"name": "front", "width": 32, "height": 32},))
    try:
        assert first.client != second.client
        for command, expected in zip(commands, reference, strict=True):
            first.send(Command(ActionSpace.joint_velocity, command))
            second.send(Command(ActionSpace.joint_velocity, -command))
            second.place_cube(CUBE_START_POS + [0.1, 0.1, 0.01], quat_with_face_up(2), settle_s=0.05)
            state = first.read_state()
            np.testing.assert_array_equal(state.q, expected.q)
            np.testing.assert_array_equal(state.privileged["cube_pos"], expected.privileged["cube_pos"])
            np.testing.assert_array_equal(state.images["front"], expected.images["front"])
    finally:
        first.close()
        second.close()


def test_raw_pybullet_stepping_with_the_servo_targets_reproduces_a_command(driver):
    """The servo is PyBullet's VELOCITY_CONTROL with the Panda's torque limits and nothing else:
    stepping raw PyBullet with the targets the driver gave it (ramp and hold, set per substep)
    gives the very same state.  What a benchmark comparing the driver with raw PyBullet relies on."""
    command = np.array([0.3, -0.2, 0.1, 0.25, -0.3, 0.2, 0.1])
    driver.reset(DEFAULT_HOME_Q)
    steps: list[tuple[list[float], int]] = []  # (servo target, substeps stepped with it)
    set_target, step_physics = driver._set_joint_velocity_target, driver._step_physics

    def record_target(velocity):
        steps.append((velocity.tolist(), 0))
        set_target(velocity)

    def record_steps(n):
        steps[-1] = (steps[-1][0], steps[-1][1] + n)
        step_physics(n)

    driver._set_joint_velocity_target, driver._step_physics = record_target, record_steps
    try:
        for _ in range(3):
            driver.send(Command(ActionSpace.joint_velocity, command))
    finally:
        del driver._set_joint_velocity_target, driver._step_physics
    via_driver = driver.read_state().q
    substeps = 3 * round(driver.control_period_s / driver.physics_timestep_s)
    assert sum(n for _, n in steps) == substeps
    assert len(steps) < substeps, "once the ramp is done the rest of a period is stepped at once"
    driver.reset(DEFAULT_HOME_Q)
    for target, n in steps:
        pybullet.setJointMotorControlArray(
            driver.robot_id,
            driver.arm_joints,
            pybullet.VELOCITY_CONTROL,
            targetVelocities=target,
            forces=ARM_TORQUE_LIMITS.tolist(),
            physicsClientId=driver.client,
        )
        for _ in range(n):
            pybullet.stepSimulation(physicsClientId=driver.client)
    np.testing.assert_array_equal(driver.read_state().q, via_driver)


def test_the_cube_slides_when_the_tool_pushes_it():
    driver = make(action_space="tip_delta", cameras=())
    try:
        start = driver.reset(DEFAULT_HOME_Q)
        behind = np.array([CUBE_START_POS[0] - 0.07, 0.0, TABLE_TOP_Z + 0.025])
        # Go behind the cube, low over the table; the last steps small, so the accelerations-limited
        # arm does not still owe (and then overshoot by) up to 2 cm of what it was asked (sim/base.py).
        for clip in [0.01] * 30 + [0.003] * 15:
            offset = np.clip(behind - driver.tip_pose()[0], -clip, clip)
            driver.send(Command(ActionSpace.tip_delta, offset))
        assert np.linalg.norm(driver.tip_pose()[0] - behind) < 0.005
        np.testing.assert_allclose(driver.read_state().privileged["cube_pos"], start.privileged["cube_pos"], atol=1e-3)
        for _ in range(12):  # push 12 cm along +x
            driver.send(Command(ActionSpace.tip_delta, [0.01, 0.0, 0.0]))
        for _ in range(10):
            driver.send(Command(ActionSpace.tip_delta, [0.0, 0.0, 0.0]))
        cube = driver.read_state().privileged
        moved = cube["cube_pos"] - start.privileged["cube_pos"]
        assert 0.03 < moved[0] < 0.09 and abs(moved[1]) < 0.02, f"cube moved {moved}"
        assert abs(cube["cube_pos"][2] - CUBE_START_POS[2]) < 0.003, "the cube left the table"
    finally:
        driver.close()


def test_overhead_camera_shows_every_face_colour():
    driver = make(cameras=({"name": "overhead", "width": 96, "height": 96},))
    colours = np.array([face.rgb for face in CUBE_FACES])
    colours /= np.linalg.norm(colours, axis=1, keepdims=True)
    try:
        for face in range(len(CUBE_FACES)):
            driver.reset(DEFAULT_HOME_Q)
            driver.place_cube(CUBE_START_POS + [0.0, 0.0, 0.01], quat_with_face_up(face), settle_s=0.3)
            image = driver.read_state().images["overhead"]
            centre = image[46:50, 46:50].reshape(-1, 3).mean(axis=0) / 255.0
            seen = int(np.argmax(colours @ (centre / np.linalg.norm(centre))))
            assert seen == face, f"{CUBE_FACES[face].colour} face up looks {CUBE_FACES[seen].colour}: {centre}"
    finally:
        driver.close()


def test_close_is_idempotent_and_releases_the_physics_client():
    driver = make(cameras=())
    client = driver.client
    driver.close()
    driver.close()
    assert not pybullet.isConnected(physicsClientId=client)
