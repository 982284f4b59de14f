"""The simulated arm's collision reflex (robot_drivers/collision_reflex.py, sim/base.py).

A real Panda stops itself when its external torque estimate exceeds the thresholds set with
``setCollisionBehavior``.  The simulators model it from the contact forces their engines solved,
checked after every physics substep.  Tested here, in both simulators:

- the external joint torques agree with an estimate computed independently from the engine's
  own quantities (PyBullet: inverse dynamics of the measured motion minus the applied motor
  torques, which is how a real arm estimates them; MuJoCo: its total constraint force on the arm's
  joints);
- driving the fingers into the table trips the reflex at the first touch: the command faults with
  ``collision_reflex`` naming the threshold, the arm brakes within Franka's published acceleration
  and jerk, later commands are refused until a reset;
- pushing the cube gently does not trip it;
- the auditor's soak episode where the fingers pressed the cube into the table and contact drove
  joint 6 past its limit (PyBullet, joint_velocity, episode 263) now ends in a reflex stop before
  any limit is crossed;
- a reflex in a collector session ends the episode as a ``safety_stop`` with a logged
  ``collision_reflex`` event, and collection goes on.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from benchmarks import safety_soak
from robot_drivers import ActionSpace, Command, DriverFault, FaultReason, create_driver
from robot_drivers.collision_reflex import CollisionReflexConfig, reflex_reason, tool_wrench
from safety.limits import FRANKA_DDDQ_MAX, FRANKA_DDQ_MAX
from sim.config import SimConfig
from sim.scene import CUBE_START_POS, DEFAULT_HOME_Q, TABLE_TOP_Z
from tests.sim import REFLEX_OFF

BACKENDS = ["robosuite", "pybullet"]
INTO_THE_TABLE = np.array([0.0, 0.5, 0.0, 0.3, 0.0, -0.3, 0.0])
"""Joint velocities, rad/s, that drive the fingers from home down into the table within 30 steps."""


def make(backend: str, action_space: str = "joint_velocity", **options):
    driver = create_driver(backend, SimConfig(backend=backend, action_space=action_space, cameras=(), **options))
    driver.connect()
    return driver


# ---- the reflex's arithmetic ---------------------------------------------------------------------
def test_tool_wrench_recovers_the_wrench_whose_joint_torques_it_is_given():
    rng = np.random.default_rng(3)
    jacobian = rng.normal(size=(6, 7))
    wrench = np.array([3.0, -40.0, 12.0, 1.5, 0.2, -7.0])
    np.testing.assert_allclose(tool_wrench(jacobian.T @ wrench, jacobian), wrench, atol=1e-9)


def test_reflex_reason_names_the_threshold_exceeded_most_and_none_within():
    config = CollisionReflexConfig()
    jacobian = np.hstack([np.eye(6), np.zeros((6, 1))])  # joint i (< 6) feels wrench component i
    thresholds = np.array(config.joint_torque_thresholds_nm)
    assert reflex_reason(np.zeros(7), jacobian, config) is None
    at_threshold = np.zeros(7)
    at_threshold[6] = thresholds[6]  # joint 7: no wrench component explains it (null space)
    assert reflex_reason(at_threshold, jacobian, config) is None
    over = at_threshold.copy()
    over[6] = -1.01 * thresholds[6]
    assert (
        reflex_reason(over, jacobian, config)
        == "collision reflex: external torque 12.1 N m on joint 7 (threshold 12 N m)"
    )
    # A force along z of 21 N: 21 N m on joint 3 (threshold 18: over by 1.17) and 21 N against the
    # force threshold of 20 (1.05): the joint is named, being over by more.
    pushed = np.zeros(7)
    pushed[2] = 21.0
    assert "on joint 3" in reflex_reason(pushed, jacobian, config)
    # Through a lever of 0.5 m the same force gives 10.5 N m: only the force threshold is exceeded.
    assert (
        reflex_reason(pushed * 0.5, jacobian * 0.5, config)
        == "collision reflex: external force z 21.0 N at the tool (threshold 20 N)"
    )
    assert "not finite" in reflex_reason(np.full(7, np.nan), jacobian, config)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"joint_torque_thresholds_nm": [20.0] * 6}, "joint_torque_thresholds_nm"),
        ({"joint_torque_thresholds_nm": [20.0] * 6 + [0.0]}, "joint_torque_thresholds_nm"),
        ({"tool_wrench_thresholds": [20.0] * 5 + [-1.0]}, "tool_wrench_thresholds"),
        ({"tool_wrench_thresholds": [20.0] * 6, "stiffness": 3}, "stiffness"),
    ],
)
def test_bad_thresholds_are_refused_naming_the_field(options, field):
    with pytest.raises(ValidationError, match=field):
        SimConfig(collision_reflex=options)


# ---- the estimate, against the engines' own --------------------------------------------------------
def _independent_estimate(driver) -> np.ndarray:
    """What the engine itself says the contacts did to the arm's joints in the last substep."""
    if driver.config.backend == "robosuite":
        return driver.data.qfrc_constraint[driver._dof_at].copy()  # contacts, plus joint friction <= 0.1 N m
    raise AssertionError("PyBullet's estimate needs the state before the step: see _pybullet_pressing")


def _press(driver, record) -> None:
    """Tool tip from above the cube down into it and the table (tip_delta, 2 cm per step), calling
    ``record()`` after every physics substep."""
    driver.reset(DEFAULT_HOME_Q)
    above = CUBE_START_POS + np.array([0.0, 0.0, 0.06])
    for _ in range(30):
        driver.send(Command(ActionSpace.tip_delta, np.clip(above - driver.tip_pose()[0], -0.02, 0.02)))
    step_physics = driver._step_physics

    def recorded(n):
        for _ in range(n):
            record(step_physics)

    driver._step_physics = recorded
    try:
        for step in range(40):
            driver.send(
                Command(ActionSpace.tip_delta, np.array([0.0, 0.0, -0.02] if step < 30 else [0.02, 0.0, -0.02]))
            )
    finally:
        del driver._step_physics


def test_mujoco_contact_torques_match_its_total_constraint_force():
    driver = make("robosuite", "tip_delta", collision_reflex=REFLEX_OFF)
    pairs = []

    def record(step_physics):
        step_physics(1)
        torques = driver._external_joint_torques()
        if torques is not None:
            pairs.append((torques, _independent_estimate(driver)))

    try:
        _press(driver, record)
    finally:
        driver.close()
    ours, engine = (np.array(side) for side in zip(*pairs, strict=True))
    assert len(ours) > 100 and np.abs(ours).max() > 50.0, "the press was not felt"
    np.testing.assert_allclose(ours, engine, atol=0.11)  # robosuite's joint friction: 0.1 N m


def test_pybullet_contact_torques_match_inverse_dynamics_minus_motor_torques():
    """tau_ext = M(q) ddq + c(q, dq) + g(q) - tau_motor, from the state before each substep and the
    velocity change over it (Bullet integrates semi-implicitly: exactly that relation holds), in
    the substeps where Bullet adds nothing it does not report: no motor at its torque limit (a
    saturated motor's reported torque is off) and no joint at Bullet's speed clamp."""
    import pybullet

    from sim.pybullet_backend import ARM_TORQUE_LIMITS, MAX_JOINT_VELOCITY

    driver = make("pybullet", "tip_delta", collision_reflex=REFLEX_OFF)
    cid, robot, joints, arm = driver.client, driver.robot_id, driver._movable_joints, driver._arm_columns
    h = driver.physics_timestep_s
    pairs = []

    def record(step_physics):
        before = pybullet.getJointStates(robot, joints, physicsClientId=cid)
        step_physics(1)
        torques = driver._external_joint_torques()
        if torques is None:
            return
        after = pybullet.getJointStates(robot, joints, physicsClientId=cid)
        q, dq = [s[0] for s in before], np.array([s[1] for s in before])
        ddq = (np.array([s[1] for s in after]) - dq) / h
        needed = pybullet.calculateInverseDynamics(robot, q, dq.tolist(), ddq.tolist(), physicsClientId=cid)
        motor = np.array([s[3] for s in after])
        saturated = np.any(np.abs(motor[arm]) >= np.asarray(ARM_TORQUE_LIMITS) - 1e-6)
        clamped = np.any(np.abs(np.array([s[1] for s in after])[arm]) >= MAX_JOINT_VELOCITY - 1e-6)
        if not (saturated or clamped):
            pairs.append((torques, (np.array(needed) - motor)[arm]))

    try:
        _press(driver, record)
    finally:
        driver.close()
    ours, dynamics = (np.array(side) for side in zip(*pairs, strict=True))
    size = np.abs(ours).max(axis=1)
    assert len(ours) > 50 and size.max() > 50.0, "the press was not felt"
    error = np.abs(ours - dynamics).max(axis=1)
    # Measured: median 0.35% of the largest joint torque (the solver's residual); the link's centre
    # of mass taken for its frame gave 2.7%, a friction force with the wrong sign more.
    assert np.median(error / size) < 0.01, np.median(error / size)
    assert np.percentile(error / size, 90) < 0.05, np.percentile(error / size, 90)


# ---- the reflex in action -------------------------------------------------------------------------
class PressWatch:
    """Stands in for a driver's ``_step_physics``: steps one substep at a time and records the servo
    target and whether the contact torques exceed the reflex thresholds, after every substep."""

    def __init__(self, driver) -> None:
        self.driver, self.step_physics = driver, driver._step_physics
        self.targets: list[np.ndarray] = []
        self.tripped: list[bool] = []
        self.over_threshold = 0
        driver._step_physics = self

    def __call__(self, n: int) -> None:
        driver = self.driver
        for _ in range(n):
            self.step_physics(1)
            self.targets.append(driver._servo_target.copy())
            self.tripped.append(driver.reflex is not None)
            torques = driver._external_joint_torques()
            if torques is not None and reflex_reason(torques, driver._tip_jacobian(), CollisionReflexConfig()):
                self.over_threshold += 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_driving_into_the_table_trips_the_reflex_at_the_first_touch_and_the_arm_brakes(backend):
    driver = make(backend)
    unguarded = make(backend, collision_reflex=REFLEX_OFF)
    try:
        for arm in (driver, unguarded):
            arm.reset(DEFAULT_HOME_Q)
        guarded_watch, unguarded_watch = PressWatch(driver), PressWatch(unguarded)
        fault = None
        for _ in range(40):
            unguarded.send(Command(ActionSpace.joint_velocity, INTO_THE_TABLE))
            if fault is None:
                try:
                    driver.send(Command(ActionSpace.joint_velocity, INTO_THE_TABLE))
                except DriverFault as error:
                    fault = error
                    touched = driver.arm_contacts()
                    tip_at_fault = driver.tip_pose()[0][2]
        assert fault is not None and fault.reason is FaultReason.collision_reflex, "the reflex never tripped"
        assert "threshold" in fault.message and driver.reflex == fault.message
        assert touched or tip_at_fault < TABLE_TOP_Z + 0.01, (touched, tip_at_fault)
        with pytest.raises(DriverFault, match="until a reset") as refused:
            driver.send(Command(ActionSpace.joint_velocity, np.zeros(7)))
        assert refused.value.reason is FaultReason.collision_reflex
        driver.stop()
        assert np.abs(driver.read_state().dq).max() < 0.01
        # It stopped pressing: over the thresholds only while braking (measured: MuJoCo 80 substeps
        # of 2 ms, PyBullet 27 of 4.2 ms), where the arm without the reflex presses on (382, 195).
        assert guarded_watch.over_threshold * 3 < unguarded_watch.over_threshold, (
            guarded_watch.over_threshold,
            unguarded_watch.over_threshold,
        )
        # Braking from the substep the reflex tripped in, as fast as the published acceleration and
        # jerk allow (one extra substep per joint for the jerk ramp), not from the period's end.
        h = driver.physics_timestep_s
        targets = np.array(guarded_watch.targets)
        trip = guarded_watch.tripped.index(True)
        substeps_to_rest = np.ceil(np.abs(targets[trip]) / (np.array(FRANKA_DDQ_MAX) * h)).max() + 2
        at_rest = np.flatnonzero(~targets[trip:].any(axis=1))
        assert at_rest.size and at_rest[0] <= substeps_to_rest, (at_rest[:1], substeps_to_rest)
        acceleration = np.diff(targets, axis=0) / h
        assert np.all(np.abs(acceleration) <= np.array(FRANKA_DDQ_MAX) * (1 + 1e-9))
        assert np.all(np.abs(np.diff(acceleration, axis=0)) / h <= np.array(FRANKA_DDDQ_MAX) * (1 + 1e-9))
        del driver._step_physics
        driver.reset(DEFAULT_HOME_Q)  # the simulated error recovery
        assert driver.reflex is None
        driver.send(Command(ActionSpace.joint_velocity, np.zeros(7)))
    finally:
        driver.close()
        unguarded.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pushing_the_cube_gently_does_not_trip_the_reflex(backend):
    """The tool tip 1.5 cm above the table slides the cube along at 1 cm per step (0.2 m/s)."""
    driver = make(backend, "tip_delta")
    try:
        driver.reset(DEFAULT_HOME_Q)
        goal = np.array([0.46, 0.0, TABLE_TOP_Z + 0.015])
        for _ in range(25):
            driver.send(
                Command(ActionSpace.tip_delta, np.clip(goal + [0, 0, 0.05] - driver.tip_pose()[0], -0.02, 0.02))
            )
        for _ in range(25):
            driver.send(Command(ActionSpace.tip_delta, np.clip(goal - driver.tip_pose()[0], -0.005, 0.005)))
        start = driver.read_state().privileged["cube_pos"]
        touched = set()
        for _ in range(12):
            driver.send(Command(ActionSpace.tip_delta, np.array([0.01, 0.0, 0.0])))
            touched.update(other for _, other in driver.arm_contacts())
        moved = driver.read_state().privileged["cube_pos"] - start
        assert "cube" in touched and moved[0] > 0.02, (touched, moved)
        assert driver.reflex is None
    finally:
        driver.close()


def test_the_auditors_soak_episode_now_ends_in_a_reflex_before_any_limit():
    """PyBullet, joint_velocity, soak episode 263: the fingers hit the cube at step 896 (164 N in
    one substep) and, pressed on, contact drove joint 6 past the operating and published limits
    by step 942.  The reflex stops the arm at that first touch; the soak resets and goes on."""
    with safety_soak.Soak("pybullet", "joint_velocity") as soak:
        tally = soak.episode(263)
    assert tally.reflexes >= 1, "no reflex in the episode that pressed the cube into the table"
    assert tally.reflex_examples[0]["step"] == 896, tally.reflex_examples[0]
    assert tally.monitor_violations == 0 and tally.position_violations == 0 and tally.velocity_violations == 0
    assert tally.steps == safety_soak.EPISODE_STEPS


def test_a_reflex_in_a_session_ends_the_episode_as_a_safety_stop_and_collection_goes_on(tmp_path, monkeypatch):
    """A real collector on the real PyBullet simulator.  Its scene has nothing in the random
    explorer's way, so the obstacle is injected: while episode 1 sends its step 10, the contact
    torque estimate reports 30 N m on joint 2, once."""
    from collector.config import parse_session_config
    from collector.session import Collector
    from sim.pybullet_backend import PyBulletPanda
    from store import read_events, read_manifest, verify_session

    estimate, fired = PyBulletPanda._external_joint_torques, []

    def obstacle(self):
        if not fired and collector.episode_index == 1 and collector.episode_step == 10:
            fired.append(True)
            return np.array([0.0, 30.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        return estimate(self)

    monkeypatch.setattr(PyBulletPanda, "_external_joint_torques", obstacle)
    config = parse_session_config(
        {
            "session_id": "reflex",
            "data_root": str(tmp_path / "data"),
            "robot": {"backend": "pybullet", "options": {"cameras": []}},
            "episode_steps": 20,
            "explorer": {"name": "random"},
            "stop": {"episodes": 3},
            "control_address": f"ipc://{tmp_path}/control",
            "telemetry_address": f"ipc://{tmp_path}/telemetry",
        }
    )
    collector = Collector(config, install_signal_handlers=False)
    assert collector.run() == 0
    session = tmp_path / "data" / "reflex"
    assert verify_session(session).clean
    outcomes = [(entry.outcome, entry.steps) for entry in read_manifest(session)]
    assert outcomes[0] == ("complete", 20) and outcomes[2] == ("complete", 20), outcomes
    assert outcomes[1] == ("safety_stop", 10), outcomes  # steps 0-9; step 10's command faulted
    reflexes = [e for e in read_events(session) if e.get("event") == "collision_reflex"]
    assert len(reflexes) == 1 and reflexes[0]["episode"] == 1, reflexes
    assert reflexes[0]["detail"].startswith("collision reflex: external") and "threshold" in reflexes[0]["detail"]
    assert not [e for e in read_events(session) if e["kind"] in ("driver_fault", "giving_up")]
