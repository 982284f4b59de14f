"""The capsule collision model (safety/collision_model.py) against brute force and both simulators.

- `segment_distances` against an independent brute force (one segment sampled densely, exact
  point-to-segment distances to the other) on random, parallel, collinear, nearly parallel,
  point and crossing segments;
- every collision vertex of both engines, placed by the engine at random configurations (fingers
  closed and open), lies inside its capsule placed by our kinematics, by at least the fit's pad;
- the pair lists: every non-adjacent pair is checked, inseparable or proved never to touch (the
  proofs are rerun);
- against the engines (the key test): at thousands of configurations within Franka's joint limits,
  uniform, near the model's boundary, and with exactly one check violated (so that a missing check
  shows), wherever every checked clearance is positive neither
  PyBullet nor MuJoCo reports an arm self-contact (other than on `INSEPARABLE_PAIRS`) or an arm
  contact with the table; how conservative the model is is printed (pytest -s);
- capsule clearances never exceed the engines' own distances (the capsules contain the shapes).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safety import collision_model as cm
from safety import kinematics
from safety.limits import FRANKA_Q_MAX, FRANKA_Q_MIN, SIM_TABLE_TOP_Z
from safety.reset import DEFAULT_HOME_Q

Q_MIN, Q_MAX = np.array(FRANKA_Q_MIN), np.array(FRANKA_Q_MAX)
FINGER_OPEN = 0.04
"""Fully open finger joint position, m (each finger)."""


def uniform_configs(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(Q_MIN, Q_MAX, (n, 7))


# ---- segment distances ------------------------------------------------------------------------------
def point_segment_distances(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact distances of points (n, 3) to the segment a-b (projection, clamped)."""
    d = b - a
    length2 = float(d @ d)
    t = np.zeros(len(points)) if length2 == 0.0 else np.clip((points - a) @ d / length2, 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * d), axis=1)


def brute_force(p0, p1, q0, q1, n: int = 4001) -> tuple[float, float]:
    """(distance, tolerance): each segment sampled at n points, each sample's exact distance to the
    other segment; the smaller minimum exceeds the true distance by at most half the spacing."""
    s = np.linspace(0.0, 1.0, n)[:, None]
    first = point_segment_distances(p0 + s * (p1 - p0), q0, q1).min()
    second = point_segment_distances(q0 + s * (q1 - q0), p0, p1).min()
    spacing = min(np.linalg.norm(p1 - p0), np.linalg.norm(q1 - q0)) / (n - 1)
    return float(min(first, second)), spacing / 2


coordinate = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)
vector = st.tuples(coordinate, coordinate, coordinate).map(np.array)
KINDS = (
    "general",
    "parallel",
    "antiparallel",
    "collinear",
    "nearly_parallel",
    "point_first",
    "point_second",
    "points",
    "crossing",
)


@st.composite
def segment_pairs(draw):
    kind = draw(st.sampled_from(KINDS))
    p0, p1, q0, q1 = draw(vector), draw(vector), draw(vector), draw(vector)
    d = p1 - p0
    scale = st.floats(0.05, 2.0)
    if kind == "parallel":
        q1 = q0 + draw(scale) * d
    elif kind == "antiparallel":
        q1 = q0 - draw(scale) * d
    elif kind == "collinear":
        q0, q1 = p0 + draw(st.floats(-1.5, 2.5)) * d, p0 + draw(st.floats(-1.5, 2.5)) * d
    elif kind == "nearly_parallel":
        q1 = q0 + draw(scale) * d + 1e-7 * draw(vector)
    elif kind == "point_first":
        p1 = p0.copy()
    elif kind == "point_second":
        q1 = q0.copy()
    elif kind == "points":
        p1, q1 = p0.copy(), q0.copy()
    elif kind == "crossing":  # the second segment passes through a point of the first
        middle = p0 + draw(st.floats(0.0, 1.0)) * d
        q0, q1 = middle + draw(scale) * q0, middle - draw(scale) * q0
    return kind, p0, p1, q0, q1


@settings(max_examples=400, deadline=None)
@given(segment_pairs())
def test_segment_distance_matches_brute_force(case):
    kind, p0, p1, q0, q1 = case
    distance = float(cm.segment_distances(p0, p1, q0, q1))
    reference, tolerance = brute_force(p0, p1, q0, q1)
    # A segment shorter than 1 micron counts as a point: the result may be off by its length; for
    # (nearly) parallel segments rounding allows an error of about 1e-8 times their length.
    lengths = np.linalg.norm(p1 - p0), np.linalg.norm(q1 - q0)
    allowed = sum(length for length in lengths if length < 1e-6) + 1e-8 * sum(lengths) + 1e-12
    assert distance <= reference + allowed, (kind, distance, reference)
    assert distance >= reference - tolerance - allowed, (kind, distance, reference)
    assert distance == pytest.approx(float(cm.segment_distances(q0, q1, p0, p1)), abs=2 * allowed)  # symmetric
    if kind == "crossing":
        assert distance <= allowed + 1e-12


def test_segment_distances_broadcast_and_batch():
    rng = np.random.default_rng(0)
    p0, p1, q0, q1 = rng.normal(size=(4, 5, 6, 3))
    batch = cm.segment_distances(p0, p1, q0, q1)
    assert batch.shape == (5, 6)
    one_by_one = [
        [float(cm.segment_distances(p0[i, j], p1[i, j], q0[i, j], q1[i, j])) for j in range(6)] for i in range(5)
    ]
    np.testing.assert_allclose(batch, one_by_one, rtol=0, atol=1e-12)
    # One segment against many (broadcast).
    np.testing.assert_allclose(
        cm.segment_distances(p0[0, 0], p1[0, 0], q0[0], q1[0]),
        [float(cm.segment_distances(p0[0, 0], p1[0, 0], q0[0, j], q1[0, j])) for j in range(6)],
        atol=1e-12,
    )


# ---- the batch functions -----------------------------------------------------------------------------
def test_clearances_agree_with_the_segments_and_have_the_documented_shapes():
    q = uniform_configs(17 * 20, seed=1).reshape(17, 20, 7)
    frames = kinematics.frames(q)
    p0, p1 = cm.capsule_segments(frames)
    assert p0.shape == p1.shape == (17, 20, cm.NUM_CAPSULES, 3)
    a = np.array([i for i, _ in cm.SELF_COLLISION_PAIRS])
    b = np.array([j for _, j in cm.SELF_COLLISION_PAIRS])
    expected_self = cm.segment_distances(p0[..., a, :], p1[..., a, :], p0[..., b, :], p1[..., b, :])
    expected_self -= cm.CAPSULE_RADII[a] + cm.CAPSULE_RADII[b]
    self_clearance = cm.self_clearances(frames)
    assert self_clearance.shape == (17, 20, len(cm.SELF_COLLISION_PAIRS))
    np.testing.assert_allclose(self_clearance, expected_self, rtol=0, atol=1e-12)

    table = cm.table_clearances(frames, SIM_TABLE_TOP_Z)
    assert table.shape == (17, 20, cm.NUM_CAPSULES)
    lowest = np.minimum(p0[..., 2], p1[..., 2]) - cm.CAPSULE_RADII - SIM_TABLE_TOP_Z
    np.testing.assert_allclose(table[..., cm.TABLE_CHECKED], lowest[..., cm.TABLE_CHECKED], atol=1e-12)
    assert np.isposinf(table[..., ~cm.TABLE_CHECKED]).all()
    assert set(np.array(cm.CAPSULE_NAMES)[~cm.TABLE_CHECKED]) == {"link0", "pedestal", "controller_box", "link1"}

    both = cm.clearances_from_frames(frames, SIM_TABLE_TOP_Z)
    np.testing.assert_array_equal(both[0], self_clearance)
    np.testing.assert_array_equal(both[1], table)
    single = cm.clearances(q[3, 4], SIM_TABLE_TOP_Z)
    np.testing.assert_allclose(single[0], self_clearance[3, 4], atol=1e-12)
    np.testing.assert_allclose(single[1], table[3, 4], atol=1e-12)


def test_table_clearance_is_the_capsules_lowest_point():
    """Against a dense sampling of each capsule's surface (its lowest point is below the lower end)."""
    frames = kinematics.frames(uniform_configs(20, seed=2))
    p0, p1 = cm.capsule_segments(frames)
    table = cm.table_clearances(frames, SIM_TABLE_TOP_Z)
    s = np.linspace(0.0, 1.0, 201)[:, None]
    for n in range(len(frames)):
        for k in np.flatnonzero(cm.TABLE_CHECKED):
            axis_z = (p0[n, k] + s * (p1[n, k] - p0[n, k]))[:, 2]
            assert table[n, k] == pytest.approx(axis_z.min() - cm.CAPSULE_RADII[k] - SIM_TABLE_TOP_Z, abs=1e-12)


def test_home_is_clear():
    self_clearance, table = cm.clearances(np.asarray(DEFAULT_HOME_Q), SIM_TABLE_TOP_Z)
    assert self_clearance.min() > 0.0 and table.min() > 0.1


# ---- pairs ---------------------------------------------------------------------------------------------
def test_every_non_adjacent_pair_is_checked_inseparable_or_proved_apart():
    names = cm.CAPSULE_NAMES
    non_adjacent = {
        (names[a], names[b])
        for a in range(cm.NUM_CAPSULES)
        for b in range(a + 1, cm.NUM_CAPSULES)
        if not cm.adjacent(a, b)
    }
    checked = {(names[a], names[b]) for a, b in cm.SELF_COLLISION_PAIRS}
    inseparable, never = set(cm.INSEPARABLE_PAIRS), set(cm.NEVER_TOUCHING_PAIRS)
    assert checked | inseparable | never == non_adjacent
    assert not (checked & inseparable) and not (checked & never) and not (inseparable & never)
    assert len(cm.SELF_COLLISION_PAIR_NAMES) == len(cm.SELF_COLLISION_PAIRS)


def test_inseparable_pairs_are_never_clear_of_each_other():
    """The documented reason: these capsules are never more than a centimetre apart."""
    frames = kinematics.frames(uniform_configs(20_000, seed=3))
    p0, p1 = cm.capsule_segments(frames)
    for first, second in cm.INSEPARABLE_PAIRS:
        a, b = cm.CAPSULE_NAMES.index(first), cm.CAPSULE_NAMES.index(second)
        clearance = cm.segment_distances(p0[:, a], p1[:, a], p0[:, b], p1[:, b]) - cm.CAPSULE_RADII[[a, b]].sum()
        assert clearance.max() < 0.01 and clearance.min() < 0.0, (first, second)


@pytest.mark.slow
def test_never_touching_pairs_are_proved():
    from benchmarks.fit_collision_capsules import prove_separated

    for (first, second), smallest in cm.NEVER_TOUCHING_PAIRS.items():
        a, b = cm.CAPSULE_NAMES.index(first), cm.CAPSULE_NAMES.index(second)
        verdict, found, _ = prove_separated(a, b)
        assert verdict == "never", (first, second, verdict, found)
        assert found >= smallest


def test_never_touching_pairs_do_not_overlap_at_sampled_configurations():
    frames = kinematics.frames(uniform_configs(50_000, seed=4))
    p0, p1 = cm.capsule_segments(frames)
    for first, second in cm.NEVER_TOUCHING_PAIRS:
        a, b = cm.CAPSULE_NAMES.index(first), cm.CAPSULE_NAMES.index(second)
        clearance = cm.segment_distances(p0[:, a], p1[:, a], p0[:, b], p1[:, b]) - cm.CAPSULE_RADII[[a, b]].sum()
        assert clearance.min() > 0.0, (first, second)


# ---- the capsules contain the engines' collision geometry ---------------------------------------------
@pytest.fixture(scope="module")
def engine_geometry():
    from benchmarks.fit_collision_capsules import MujocoGeometry, PyBulletGeometry

    engines = {"pybullet": PyBulletGeometry(), "mujoco": MujocoGeometry()}
    yield engines
    engines["pybullet"].close()


def test_every_collision_vertex_is_inside_its_capsule(engine_geometry):
    configs = np.concatenate([uniform_configs(25, seed=5), [DEFAULT_HOME_Q]])
    worst: dict[str, float] = {}
    for q in configs:
        p0, p1 = cm.capsule_segments(kinematics.frames(q))
        for engine_name, engine in engine_geometry.items():
            for finger in (0.0, FINGER_OPEN):
                for part, points in engine.points(q, finger).items():
                    k = cm.CAPSULE_NAMES.index(part)
                    inside = point_segment_distances(points, p0[k], p1[k]).max() - cm.CAPSULE_RADII[k]
                    key = f"{engine_name} {part}"
                    worst[key] = max(worst.get(key, -np.inf), inside)
    print("\nlargest distance of a collision vertex to its capsule's surface (mm):")
    for key, value in sorted(worst.items()):
        print(f"  {key:25s} {1000 * value:+7.2f}")
    parts = {key.split()[1] for key in worst}
    assert parts == set(cm.CAPSULE_NAMES)
    assert max(worst.values()) <= -cm.FIT_PAD + 1e-6


# ---- against the engines ------------------------------------------------------------------------------
def _link(name: str) -> int | None:
    """Link number of an engine part name (either engine), None for the table/floor."""
    name = name.removeprefix("panda_")
    if name in ("hand", "leftfinger", "rightfinger", "left_finger", "right_finger"):
        return cm.HAND
    if name.startswith("link"):
        return int(name[4:])
    return None


EXCLUDED_LINK_PAIRS = {
    tuple(sorted((int(cm.CAPSULE_LINK[cm.CAPSULE_NAMES.index(a)]), int(cm.CAPSULE_LINK[cm.CAPSULE_NAMES.index(b)]))))
    for a, b in cm.INSEPARABLE_PAIRS
}
"""Link pairs of `INSEPARABLE_PAIRS` (single capsules each): engine contacts there are counted apart."""


class Engines:
    """Both simulated scenes, set to a configuration and asked for the arm's contacts."""

    def __init__(self) -> None:
        from sim.config import SimConfig
        from sim.pybullet_backend import PyBulletPanda
        from sim.robosuite_backend import RobosuitePanda

        self.pybullet = PyBulletPanda(SimConfig(backend="pybullet", cameras=()))
        self.mujoco = RobosuitePanda(SimConfig(backend="robosuite", cameras=()))
        self.pybullet.connect()
        self.mujoco.connect()

    def contacts(self, q: np.ndarray, finger: float) -> dict[str, set]:
        import mujoco

        from sim.quiet_pybullet import pybullet

        pb = self.pybullet
        for joint, angle in zip(pb.arm_joints, q, strict=True):
            pybullet.resetJointState(pb.robot_id, joint, float(angle), 0.0, physicsClientId=pb.client)
        for joint in pb.finger_joints:
            pybullet.resetJointState(pb.robot_id, joint, finger, 0.0, physicsClientId=pb.client)
        mj = self.mujoco
        mj.data.qpos[mj._arm_qpos] = q
        mj.data.qpos[mj._finger_qpos] = [finger, -finger]
        mujoco.mj_forward(mj.model, mj.data)
        return {"pybullet": set(pb._arm_contacts()), "mujoco": set(mj._arm_contacts())}

    def close(self) -> None:
        self.pybullet.close()
        self.mujoco.close()


@pytest.fixture(scope="module")
def engines():
    scenes = Engines()
    yield scenes
    scenes.close()


def classify(contacts: set) -> tuple[list, list]:
    """(contacts the model must foresee, contacts on `INSEPARABLE_PAIRS`): arm-arm pairs as link
    pairs, arm-table contacts as (link, "table"); cube contacts are not collisions."""
    counted, excluded = [], []
    for part, other in contacts:
        if "cube" in (part, other):
            continue
        first, second = _link(part), _link(other)
        if first is None or second is None:  # the table or the floor
            counted.append((first if second is None else second, "table"))
        elif tuple(sorted((first, second))) in EXCLUDED_LINK_PAIRS:
            excluded.append(tuple(sorted((first, second))))
        else:
            counted.append(tuple(sorted((first, second))))
    return counted, excluded


def near_boundary_configs(n: int, seed: int, band: float = 0.01) -> np.ndarray:
    """Configurations the model just calls clear: the smallest clearance in (0, band] m."""
    found = []
    rng = np.random.default_rng(seed)
    while sum(len(f) for f in found) < n:
        q = rng.uniform(Q_MIN, Q_MAX, (20_000, 7))
        self_clearance, table = cm.clearances(q, SIM_TABLE_TOP_Z)
        smallest = np.minimum(self_clearance.min(axis=1), table.min(axis=1))
        found.append(q[(smallest > 0.0) & (smallest <= band)])
    return np.concatenate(found)[:n]


def single_violation_configs(per_constraint: int, seed: int, draws: int = 200_000) -> np.ndarray:
    """Configurations where exactly one checked clearance (a pair or a capsule above the table) is
    negative, up to ``per_constraint`` per clearance: were that one check missing, the model would
    call them clear, and where the engines see a contact there the key test would fail."""
    rng = np.random.default_rng(seed)
    checked = np.flatnonzero(cm.TABLE_CHECKED)
    picked: dict[int, list[np.ndarray]] = {}
    for _ in range(draws // 20_000):
        q = rng.uniform(Q_MIN, Q_MAX, (20_000, 7))
        self_clearance, table = cm.clearances(q, SIM_TABLE_TOP_Z)
        violated = np.concatenate([self_clearance <= 0.0, table[:, checked] <= 0.0], axis=1)
        single = violated.sum(axis=1) == 1
        for config, which in zip(q[single], violated[single].argmax(axis=1), strict=True):
            if len(picked.setdefault(int(which), [])) < per_constraint:
                picked[int(which)].append(config)
    return np.array([config for configs in picked.values() for config in configs])


def test_where_the_model_sees_clearance_the_engines_see_no_contact(engines):
    uniform, near = uniform_configs(5000, seed=6), near_boundary_configs(5000, seed=7)
    single = single_violation_configs(60, seed=9)
    failures = []
    stats = {}
    for label, configs in (("uniform", uniform), ("near the boundary", near), ("one check violated", single)):
        self_clearance, table = cm.clearances(configs, SIM_TABLE_TOP_Z)
        clear = (self_clearance.min(axis=1) > 0.0) & (table.min(axis=1) > 0.0)
        engine_contact = np.zeros((len(configs), 2), dtype=bool)
        excluded = np.zeros((len(configs), 2), dtype=bool)
        for i, q in enumerate(configs):
            finger = FINGER_OPEN if i % 2 else 0.0
            for j, (engine, contacts) in enumerate(engines.contacts(q, finger).items()):
                counted, skipped = classify(contacts)
                engine_contact[i, j], excluded[i, j] = bool(counted), bool(skipped)
                if counted and clear[i]:
                    failures.append((label, engine, q.round(4).tolist(), finger, counted))
        stats[label] = (clear, engine_contact, excluded)

    print(f"\n{'sample':18s} {'configs':>7s} {'model clear':>11s}  engine  contact  false pos. (flagged, no contact)")
    for label, (clear, contact, excluded) in stats.items():
        for j, engine in enumerate(("pybullet", "mujoco")):
            flagged = ~clear
            false_positive = (flagged & ~contact[:, j]).sum() / max(flagged.sum(), 1)
            print(
                f"{label:18s} {len(clear):7d} {clear.mean():11.1%}  {engine:8s} {contact[:, j].mean():6.1%}"
                f"  {false_positive:6.1%} of {flagged.sum()}; contacts on inseparable pairs:"
                f" {excluded[:, j].mean():.1%} (of them model-clear: {(excluded[:, j] & clear).sum()})"
            )
    assert stats["near the boundary"][0].all()
    assert not failures, f"{len(failures)} contacts the model did not foresee, e.g. {failures[:5]}"


def _capsule_clearance(q: np.ndarray, first: str, second: str) -> np.ndarray:
    p0, p1 = cm.capsule_segments(kinematics.frames(q))
    a, b = cm.CAPSULE_NAMES.index(first), cm.CAPSULE_NAMES.index(second)
    return cm.segment_distances(p0[:, a], p1[:, a], p0[:, b], p1[:, b]) - cm.CAPSULE_RADII[[a, b]].sum()


ENGINE_DISTANCE_PAIRS = (
    # capsule pair, MuJoCo geoms, PyBullet links: each capsule contains exactly these shapes
    (("link1", "link5"), ("robot0_link1_collision", "robot0_link5_collision"), ("panda_link1", "panda_link5")),
    (("link2", "link7"), ("robot0_link2_collision", "robot0_link7_collision"), ("panda_link2", "panda_link7")),
    (("link2", "hand"), ("robot0_link2_collision", "gripper0_right_hand_collision"), ("panda_link2", "panda_hand")),
    (("link5", "hand"), ("robot0_link5_collision", "gripper0_right_hand_collision"), ("panda_link5", "panda_hand")),
    (("link0", "link6"), ("robot0_link0_collision", "robot0_link6_collision"), ("panda_link0", "panda_link6")),
)


def test_capsule_clearances_never_exceed_the_engines_distances(engines):
    """The capsules contain the shapes, so where the shapes are apart the capsules are no further
    apart than they are; the distribution of (capsule clearance - engine distance) shows how
    conservative the model is pair by pair."""
    import mujoco

    from sim.quiet_pybullet import pybullet

    configs = uniform_configs(400, seed=8)
    mj, pb = engines.mujoco, engines.pybullet
    pb_link = {name: index for index, name in pb.link_names.items()}
    print("\ncapsule clearance - engine distance where the engine's shapes are apart (m), quantiles 0/50/100%:")
    for capsules, geoms, links in ENGINE_DISTANCE_PAIRS:
        capsule = _capsule_clearance(configs, *capsules)
        g1, g2 = (mujoco.mj_name2id(mj.model, mujoco.mjtObj.mjOBJ_GEOM, name) for name in geoms)
        mj_distance, pb_distance = [], []
        for q in configs:
            engines.contacts(q, 0.0)
            mj_distance.append(mujoco.mj_geomDistance(mj.model, mj.data, g1, g2, 2.0, None))
            points = pybullet.getClosestPoints(
                pb.robot_id, pb.robot_id, 2.0, pb_link[links[0]], pb_link[links[1]], physicsClientId=pb.client
            )
            pb_distance.append(min(point[8] for point in points))
        for engine, distance in (("mujoco", np.array(mj_distance)), ("pybullet", np.array(pb_distance))):
            apart = distance > 1e-6  # (MuJoCo's mesh distance sometimes returns an exact 0 for shapes apart)
            excess = capsule[apart] - distance[apart]
            quantiles = np.quantile(excess, [0, 0.5, 1]).round(4)
            print(f"  {'-'.join(capsules):12s} {engine:8s} n={apart.sum():3d}  {quantiles}")
            assert excess.max() <= 0.0, (capsules, engine, excess.max())

    # The table: the capsules' lowest points against the engines' distance from the hand to the table.
    table_geom = mujoco.mj_name2id(mj.model, mujoco.mjtObj.mjOBJ_GEOM, "table_collision")
    hand_geom = mujoco.mj_name2id(mj.model, mujoco.mjtObj.mjOBJ_GEOM, "gripper0_right_hand_collision")
    hand = cm.table_clearances(kinematics.frames(configs), SIM_TABLE_TOP_Z)[:, cm.CAPSULE_NAMES.index("hand")]
    mj_distance, pb_distance = [], []
    for q in configs:
        engines.contacts(q, 0.0)
        mj_distance.append(mujoco.mj_geomDistance(mj.model, mj.data, hand_geom, table_geom, 2.0, None))
        points = pybullet.getClosestPoints(
            pb.robot_id, pb.table_id, 2.0, pb_link["panda_hand"], -1, physicsClientId=pb.client
        )
        pb_distance.append(min(point[8] for point in points))
    for engine, distance in (("mujoco", np.array(mj_distance)), ("pybullet", np.array(pb_distance))):
        apart = distance > 1e-6
        excess = hand[apart] - distance[apart]
        print(f"  {'hand-table':12s} {engine:8s} n={apart.sum():3d}  {np.quantile(excess, [0, 0.5, 1]).round(4)}")
        assert excess.max() <= 0.0, ("hand-table", engine, excess.max())
