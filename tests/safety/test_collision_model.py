"""The capsule collision model (safety/collision_model.py) against brute force and both simulators.

- `segment_distances` against an independent brute force (one segment sampled densely, exact
  point-to-segment distances to the other) on random, parallel, collinear, nearly parallel,
  point and crossing segments;
- every part's collision geometry in both engines, placed by the engine at random configurations
  (fingers closed, half and fully open), lies inside its capsules placed by our kinematics, by at
  least the fit's pad: each capsule's share of it (the shapes cut by the capsule's cell, as the
  fit cuts them), and independently points sampled throughout each shape inside the union of its
  part's capsules;
- the pair lists: every non-adjacent pair is checked, a wrist pair or proved never to touch (the
  proofs are rerun);
- the wrist exclusion: its proof is rerun (and fails with the boundary lowered), and the engines
  report no wrist contact outside it;
- against the engines (the key test): at thousands of configurations within Franka's joint limits,
  uniform, near the model's boundary (capsules and wrist), and with exactly one check violated (so
  that a missing check shows), wherever every checked clearance and the wrist clearance are
  positive neither PyBullet nor MuJoCo reports an arm self-contact or an arm contact with the
  table; how conservative the model is is printed (pytest -s);
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
    assert self_clearance.min() > 0.05 and table.min() > 0.1 and cm.wrist_clearance(np.asarray(DEFAULT_HOME_Q)) > 2.0


# ---- pairs ---------------------------------------------------------------------------------------------
def test_every_non_adjacent_pair_is_checked_a_wrist_pair_or_proved_apart():
    names = cm.CAPSULE_NAMES
    non_adjacent = {
        (names[a], names[b])
        for a in range(cm.NUM_CAPSULES)
        for b in range(a + 1, cm.NUM_CAPSULES)
        if not cm.adjacent(a, b)
    }
    checked = {(names[a], names[b]) for a, b in cm.SELF_COLLISION_PAIRS}
    wrist, never = set(cm.WRIST_PAIRS), set(cm.NEVER_TOUCHING_PAIRS)
    assert checked | wrist | never == non_adjacent
    assert not (checked & wrist) and not (checked & never) and not (wrist & never)
    assert len(cm.SELF_COLLISION_PAIR_NAMES) == len(cm.SELF_COLLISION_PAIRS) == len(set(cm.SELF_COLLISION_PAIR_NAMES))
    links = {tuple(sorted(int(cm.CAPSULE_LINK[names.index(n)]) for n in pair)) for pair in wrist}
    assert links == set(cm.WRIST_LINK_PAIRS)
    # The names the filter relies on.
    assert "fingers" in names and "hand" in names
    assert all(name.split("-")[0] in names and name.split("-")[1] in names for name in cm.SELF_COLLISION_PAIR_NAMES)


def test_wrist_pairs_cannot_be_kept_apart_as_capsules():
    """The documented reason: every wrist pair's capsules overlap somewhere, and link 5's wrist
    housing and link 7, link 6 and the hand, are never more than a centimetre apart."""
    frames = kinematics.frames(uniform_configs(20_000, seed=3))
    p0, p1 = cm.capsule_segments(frames)
    for first, second in cm.WRIST_PAIRS:
        a, b = cm.CAPSULE_NAMES.index(first), cm.CAPSULE_NAMES.index(second)
        clearance = cm.segment_distances(p0[:, a], p1[:, a], p0[:, b], p1[:, b]) - cm.CAPSULE_RADII[[a, b]].sum()
        assert clearance.min() < 0.0, (first, second)
        if (first, second) in (("link5_wrist", "link7"), ("link6", "hand")):
            assert clearance.max() < 0.01, (first, second)


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


# ---- the wrist exclusion ------------------------------------------------------------------------------
def test_wrist_clearance_shapes_and_values():
    q = uniform_configs(17 * 20, seed=12).reshape(17, 20, 7)
    clearance = cm.wrist_clearance(q)
    assert clearance.shape == (17, 20)
    knots, bound = np.array(cm.WRIST_EXCLUSION_Q7), np.array(cm.WRIST_EXCLUSION_Q6)
    assert knots[0] == pytest.approx(Q_MIN[6], abs=1e-4) and knots[-1] == pytest.approx(Q_MAX[6], abs=1e-4)
    assert (np.diff(knots) > 0).all() and len(knots) == len(bound)
    assert (bound >= Q_MIN[5]).all() and (bound < 1.0).all()
    # The boundary itself; a q6 step moves the clearance by as much; q7 only through the boundary.
    on_knots = np.zeros((len(knots), 7))
    on_knots[:, 5], on_knots[:, 6] = bound, knots
    np.testing.assert_allclose(cm.wrist_clearance(on_knots), 0.0, atol=1e-12)
    moved = q.copy()
    moved[..., 5] += 0.3
    np.testing.assert_allclose(cm.wrist_clearance(moved) - clearance, 0.3, atol=1e-12)
    assert float(cm.wrist_clearance(np.asarray(DEFAULT_HOME_Q))) > 2.0


@pytest.mark.slow
def test_wrist_exclusion_is_proved():
    """Rerun the branch and bound: no cell of (q6, q7) outside the exclusion can hold an engine
    contact on a wrist pair.  With the boundary lowered by twice the margin it cannot be proved."""
    from benchmarks.fit_collision_capsules import WristEngines, verify_wrist_exclusion

    wrist_engines = WristEngines()
    ok, evaluations, smallest = verify_wrist_exclusion(engines=wrist_engines)
    assert ok and smallest > 0.0, (evaluations, smallest)
    lowered = (np.array(cm.WRIST_EXCLUSION_Q7), np.array(cm.WRIST_EXCLUSION_Q6) - 2 * cm.WRIST_MARGIN)
    assert not verify_wrist_exclusion(lowered, engines=wrist_engines, stop_at_first=True)[0]


def test_the_engines_report_no_wrist_contact_outside_the_exclusion(engines):
    """Independently of the proof (the sims' own contact reports, the other joints random, fingers
    closed or open): no link 5 - link 7 or link 6 - hand contact where the wrist clearance is
    positive, many of the configurations within 0.1 rad of the boundary."""
    rng = np.random.default_rng(13)
    q = uniform_configs(3000, seed=14)
    near = rng.random(len(q)) < 0.7
    q[near, 5] = np.interp(q[near, 6], cm.WRIST_EXCLUSION_Q7, cm.WRIST_EXCLUSION_Q6) + rng.uniform(
        1e-6, 0.1, near.sum()
    )
    q = q[(cm.wrist_clearance(q) > 0.0) & (q[:, 5] <= Q_MAX[5])]
    found = []
    for i, config in enumerate(q):
        for engine, contacts in engines.contacts(config, FINGER_OPEN if i % 2 else 0.0).items():
            wrist = classify(contacts)[1]
            if wrist:
                found.append((engine, config.round(4).tolist(), wrist))
    assert len(q) > 2500
    assert not found, f"{len(found)} wrist contacts outside the exclusion, e.g. {found[:5]}"


# ---- the capsules contain the engines' collision geometry ---------------------------------------------
@pytest.fixture(scope="module")
def engine_geometry():
    from benchmarks.fit_collision_capsules import MujocoGeometry, PyBulletGeometry

    engines = {"pybullet": PyBulletGeometry(), "mujoco": MujocoGeometry()}
    yield engines
    engines["pybullet"].close()


def _hull_samples(points: np.ndarray, rng: np.random.Generator, surface: int = 1500, interior: int = 500) -> np.ndarray:
    """The hull's vertices, points spread over its surface (uniform on its triangles by area) and
    points throughout it (convex combinations of its vertices with Dirichlet(0.3) weights)."""
    from scipy.spatial import ConvexHull

    hull = ConvexHull(points)
    triangles = points[hull.simplices]
    area = np.linalg.norm(np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]), axis=1)
    pick = rng.choice(len(triangles), surface, p=area / area.sum())
    weights = rng.dirichlet(np.ones(3), surface)
    on_surface = np.einsum("nk,nkj->nj", weights, triangles[pick])
    vertices = points[hull.vertices]
    inside = rng.dirichlet(np.full(len(vertices), 0.3), interior) @ vertices
    return np.concatenate([vertices, on_surface, inside])


def test_every_collision_shape_is_inside_its_capsules(engine_geometry):
    """Each capsule contains its share of its part (the engines' shapes cut by its cell, as the fit
    cuts them) with the pad to spare; independently, points sampled over and inside every shape lie
    at least the pad deep in one of its part's capsules."""
    from benchmarks.fit_collision_capsules import PIECES, cell_points, to_part_frame

    assert tuple(name for name, _, _ in PIECES) == cm.CAPSULE_NAMES
    rng = np.random.default_rng(10)
    configs = np.concatenate([uniform_configs(12, seed=5), [DEFAULT_HOME_Q]])
    worst_share: dict[str, float] = {}
    worst_sample: dict[str, float] = {}
    for q in configs:
        for engine_name, engine in engine_geometry.items():
            for finger in (0.0, FINGER_OPEN / 2, FINGER_OPEN):
                for part, _, points in engine.shapes(q, finger):
                    local = to_part_frame(points, part, q)
                    capsules = [k for k, (_, piece_part, _) in enumerate(PIECES) if piece_part == part]
                    assert capsules, part
                    for k in capsules:
                        share = cell_points([local], PIECES[k][2])
                        if len(share):
                            c = cm.LINK_CAPSULES[k]
                            depth = point_segment_distances(share, np.array(c.p0), np.array(c.p1)).max() - c.radius
                            worst_share[c.name] = max(worst_share.get(c.name, -np.inf), depth)
                    samples = _hull_samples(local, rng)
                    depth = np.min(
                        [
                            point_segment_distances(samples, np.array(c.p0), np.array(c.p1)) - c.radius
                            for c in (cm.LINK_CAPSULES[k] for k in capsules)
                        ],
                        axis=0,
                    ).max()
                    key = f"{engine_name} {part}"
                    worst_sample[key] = max(worst_sample.get(key, -np.inf), float(depth))
    print("\nlargest distance of a collision vertex of its share to its capsule's surface (mm):")
    for key, value in worst_share.items():
        print(f"  {key:25s} {1000 * value:+7.2f}")
    print("largest distance of a sampled point to its part's capsules' surface (mm):")
    for key, value in sorted(worst_sample.items()):
        print(f"  {key:25s} {1000 * value:+7.2f}")
    assert set(worst_share) == set(cm.CAPSULE_NAMES)
    assert max(worst_share.values()) <= -cm.FIT_PAD + 1e-6
    assert max(worst_sample.values()) <= -cm.FIT_PAD + 1e-6


# ---- against the engines ------------------------------------------------------------------------------
def _link(name: str) -> int | None:
    """Link number of an engine part name (either engine), None for the table/floor."""
    name = name.removeprefix("panda_")
    if name in ("hand", "leftfinger", "rightfinger", "left_finger", "right_finger"):
        return cm.HAND
    if name.startswith("link"):
        return int(name[4:])
    return None


WRIST_LINK_PAIRS = set(cm.WRIST_LINK_PAIRS)
"""Link pairs whose contacts `wrist_clearance` is to prevent (the capsules do not check them)."""


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
    """(every contact the model must foresee, those of them on `WRIST_LINK_PAIRS`): arm-arm pairs as
    link pairs, arm-table contacts as (link, "table"); cube contacts are not collisions."""
    counted, wrist = [], []
    for part, other in contacts:
        if "cube" in (part, other):
            continue
        first, second = _link(part), _link(other)
        if first is None or second is None:  # the table or the floor
            counted.append((first if second is None else second, "table"))
        else:
            counted.append(tuple(sorted((first, second))))
            if counted[-1] in WRIST_LINK_PAIRS:
                wrist.append(counted[-1])
    return counted, wrist


def smallest_margins(configs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(smallest capsule clearance, m; wrist clearance, rad; both clear) per configuration."""
    self_clearance, table = cm.clearances(configs, SIM_TABLE_TOP_Z)
    capsules = np.minimum(self_clearance.min(axis=-1), table.min(axis=-1))
    wrist = cm.wrist_clearance(configs)
    return capsules, wrist, (capsules > 0.0) & (wrist > 0.0)


def near_boundary_configs(n: int, seed: int, band: float = 0.01) -> np.ndarray:
    """Configurations the model just calls clear: the smallest clearance in (0, band] m, the wrist's
    positive."""
    found = []
    rng = np.random.default_rng(seed)
    while sum(len(f) for f in found) < n:
        q = rng.uniform(Q_MIN, Q_MAX, (20_000, 7))
        capsules, _, clear = smallest_margins(q)
        found.append(q[clear & (capsules <= band)])
    return np.concatenate(found)[:n]


def near_wrist_boundary_configs(n: int, seed: int, band: float = 0.02) -> np.ndarray:
    """Configurations the model calls clear with the wrist clearance in (0, band] rad: q6 just above
    the exclusion (and 1 in 4 of them with q7 at one of its knots)."""
    rng = np.random.default_rng(seed)
    found = []
    while sum(len(f) for f in found) < n:
        q = rng.uniform(Q_MIN, Q_MAX, (20_000, 7))
        knots = rng.random(len(q)) < 0.25
        q[knots, 6] = rng.choice(np.array(cm.WRIST_EXCLUSION_Q7), knots.sum())
        q[:, 5] = np.interp(q[:, 6], cm.WRIST_EXCLUSION_Q7, cm.WRIST_EXCLUSION_Q6) + rng.uniform(1e-6, band, len(q))
        q = q[q[:, 5] <= Q_MAX[5]]
        found.append(q[smallest_margins(q)[2]])
    return np.concatenate(found)[:n]


def single_violation_configs(per_constraint: int, seed: int, draws: int = 200_000) -> np.ndarray:
    """Configurations where exactly one check (a pair, a capsule above the table, the wrist) fails,
    up to ``per_constraint`` per check: were that one check missing, the model would call them
    clear, and where the engines see a contact there the key test would fail."""
    rng = np.random.default_rng(seed)
    checked = np.flatnonzero(cm.TABLE_CHECKED)
    picked: dict[int, list[np.ndarray]] = {}
    for _ in range(draws // 20_000):
        q = rng.uniform(Q_MIN, Q_MAX, (20_000, 7))
        self_clearance, table = cm.clearances(q, SIM_TABLE_TOP_Z)
        violated = np.concatenate(
            [self_clearance <= 0.0, table[:, checked] <= 0.0, cm.wrist_clearance(q)[:, None] <= 0.0], axis=1
        )
        single = violated.sum(axis=1) == 1
        for config, which in zip(q[single], violated[single].argmax(axis=1), strict=True):
            if len(picked.setdefault(int(which), [])) < per_constraint:
                picked[int(which)].append(config)
    return np.array([config for configs in picked.values() for config in configs])


def test_where_the_model_sees_clearance_the_engines_see_no_contact(engines):
    samples = {
        "uniform": uniform_configs(5000, seed=6),
        "near the boundary": near_boundary_configs(4000, seed=7),
        "near the wrist's": near_wrist_boundary_configs(1000, seed=11),
        "one check violated": single_violation_configs(60, seed=9),
    }
    failures = []
    stats = {}
    for label, configs in samples.items():
        clear = smallest_margins(configs)[2]
        engine_contact = np.zeros((len(configs), 2), dtype=bool)
        wrist_contact = np.zeros((len(configs), 2), dtype=bool)
        for i, q in enumerate(configs):
            finger = FINGER_OPEN if i % 2 else 0.0
            for j, (engine, contacts) in enumerate(engines.contacts(q, finger).items()):
                counted, wrist = classify(contacts)
                engine_contact[i, j], wrist_contact[i, j] = bool(counted), bool(wrist)
                if counted and clear[i]:
                    failures.append((label, engine, q.round(4).tolist(), finger, counted))
        stats[label] = (clear, engine_contact, wrist_contact)

    print(f"\n{'sample':18s} {'configs':>7s} {'model clear':>11s}  engine  contact  false pos. (flagged, no contact)")
    for label, (clear, contact, wrist) in stats.items():
        for j, engine in enumerate(("pybullet", "mujoco")):
            flagged = ~clear
            false_positive = (flagged & ~contact[:, j]).sum() / max(flagged.sum(), 1)
            print(
                f"{label:18s} {len(clear):7d} {clear.mean():11.1%}  {engine:8s} {contact[:, j].mean():6.1%}"
                f"  {false_positive:6.1%} of {flagged.sum()}; wrist contacts: {wrist[:, j].mean():.1%}"
            )
    assert stats["near the boundary"][0].all() and stats["near the wrist's"][0].all()
    assert not failures, f"{len(failures)} contacts the model did not foresee, e.g. {failures[:5]}"


def test_the_engines_touch_inside_the_wrist_exclusion(engines):
    """The exclusion is not vacuous: just inside it (q6 0.1 rad below its boundary less the margin,
    at the q7 where the contact region reaches highest) both engines report a wrist contact (there
    PyBullet's contacts begin 0.075 rad, MuJoCo's 0.115 rad below the boundary)."""
    top = int(np.argmax(cm.WRIST_EXCLUSION_Q6))
    q = np.array(DEFAULT_HOME_Q, dtype=np.float64)
    q[6] = cm.WRIST_EXCLUSION_Q7[top]
    q[5] = cm.WRIST_EXCLUSION_Q6[top] - cm.WRIST_MARGIN - 0.1
    found = {engine: classify(contacts)[1] for engine, contacts in engines.contacts(q, 0.0).items()}
    assert all(found.values()), found


def _capsule_clearance(q: np.ndarray, first: str, second: str) -> np.ndarray:
    """Clearance between the unions of two parts' capsules (all of them, checked or not)."""
    from benchmarks.fit_collision_capsules import PIECES

    p0, p1 = cm.capsule_segments(kinematics.frames(q))
    a = [k for k, (_, part, _) in enumerate(PIECES) if part == first]
    b = [k for k, (_, part, _) in enumerate(PIECES) if part == second]
    return np.min(
        [
            cm.segment_distances(p0[:, i], p1[:, i], p0[:, j], p1[:, j]) - cm.CAPSULE_RADII[[i, j]].sum()
            for i in a
            for j in b
        ],
        axis=0,
    )


ENGINE_DISTANCE_PAIRS = (
    # part pair, MuJoCo geoms, PyBullet links: each part's capsules together contain exactly these shapes
    (("link1", "link5"), ("robot0_link1_collision", "robot0_link5_collision"), ("panda_link1", "panda_link5")),
    (("link2", "link7"), ("robot0_link2_collision", "robot0_link7_collision"), ("panda_link2", "panda_link7")),
    (("link2", "hand"), ("robot0_link2_collision", "gripper0_right_hand_collision"), ("panda_link2", "panda_hand")),
    (("link5", "hand"), ("robot0_link5_collision", "gripper0_right_hand_collision"), ("panda_link5", "panda_hand")),
    (("link5", "link7"), ("robot0_link5_collision", "robot0_link7_collision"), ("panda_link5", "panda_link7")),
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
