"""Forward kinematics and the Jacobian against finite differences and known poses."""

import numpy as np

from safety import kinematics
from tests.safety.helpers import HOME_Q


def test_home_pose_tool_tip_points_down_above_the_table():
    tip, rotation = kinematics.tip_pose(HOME_Q)
    assert abs(tip[1]) < 1e-9
    assert 0.40 < tip[0] < 0.50
    assert 0.18 < tip[2] - (-0.112) < 0.23  # about 0.2 m above the simulated table top
    assert rotation[2, 2] < -0.99  # tool z axis points down


def test_zero_configuration_matches_franka_dh():
    # All joints at zero: the flange is at x = 0.088, z = 0.333 + 0.316 + 0.384 - 0.107 (pointing down).
    tip = kinematics.tip_position(np.zeros(7))
    np.testing.assert_allclose(tip, [0.088, 0.0, 0.333 + 0.316 + 0.384 - 0.107 - 0.1034], atol=1e-12)


def test_frames_are_rigid_and_batched_equals_single():
    rng = np.random.default_rng(0)
    q = rng.uniform(-2.5, 2.5, (20, 7))
    f = kinematics.frames(q)
    rotations = f[..., :3, :3]
    np.testing.assert_allclose(
        rotations @ np.swapaxes(rotations, -1, -2), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-12
    )
    for i in range(3):
        np.testing.assert_allclose(kinematics.frames(q[i]), f[i], atol=1e-14)


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(1)
    eps = 1e-6
    for q in rng.uniform(-2.5, 2.5, (25, 7)):
        jacobian = kinematics.tip_jacobian(q)
        numeric = np.empty((3, 7))
        angular = np.empty((3, 7))
        _, r0 = kinematics.tip_pose(q)
        for i in range(7):
            step = np.zeros(7)
            step[i] = eps
            numeric[:, i] = (kinematics.tip_position(q + step) - kinematics.tip_position(q - step)) / (2 * eps)
            _, r1 = kinematics.tip_pose(q + step)
            skew = (r1 @ r0.T - np.eye(3)) / eps
            angular[:, i] = [skew[2, 1], skew[0, 2], skew[1, 0]]
        np.testing.assert_allclose(jacobian[:3], numeric, atol=1e-8)
        np.testing.assert_allclose(kinematics.tip_position_jacobian(q), numeric, atol=1e-8)
        np.testing.assert_allclose(jacobian[3:], angular, atol=1e-5)


def test_rotation_error_turns_current_into_desired():
    rng = np.random.default_rng(2)
    for q in rng.uniform(-2, 2, (10, 7)):
        _, current = kinematics.tip_pose(q)
        desired = kinematics.pointing_down_rotation(0.3)
        vector = kinematics.rotation_error(current, desired)
        angle = np.linalg.norm(vector)
        axis = vector / angle
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
        np.testing.assert_allclose(rotation @ current, desired, atol=1e-6)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues' formula, written out here independently of the code under test."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def test_rotation_error_is_right_near_and_at_half_a_turn():
    """Near pi the axis cannot come from the antisymmetric part (it vanishes); an axis with mixed
    signs is where taking it from the diagonal alone goes wrong."""
    rng = np.random.default_rng(5)
    current = kinematics.tip_pose(np.array([0.1, -0.4, 0.3, -2.0, 0.2, 1.9, 0.5]))[1]
    for axis in [np.array([1.0, -1.0, 0.0]), np.array([-0.3, 0.5, -0.8]), *rng.normal(size=(20, 3))]:
        for angle in (np.pi, np.pi - 1e-7, np.pi - 1e-4, 3.0):
            desired = _rotation(axis, angle) @ current
            vector = kinematics.rotation_error(current, desired)
            assert abs(np.linalg.norm(vector) - angle) < 1e-6
            np.testing.assert_allclose(_rotation(vector, np.linalg.norm(vector)) @ current, desired, atol=1e-6)


def test_rotation_error_agrees_with_scipy_everywhere():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(6)
    for _ in range(500):
        current = Rotation.random(random_state=rng).as_matrix()
        near_pi, small = np.pi - 10 ** rng.uniform(-9, -1), 10 ** rng.uniform(-10, -3)
        angle = rng.choice([rng.uniform(0, np.pi), near_pi, np.pi, small])
        desired = _rotation(rng.normal(size=3), angle) @ current
        expected = Rotation.from_matrix(desired @ current.T).as_rotvec()
        got = kinematics.rotation_error(current, desired)
        if abs(angle - np.pi) < 1e-6:  # at half a turn, v and -v are the same rotation
            got, expected = (got, expected) if got @ expected >= 0 else (got, -expected)
        np.testing.assert_allclose(got, expected, atol=1e-7)
