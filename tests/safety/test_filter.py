"""The command filter's guarantees (issue 3, "Must be true"), as hypothesis properties.

Single step, from random states inside the limits (q inside the operating joint limits with the
tool tip in the box and the arm above the table, dq within the cap, tip_pos from FK) and arbitrary
actions (huge, tiny, NaN, inf, alternating signs) in both action spaces:
- the command never exceeds the velocity cap;
- it differs from the previous command (a fresh filter takes the measured velocity) by at most
  acceleration * period, except when braking harder toward zero (stopping is always allowed:
  non-finite input, or a random state that cannot brake in time at the acceleration limit), and
  never by more than the robot's published acceleration limit * period (no stop is a step);
- integrating it for one period (q += v * period) stays inside the joint limits, the box and
  above the table.
Closed loop on the integrator model, many steps of adversarial actions: never outside any limit,
and the acceleration limit is never exceeded except by the NaN stops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safety import SafeCommand, SafetyEvent, SafetyFilter
from safety.filter import brake, max_speed_toward
from tests.safety.helpers import HOME_Q, LIMITS, inside, make_state, margins, random_inside_q

PERIOD = 0.05
STEP = LIMITS.accelerations * PERIOD
HARD_STEP = np.asarray(LIMITS.acceleration_max) * PERIOD
"""The robot's published acceleration limits per period: no command change, not even a stop, exceeds it."""
CAP = LIMITS.velocity_caps
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

special = st.sampled_from([0.0, 1e-12, -1e-12, 1e6, -1e6, 1e300, -1e300, math.nan, math.inf, -math.inf])
value = st.one_of(st.floats(-50, 50), special)


@st.composite
def states(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    q = random_inside_q(rng)
    dq = rng.uniform(-CAP, CAP) * draw(st.sampled_from([0.0, 0.3, 1.0]))
    return make_state(q, dq, time=float(seed % 1000))


def actions(dim: int):
    alternating = st.floats(0, 100).map(lambda a: np.array([a * (-1) ** i for i in range(dim)]))
    return st.one_of(st.lists(value, min_size=dim, max_size=dim).map(np.array), alternating)


def check_step(state, command: SafeCommand, events: list[SafetyEvent], previous: np.ndarray) -> None:
    v = command.values
    assert command.kind == "joint_velocity"
    assert v.shape == (7,) and np.all(np.isfinite(v))
    assert np.all(np.abs(v) <= CAP + 1e-12), v
    assert np.all(np.abs(v - previous) <= HARD_STEP + 1e-9), (v, previous)
    jump_ok = np.abs(v - previous) <= STEP + 1e-9
    braking = (v * previous >= 0) & (np.abs(v) <= np.abs(previous) + 1e-12)
    assert np.all(jump_ok | braking), (v, previous)
    if not np.all(jump_ok):  # a harder-than-allowed change is reported
        assert any(e.kind in ("emergency_brake", "nonfinite", "fault") for e in events)
    unstoppable = any(e.kind == "emergency_brake" and e.where == "all" for e in events)
    if unstoppable:
        # A state moving toward a limit faster than even the published acceleration can stop it
        # before the limit (drawn here, never reached through the filter): the hardest braking.
        np.testing.assert_array_equal(v, brake(previous, HARD_STEP))
    else:
        assert inside(state.q + v * PERIOD), margins(state.q + v * PERIOD)
    for event in events:
        event.to_dict()


@pytest.mark.parametrize("action_space", ["joint_velocity", "tip_delta"])
def test_single_step_properties(action_space):
    """One call from random states with arbitrary actions: the properties of the module docstring."""
    dim = 7 if action_space == "joint_velocity" else 3

    @SETTINGS
    @given(state=states(), action=actions(dim))
    def run(state, action):
        safety_filter = SafetyFilter(LIMITS, 20.0, action_space)
        command, events = safety_filter.filter(state, action)
        check_step(state, command, events, np.clip(state.dq, -CAP, CAP))
        if not np.all(np.isfinite(action)):  # a planned stop: braking toward zero, never speeding up
            assert any(e.kind == "nonfinite" for e in events)
            previous = np.clip(state.dq, -CAP, CAP)
            v = command.values
            assert np.all((v * previous >= 0) & (np.abs(v) <= np.abs(previous) + 1e-12)), (v, previous)
            expected = np.sign(previous) * np.maximum(np.abs(previous) - STEP, 0.0)
            if not any(e.kind == "emergency_brake" for e in events):  # braking at the operating limit
                assert np.all(np.abs(v) <= np.abs(expected) + 1e-12) or np.all(np.abs(v) <= np.abs(previous))

    run()


@SETTINGS
@given(state=states(), action=actions(7), bad=st.sampled_from(["q", "dq", "tip_pos", "time"]))
def test_non_finite_state_gives_the_fastest_allowed_stop_and_a_fault_event(state, action, bad):
    value = getattr(state, bad)
    setattr(state, bad, np.where(np.arange(np.size(value)) == 0, np.nan, value) if np.ndim(value) else math.inf)
    command, events = SafetyFilter().filter(state, action)
    dq = np.asarray(state.dq, dtype=float)
    if np.all(np.isfinite(dq)):  # brake from the measured velocity at the published limits
        expected = np.sign(dq) * np.maximum(np.abs(np.clip(dq, -CAP, CAP)) - HARD_STEP, 0.0)
    else:  # nothing finite to brake from
        expected = np.zeros(7)
    np.testing.assert_allclose(command.values, expected, atol=1e-12)
    assert any(e.kind == "nonfinite" and e.where == f"state.{bad}" for e in events)


def adversarial_actions(rng: np.random.Generator, style: str, dim: int, scale: float, steps: int) -> np.ndarray:
    if style == "uniform10x":
        out = rng.uniform(-10 * scale, 10 * scale, (steps, dim))
    elif style == "push":  # hold one extreme action for long stretches: drives into the limits
        out = np.repeat(rng.choice([-10 * scale, 10 * scale], (steps // 40 + 1, dim)), 40, axis=0)[:steps]
    elif style == "alternating":
        out = 10 * scale * np.where(np.arange(steps)[:, None] % 2 == 0, 1.0, -1.0) * rng.choice([-1, 1], dim)
    else:  # tiny
        out = rng.uniform(-1e-9, 1e-9, (steps, dim))
    bursts = rng.random(steps) < 0.02
    out[bursts, rng.integers(0, dim)] = rng.choice([math.nan, math.inf, -math.inf])
    return out


def run_closed_loop(action_space: str, style: str, seed: int, steps: int, start: np.ndarray = HOME_Q):
    rng = np.random.default_rng(seed)
    safety_filter = SafetyFilter(LIMITS, 20.0, action_space)
    scale = LIMITS.velocity_cap if action_space == "joint_velocity" else LIMITS.tip_delta_max
    q, previous = start.copy(), np.zeros(7)
    closest_joint, closest_cartesian = np.inf, np.inf
    for action in adversarial_actions(rng, style, safety_filter.action_dim, scale, steps):
        command, events = safety_filter.filter(make_state(q, previous), action)
        v = command.values
        assert np.all(np.abs(v) <= CAP + 1e-12)
        assert np.all(np.abs(v - previous) <= HARD_STEP + 1e-9), "a command change beyond the published limits"
        if not any(e.kind == "nonfinite" for e in events):
            assert np.all(np.abs(v - previous) <= STEP + 1e-9), (v, previous, events)
            assert not any(e.kind == "emergency_brake" for e in events), events
        q = q + v * PERIOD
        previous = v
        joint, cartesian = margins(q)
        closest_joint, closest_cartesian = min(closest_joint, joint.min()), min(closest_cartesian, cartesian.min())
        assert joint.min() >= -1e-9 and cartesian.min() >= -1e-9, (joint, cartesian)
    return closest_joint, closest_cartesian


@settings(max_examples=24, deadline=None)
@given(
    action_space=st.sampled_from(["joint_velocity", "tip_delta"]),
    style=st.sampled_from(["uniform10x", "push", "alternating", "tiny"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_closed_loop_on_the_integrator_never_leaves_the_limits(action_space, style, seed):
    run_closed_loop(action_space, style, seed, steps=250)


@pytest.mark.parametrize("action_space", ["joint_velocity", "tip_delta"])
def test_long_closed_loop_reaches_the_boundaries_and_stays_inside(action_space):
    closest_joint, closest_cartesian = run_closed_loop(action_space, "push", seed=7, steps=3000)
    print(f"{action_space}: closest approach joint {closest_joint:.2e} rad, Cartesian {closest_cartesian:.2e} m")
    # the adversary did reach a boundary (the filter plans tracking_margin_position inside it)
    assert closest_cartesian < LIMITS.tracking_margin_position + 0.005


def test_joint_brakes_to_a_stop_at_its_limit():
    # joint 7 swings the hand near link 5: without the collision margin its capsules stay clear all the way
    safety_filter = SafetyFilter(LIMITS.model_copy(update={"collision_margin": 0.0}))
    q, v = HOME_Q.copy(), np.zeros(7)
    for _ in range(400):  # push joint 7 (no effect on the tip position) up at the cap
        command, _ = safety_filter.filter(make_state(q, v), np.array([0, 0, 0, 0, 0, 0, 5.0]))
        v = command.values
        q = q + v * PERIOD
    assert v[6] == pytest.approx(0.0, abs=1e-9)
    target = LIMITS.q_upper[6] - LIMITS.tracking_margin_joint
    assert target - 1e-3 < q[6] <= target + 1e-12


def test_max_speed_toward_is_the_exact_braking_bound():
    rng = np.random.default_rng(3)
    for _ in range(200):
        distance, acc = rng.uniform(0, 0.3), rng.uniform(1, 10)
        v = float(max_speed_toward(np.array(distance), np.array(acc), PERIOD))
        travelled, speed = v * PERIOD, v
        while speed > 0:
            speed = max(speed - acc * PERIOD, 0.0)
            travelled += speed * PERIOD
        assert travelled <= distance + 1e-12
        assert travelled > distance - 1e-9  # and it is the largest such speed


def test_events_name_the_intervention():
    safety_filter = SafetyFilter()
    state = make_state(HOME_Q, np.zeros(7))
    _, events = safety_filter.filter(state, np.array([2.0, 0, 0, 0, 0, 0, 0]))
    kinds = {(e.kind, e.where) for e in events}
    assert ("velocity_clip", 0) in kinds and ("acceleration_limit", 0) in kinds
    assert events[0].to_dict()["magnitude"] == pytest.approx(1.5)
    command, events = safety_filter.filter(state, np.array([0, 0, 0.1]))
    assert command.is_stop and events[0].kind == "fault"


def test_filter_is_deterministic_and_reset_clears_its_memory():
    rng = np.random.default_rng(5)
    actions = rng.uniform(-0.02, 0.02, (50, 3))

    def run(safety_filter):
        q, v, out = HOME_Q.copy(), np.zeros(7), []
        for action in actions:
            v = safety_filter.filter(make_state(q, v), action)[0].values
            q = q + v * PERIOD
            out.append(v)
        return np.array(out)

    safety_filter = SafetyFilter(action_space="tip_delta")
    first = run(safety_filter)
    safety_filter.reset()
    np.testing.assert_array_equal(run(safety_filter), first)
    np.testing.assert_array_equal(run(SafetyFilter(action_space="tip_delta")), first)


def test_tip_delta_moves_the_tool_tip_and_keeps_it_pointing_down():
    from safety import kinematics

    safety_filter = SafetyFilter(action_space="tip_delta")
    for direction in np.eye(3):
        safety_filter.reset()
        q, v = HOME_Q.copy(), np.zeros(7)
        start = kinematics.tip_position(q)
        for k in range(30):
            action = 0.005 * direction if k < 10 else np.zeros(3)
            v = safety_filter.filter(make_state(q, v), action)[0].values
            q = q + v * PERIOD
        moved = kinematics.tip_position(q) - start
        assert np.linalg.norm(moved - 0.05 * direction) < 0.002, moved
        assert kinematics.tip_pose(q)[1][2, 2] < -0.99


@settings(max_examples=20, deadline=None)
@given(
    action_space=st.sampled_from(["joint_velocity", "tip_delta"]),
    style=st.sampled_from(["uniform10x", "push", "alternating"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_from_random_start_poses_no_link_pair_or_link_and_table_comes_closer_than_the_margin(action_space, style, seed):
    """Closed loop on the integrator model from random poses inside the limits: every checked pair
    of link capsules stays at least ``collision_margin`` apart, every moving link capsule at least
    that far above the table, and joint 6 outside the wrist exclusion — computed here from the
    capsule model directly, not from the filter's margins."""
    from safety import collision_model

    start = random_inside_q(np.random.default_rng(seed))
    safety_filter = SafetyFilter(LIMITS, 20.0, action_space)
    scale = LIMITS.velocity_cap if action_space == "joint_velocity" else LIMITS.tip_delta_max
    rng = np.random.default_rng(seed + 1)
    q, previous = start.copy(), np.zeros(7)
    fingers = collision_model.CAPSULE_NAMES.index("fingers")
    table_margin = np.where(np.arange(collision_model.NUM_CAPSULES) == fingers, 0.0, LIMITS.collision_margin)
    for action in adversarial_actions(rng, style, safety_filter.action_dim, scale, 120):
        command, _ = safety_filter.filter(make_state(q, previous), action)
        previous = command.values
        q = q + previous * PERIOD
        self_clearance, table_clearance = collision_model.clearances(q, LIMITS.table_height)
        assert self_clearance.min() >= LIMITS.collision_margin - 1e-9, (
            collision_model.SELF_COLLISION_PAIR_NAMES[int(np.argmin(self_clearance))],
            self_clearance.min(),
        )
        assert np.all(table_clearance >= table_margin - 1e-9), table_clearance
        assert collision_model.wrist_clearance(q) >= -1e-9


@pytest.mark.parametrize("action_space", ["joint_velocity", "tip_delta"])
def test_a_state_that_cannot_stop_inside_gets_the_hardest_braking(action_space):
    """Found by hypothesis: the tool tip 0.26 mm inside x_min while joint 2 moves it outward at
    0.455 rad/s.  Even braking at the published acceleration ends 0.83 mm outside; the filter
    says so (``emergency_brake`` on all joints) and brakes every joint as hard as the arm can."""
    q = np.array([0.19594198, 1.02268135, 0.43511661, -1.73174017, 0.3121053, 1.29270587, -1.53173254])
    dq = np.array([-0.04388393, 0.45519166, 0.23777596, -0.35215709, -0.12145953, -0.06123526, 0.48884639])
    state = make_state(q, dq, time=419.0)
    action = np.zeros(7 if action_space == "joint_velocity" else 3)
    command, events = SafetyFilter(LIMITS, 20.0, action_space).filter(state, action)
    np.testing.assert_array_equal(command.values, brake(np.clip(dq, -CAP, CAP), HARD_STEP))
    assert any(e.kind == "emergency_brake" and e.where == "all" for e in events)
    check_step(state, command, events, np.clip(dq, -CAP, CAP))
