"""The MuJoCo backend (scene assembled by robosuite): what the shared contract tests do not pin down."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from robot_drivers import ActionSpace, Command
from sim.config import SimConfig
from sim.robosuite_backend import PANDA_TORQUE_LIMITS, RobosuitePanda
from sim.scene import CUBE_FACE_COLOURS, CUBE_START_POS, DEFAULT_HOME_Q, TABLE_TOP_Z, TOOL_TIP_OFFSET
from tests.sim import REFLEX_OFF


@pytest.fixture(scope="module")
def driver():
    driver = RobosuitePanda(SimConfig(cameras=({"name": "front", "width": 84, "height": 84},)))
    driver.connect()
    yield driver
    driver.close()


@pytest.fixture(scope="module")
def tip_driver():
    driver = RobosuitePanda(SimConfig(action_space="tip_delta", cameras=()))
    driver.connect()
    yield driver
    driver.close()


def _move_tip_to(driver, goal, steps=25):
    """Move the tool tip to ``goal``: 5 cm above it with 2 cm steps, then down with 5 mm steps.

    The arm's accelerations are limited (sim/base.py), so at 2 cm per step it runs behind the
    commanded displacements; a target approached that fast is overshot by what the arm still owes
    (up to 2 cm), which near the table means touching it.  The slow final approach owes little."""
    above = goal + np.array([0.0, 0.0, 0.05])
    for _ in range(steps):
        driver.send(Command(ActionSpace.tip_delta, np.clip(above - driver.tip_pose()[0], -0.02, 0.02)))
    for _ in range(steps):
        driver.send(Command(ActionSpace.tip_delta, np.clip(goal - driver.tip_pose()[0], -0.005, 0.005)))


def test_scene_is_robosuites_lift_layout_in_the_base_frame(driver):
    np.testing.assert_allclose(driver.base_pos_world, [-0.56, 0.0, 0.912])
    np.testing.assert_array_equal(driver.base_rot_world, np.eye(3))
    table = driver.model.geom("table_collision")
    table_top_world = driver.data.geom_xpos[table.id][2] + table.size[2]
    assert table_top_world - driver.base_pos_world[2] == pytest.approx(TABLE_TOP_Z)
    link0 = driver.data.xpos[driver.model.body("robot0_link0").id]
    np.testing.assert_allclose(link0, driver.base_pos_world)


def test_tool_tip_is_past_the_flange_between_the_closed_fingertips(driver):
    driver.reset(DEFAULT_HOME_Q)
    model, data = driver.model, driver.data
    tip, rotation = driver.tip_pose()
    flange = driver._to_base(data.xpos[model.body("robot0_right_hand").id])
    np.testing.assert_allclose(tip - flange, rotation[:, 2] * TOOL_TIP_OFFSET, atol=1e-12)
    # The flange's z axis points out of the flange: from joint 7 towards the hand.
    link7 = driver._to_base(data.xpos[model.body("robot0_link7").id])
    assert (flange - link7) @ rotation[:, 2] > 0.1
    pads = [driver._to_base(data.geom_xpos[model.geom(f"gripper0_right_finger{i}_pad_collision").id]) for i in (1, 2)]
    axis = rotation[:, 2]
    between = (pads[0] + pads[1]) / 2 - tip
    assert np.linalg.norm(between - (between @ axis) * axis) < 3e-3, "tip is not midway between the fingertips"
    along = [(pad - tip) @ axis for pad in pads]
    assert all(-0.02 < a < 0.0 for a in along), f"finger pads {along} m along the tool axis from the tip"
    assert driver.read_state().gripper_width == pytest.approx(0.0, abs=1e-3)


def test_physics_substeps_per_period_follow_the_control_rate():
    for rate, substeps in ((20.0, 25), (10.0, 50)):
        driver = RobosuitePanda(SimConfig(control_rate_hz=rate, cameras=()))
        driver.connect()
        try:
            assert driver.physics_timestep_s == driver.model.opt.timestep == 0.002
            assert driver._substeps_per_period() == substeps
            driver.send(Command.stop())
            assert driver.data.time == pytest.approx(substeps * 0.002)
            assert driver.read_state().time == pytest.approx(1.0 / rate)
        finally:
            driver.close()


def test_servos_are_velocity_actuators_limited_to_the_panda_torques(driver):
    model = driver.model
    limits = np.stack([-PANDA_TORQUE_LIMITS, PANDA_TORQUE_LIMITS], axis=1)
    np.testing.assert_allclose(model.actuator_forcerange[driver._servo], limits)
    assert model.opt.integrator == mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    assert np.all(model.actuator_gainprm[driver._servo, 0] > 0)
    np.testing.assert_array_equal(model.actuator_biasprm[driver._servo, 2], -model.actuator_gainprm[driver._servo, 0])
    # servo plus feedforward motor: their sum is clamped to the torque limit at each joint
    joints = model.actuator_trnid[driver._servo, 0]
    np.testing.assert_array_equal(model.actuator_trnid[driver._ff, 0], joints)
    assert np.all(model.jnt_actfrclimited[joints])
    np.testing.assert_allclose(model.jnt_actfrcrange[joints], limits)


def test_arm_holds_still_under_a_zero_command(driver):
    driver.reset(DEFAULT_HOME_Q)
    for _ in range(20):
        driver.send(Command.stop())
    state = driver.read_state()
    np.testing.assert_allclose(state.q, DEFAULT_HOME_Q, atol=1e-3)
    np.testing.assert_allclose(state.dq, 0.0, atol=1e-3)


def test_no_arm_contacts_at_home_and_a_table_contact_when_pressed_into_the_table():
    tip_driver = RobosuitePanda(SimConfig(action_space="tip_delta", cameras=(), collision_reflex=REFLEX_OFF))
    tip_driver.connect()
    tip_driver.reset(DEFAULT_HOME_Q)
    assert tip_driver.arm_contacts() == []
    assert tip_driver.data.ncon > 0  # the closed fingers' pads touch each other: never reported
    contacts = []
    for _ in range(20):
        tip_driver.send(Command(ActionSpace.tip_delta, [0.0, 0.0, -0.02]))
        contacts = tip_driver.arm_contacts()
        if contacts:
            break
    assert contacts, "pressing the tool down into the table gave no contact"
    assert {other for _, other in contacts} == {"table"}
    assert {part for part, _ in contacts} <= {"left_finger", "right_finger", "hand"}
    assert tip_driver.tip_pose()[0][2] < TABLE_TOP_Z + 0.01
    tip_driver.close()


def test_cube_slides_when_pushed_low_and_the_fingers_report_touching_it(tip_driver):
    tip_driver.reset(DEFAULT_HOME_Q)
    _move_tip_to(tip_driver, np.array([0.46, 0.0, TABLE_TOP_Z + 0.015]))
    assert tip_driver.arm_contacts() == []
    touched = set()
    for _ in range(12):
        tip_driver.send(Command(ActionSpace.tip_delta, [0.01, 0.0, 0.0]))
        touched.update(tip_driver.arm_contacts())
    for _ in range(10):
        tip_driver.send(Command(ActionSpace.tip_delta, np.zeros(3)))
    cube = tip_driver.read_state().privileged
    assert cube["cube_pos"][0] > CUBE_START_POS[0] + 0.03, f"cube did not move: {cube['cube_pos']}"
    assert abs(cube["cube_pos"][2] - CUBE_START_POS[2]) < 0.002, "cube left the table or sank into it"
    assert CUBE_FACE_COLOURS[int(cube["cube_top_face"])] == "yellow", "a low push should slide, not flip"
    assert ("left_finger", "cube") in touched or ("right_finger", "cube") in touched, touched


def test_cube_slows_to_a_stop_by_friction(driver):
    driver.reset(DEFAULT_HOME_Q)
    driver.data.qvel[driver._cube_dof] = 0.5  # m/s along +x, the arm out of the way
    for _ in range(10):
        driver.send(Command.stop())
    cube = driver.read_state().privileged["cube_pos"]
    slid = cube[0] - CUBE_START_POS[0]
    # mu = 0.8: 0.5^2 / (2 * 0.8 * 9.81) = 1.6 cm
    assert 0.01 < slid < 0.025, f"slid {slid:.4f} m"
    assert np.all(np.abs(driver.data.qvel[driver._cube_dof : driver._cube_dof + 6]) < 1e-3)


def test_reset_keeps_the_renderer_and_the_first_image_repeats(driver):
    renderers = dict(driver._renderers)
    first = driver.reset(DEFAULT_HOME_Q).images["front"]
    for _ in range(3):
        driver.send(Command(ActionSpace.joint_velocity, [0.5, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0]))
    again = driver.reset(DEFAULT_HOME_Q).images["front"]
    assert driver._renderers.keys() == renderers.keys()
    assert all(driver._renderers[size] is renderer for size, renderer in renderers.items())
    np.testing.assert_array_equal(first, again)


def _yellow_centre(image):
    rgb = image.astype(float) / 255.0
    mask = (rgb[..., 0] > 0.6) & (rgb[..., 1] > 0.6) & (rgb[..., 2] < 0.35)
    assert mask.sum() > 0, "cube's yellow top not in view"
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def test_front_image_is_the_right_way_up_and_not_mirrored(driver):
    """Front camera looks back at the robot: the robot's left (+y) is on the image's right, and the
    nearer (larger x) the cube, the lower in the image."""
    driver.reset(DEFAULT_HOME_Q)
    centres = {}
    for name, offset in (("near", [0.15, 0.0, 0.0]), ("far", [-0.1, 0.0, 0.0]), ("left", [0.0, 0.2, 0.0])):
        driver.place_cube(CUBE_START_POS + offset, np.array([1.0, 0.0, 0.0, 0.0]), settle_s=0.1)
        centres[name] = _yellow_centre(driver.read_state().images["front"])
    assert centres["near"][0] > centres["far"][0] + 5
    assert centres["left"][1] > 42 + 10
    image = driver.read_state().images["front"]
    assert image[-10:].mean() > image[:10].mean(), "the bright table should fill the bottom of the image"
