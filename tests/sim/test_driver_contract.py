"""The contract both simulated backends must meet (issue 2, "Must be true"), run against the real
simulators: MuJoCo (scene assembled by robosuite) and PyBullet."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robot_drivers import ActionSpace, Command, DriverFault, create_driver
from sim.config import SimConfig
from sim.scene import CUBE_FACES, CUBE_START_POS, DEFAULT_HOME_Q, TABLE_TOP_Z, quat_with_face_up

BACKENDS = ["robosuite", "pybullet"]


def make(backend: str, **options):
    driver = create_driver(backend, SimConfig(backend=backend, **options))
    driver.connect()
    return driver


@pytest.fixture(scope="module", params=BACKENDS)
def joint_driver(request):
    driver = make(request.param, cameras=({"name": "front", "width": 64, "height": 48},))
    yield driver
    driver.close()


@pytest.fixture(scope="module", params=BACKENDS)
def tip_driver(request):
    driver = make(request.param, action_space="tip_delta", cameras=())
    yield driver
    driver.close()


def test_commanded_joint_velocities_are_tracked_within_two_steps(joint_driver):
    joint_driver.reset(DEFAULT_HOME_Q)
    command = np.array([0.3, -0.25, 0.3, 0.25, -0.3, -0.2, 0.3])
    for _ in range(2):
        joint_driver.send(Command(ActionSpace.joint_velocity, command))
    measured = joint_driver.read_state().dq
    np.testing.assert_array_less(np.abs(measured - command), 0.1 * np.abs(command))


@pytest.mark.parametrize(
    "direction", [(1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)]
)
def test_tip_delta_moves_the_tool_tip_by_the_commanded_displacement(tip_driver, direction):
    start = tip_driver.reset(DEFAULT_HOME_Q).tip_pos
    step = 0.01 * np.array(direction)
    for _ in range(6):
        tip_driver.send(Command(ActionSpace.tip_delta, step))
    for _ in range(6):
        tip_driver.send(Command(ActionSpace.tip_delta, np.zeros(3)))
    state = tip_driver.read_state()
    moved = state.tip_pos - start
    assert np.linalg.norm(moved - 6 * step) < 0.003, f"moved {moved}, commanded {6 * step}"
    tool_z_axis = tip_driver.tip_pose()[1][:, 2]
    assert tool_z_axis[2] < -0.99, f"tool no longer points down: z axis {tool_z_axis}"


@pytest.mark.parametrize("face", range(6))
def test_top_face_colour_after_putting_the_cube_down_on_each_face(joint_driver, face):
    joint_driver.reset(DEFAULT_HOME_Q)
    joint_driver.place_cube(CUBE_START_POS + [0.0, 0.0, 0.01], quat_with_face_up(face))
    state = joint_driver.read_state()
    assert int(state.privileged["cube_top_face"]) == face, CUBE_FACES[face].colour
    assert abs(state.privileged["cube_pos"][2] - (TABLE_TOP_Z + 0.025)) < 0.005, "cube is not resting on the table"


def test_overhead_camera_sees_the_top_face_colour():
    for backend in BACKENDS:
        driver = make(backend, cameras=({"name": "overhead", "width": 96, "height": 96},))
        try:
            for face in (1, 3, 4):
                driver.reset(DEFAULT_HOME_Q)
                driver.place_cube(CUBE_START_POS + [0.0, 0.0, 0.01], quat_with_face_up(face))
                image = driver.read_state().images["overhead"]
                centre = image[46:50, 46:50].reshape(-1, 3).mean(axis=0) / 255.0
                colours = np.array([f.rgb for f in CUBE_FACES])
                colours_dir = colours / np.linalg.norm(colours, axis=1, keepdims=True)
                seen = int(np.argmax(colours_dir @ (centre / np.linalg.norm(centre))))
                assert seen == face, f"{backend}: centre pixel {centre} looks {CUBE_FACES[seen].colour}"
        finally:
            driver.close()


def test_images_have_the_configured_size_are_not_blank_and_change_when_the_arm_moves(joint_driver):
    before = joint_driver.reset(DEFAULT_HOME_Q).images["front"]
    assert before.shape == (48, 64, 3) and before.dtype == np.uint8
    assert before.std() > 10, "image is (nearly) uniform"
    for _ in range(10):
        joint_driver.send(Command(ActionSpace.joint_velocity, [0.5, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0]))
    after = joint_driver.read_state().images["front"]
    changed = np.any(np.abs(after.astype(int) - before.astype(int)) > 30, axis=-1).mean()
    assert changed > 0.01, f"only {changed:.2%} of pixels changed after the arm moved"


def _rollout(driver, commands):
    states = [driver.reset(DEFAULT_HOME_Q)]
    for command in commands:
        driver.send(Command(ActionSpace.joint_velocity, command))
        states.append(driver.read_state())
    return states


def _assert_same_states(first, second):
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.q, b.q)
        np.testing.assert_array_equal(a.dq, b.dq)
        np.testing.assert_array_equal(a.tip_pos, b.tip_pos)
        for key in a.privileged:
            np.testing.assert_array_equal(a.privileged[key], b.privileged[key])
        for name in a.images:
            np.testing.assert_array_equal(a.images[name], b.images[name])


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_and_commands_give_identical_states_and_reset_repeats_them(backend):
    commands = np.random.default_rng(7).uniform(-0.5, 0.5, size=(25, 7))
    options = {"seed": 3, "cameras": ({"name": "front", "width": 32, "height": 32},)}
    first, second = make(backend, **options), make(backend, **options)
    try:
        run_a = _rollout(first, commands)
        _assert_same_states(run_a, _rollout(second, commands))
        _assert_same_states(run_a, _rollout(first, commands))  # after a reset of the same driver
    finally:
        first.close()
        second.close()


def test_reset_restores_home_and_cube_pose_quickly(joint_driver):
    joint_driver.reset(DEFAULT_HOME_Q)
    for _ in range(20):
        joint_driver.send(Command(ActionSpace.joint_velocity, [0.5, 0.5, -0.5, 0.5, 0.5, -0.5, 0.5]))
    joint_driver.place_cube(CUBE_START_POS + [0.05, 0.1, 0.01], quat_with_face_up(0), settle_s=0.1)
    started = time.perf_counter()
    state = joint_driver.reset(DEFAULT_HOME_Q)
    took = time.perf_counter() - started
    np.testing.assert_allclose(state.q, DEFAULT_HOME_Q, atol=1e-6)
    np.testing.assert_allclose(state.dq, 0.0, atol=1e-6)
    np.testing.assert_allclose(state.privileged["cube_pos"], CUBE_START_POS, atol=1e-3)
    assert int(state.privileged["cube_top_face"]) == 4  # yellow
    assert took < 0.3, f"reset took {took:.3f} s"


def test_driver_rejects_commands_of_the_wrong_kind_or_non_finite(joint_driver):
    joint_driver.reset(DEFAULT_HOME_Q)
    with pytest.raises(DriverFault) as info:
        joint_driver.send(Command(ActionSpace.tip_delta, [0.0, 0.0, 0.01]))
    assert info.value.reason.value == "invalid_command"
    with pytest.raises(DriverFault):
        joint_driver.send(Command(ActionSpace.joint_velocity, [np.nan, 0, 0, 0, 0, 0, 0]))
    np.testing.assert_allclose(joint_driver.read_state().q, DEFAULT_HOME_Q, atol=1e-6)
