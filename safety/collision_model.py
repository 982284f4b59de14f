"""Capsule collision model of the Panda, and vectorised clearances for batches of configurations.

Each link of the arm is covered by a capsule (the points within a radius of a segment) fixed in
one of the frames of `safety.kinematics.frames`; the hand by two (the hand body, and its fingers at
any opening); link 0 by three (the base, and the simulated mount's pedestal and controller box as
far as they rise above the table top).  From a batch of frames (..., 9, 4, 4):

- `capsule_segments`: the capsules' segments in the base frame, (..., K, 3) twice;
- `self_clearances`: surface-to-surface distance of every pair in `SELF_COLLISION_PAIRS`, (..., P);
- `table_clearances`: height of each capsule's lowest point above the table top, (..., K);
- `segment_distances`: exact closest distance between two batches of segments.

A clearance is a lower bound on the distance between the real (simulated) collision shapes: every
capsule contains its part's collision geometry in both simulators with `FIT_PAD` to spare, so where
all clearances are positive neither PyBullet nor MuJoCo reports a contact (checked against both
engines by tests/safety/test_collision_model.py on thousands of configurations).

How the table was fitted (benchmarks/fit_collision_capsules.py; run it to reproduce every number):
the collision geometry of both simulators, as each engine places it,

- PyBullet: pybullet_data ``franka_panda/panda.urdf`` with its OBJ collision meshes
  (``meshes/collision/link0..7.obj``, ``hand.obj``, ``finger.obj``) at the URDF's collision
  origins, and the convex hulls PyBullet builds from them (``getMeshData``);
- MuJoCo: our robosuite-assembled scene (sim/robosuite_backend.py): robosuite's
  ``robots/panda/meshes/link0..7.stl``, the gripper's ``grippers/meshes/panda_gripper/hand.stl``
  and ``finger.stl`` and the finger pad boxes, at the compiled model's geom frames; the mount's
  pedestal cylinder and controller box (cut at the table top: below it every arm capsule is
  caught by the table check);

taken to the frame of `kinematics.frames` each part hangs on (link i's URDF/MJCF frame is DH frame
i: the points agree to < 1 micron over random configurations), fingers both closed and fully open
(any opening lies in between).  Per part, the minimum-volume capsule containing every point
(Nelder-Mead over the segment's line from the principal axes and random restarts, the radius by
a bounded scalar search, the segment in closed form), endpoints rounded to 0.1 mm, radius = largest
point distance to the rounded segment + `FIT_PAD`, rounded up to 0.1 mm.  Each part is a set of
whole convex collision shapes, so containing their vertices contains the shapes.

Fit residuals: the largest distance of a point to its capsule's surface is -5.01 .. -5.09 mm (every
point inside by at least the pad).  Capsule volume over the convex hull of the points (unpadded in
brackets): link0 2.69 (2.38), pedestal 1.42 (1.33), controller box 35.9 (32.5; a 7 mm slab),
link1 1.79 (1.54), link2 1.81 (1.55), link3 1.65 (1.39), link4 1.64 (1.38), link5 1.68 (1.43),
link6 2.38 (2.01), link7 2.65 (2.07), hand 2.74 (2.19), fingers 4.72 (3.39).

The mount is robosuite's (RethinkMount); the PyBullet scene has none and a real Panda's mount is
whatever it is bolted to: there it only makes the model more cautious near the base.

Pairs (benchmarks/fit_collision_capsules.py --pairs): of the 51 capsule pairs on non-adjacent
links, 30 are checked (`SELF_COLLISION_PAIRS`), 19 are proved never to touch within Franka's joint
limits (`NEVER_TOUCHING_PAIRS`) and 2 cannot be separated by capsules (`INSEPARABLE_PAIRS`:
link 5 - link 7 and link 6 - hand).

Against the engines (tests/safety/test_collision_model.py: 5,000 configurations drawn uniformly
within the joint limits, 5,000 whose smallest clearance is in (0, 1 cm], 1,178 with exactly one
check violated; a separate run of 20,000 + 13,000 agreed): no configuration the model calls clear
has an arm self-contact or an arm-table contact in either engine, except on link 5 - link 7
(inseparable, above), which PyBullet reports at 6 in 10,000 configurations with the smallest
clearance under 1 cm (37 in 3,000 under 2 mm; MuJoCo none).  The model is conservative: it flags
28% of uniform configurations, half of them without a contact in the engine (mostly link 5 -
hand, whose capsules are 2-5 cm fatter than the engines' shapes there; also the table plane where
there is no table and, in PyBullet, the mount).  Capsule clearances are 0.8-8 cm below the
engines' distances (medians 2.4-3.7 cm for the pairs measured).

For the filter: the clearances are not all large in ordinary poses.  At home the smallest is
link 5 - hand, 2.6 cm (the engines' shapes: 6.5 cm apart), so a margin larger than that must only
stop clearances from shrinking, not demand them.

Speed (benchmarks/fit_collision_capsules.py --timing, 17 x 20 = 340 configurations, this 2-core
machine shared with other jobs): `clearances_from_frames` 0.48 ms, with `kinematics.frames` 0.71 ms;
in a fresh process whose heap has not yet grown (glibc gives freed temporaries back to the system
and every call faults them in again) 1.2 and 1.7 ms.  Pure numpy; imports nothing of ours but
`safety.kinematics`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from safety import kinematics

BASE_FRAME = -1
"""Frame index of the robot base frame (link 0's frame), in which link 0 and the mount are fixed.
It is not in `kinematics.frames`'s output: `capsule_segments` never indexes the frames with it."""
HAND = 8
"""Link number of the Franka hand with its fingers in `Capsule.link` / `CAPSULE_LINK`."""
FIT_PAD = 0.005
"""Every radius exceeds the largest distance of its part's collision geometry from the segment by
at least this, m (PyBullet's 1 mm collision margin, its 0.5 mm contact report distance, robosuite's
hand 0.5 mm nearer link 7 than Franka's flange, rounding)."""


class Capsule(NamedTuple):
    """The points within ``radius`` (m) of the segment ``p0``-``p1`` (m, in frame ``frame``: an index
    into `kinematics.frames`'s output, or `BASE_FRAME`), part of link ``link`` (0..7, or `HAND`)."""

    link: int
    frame: int
    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    radius: float


# fmt: off
LINK_CAPSULES: tuple[Capsule, ...] = (
    # link, frame, p0, p1 (m, in the frame), radius (m)  -- printed by benchmarks/fit_collision_capsules.py
    Capsule(0, BASE_FRAME, (-0.0003, -0.0002, 0.0505), (-0.0574, -0.0001, 0.0226), 0.1104),  # link0
    Capsule(0, BASE_FRAME, (-0.0200, 0.0000, -0.0070), (-0.0200, 0.0000, -0.5530), 0.1888),  # mount: pedestal
    Capsule(0, BASE_FRAME, (-0.3250, -0.1783, -0.1085), (-0.3250, 0.1783, -0.1085), 0.1172),  # mount: controller box
    Capsule(1, 0, (0.0000, -0.0534, 0.0009), (0.0000, -0.0002, -0.1397), 0.0812),  # link1
    Capsule(2, 1, (-0.0001, 0.0015, 0.0535), (0.0002, -0.1437, 0.0020), 0.0812),  # link2
    Capsule(3, 2, (0.0829, 0.0426, 0.0004), (0.0003, 0.0001, -0.0798), 0.0743),  # link3
    Capsule(4, 3, (0.0000, -0.0001, 0.0425), (-0.0823, 0.0823, 0.0001), 0.0745),  # link4
    Capsule(5, 4, (0.0000, 0.0639, 0.0030), (0.0002, 0.0104, -0.2438), 0.0724),  # link5
    Capsule(6, 5, (0.0865, 0.0085, -0.0003), (0.0234, 0.0063, 0.0057), 0.0803),  # link6
    Capsule(7, 6, (0.0326, 0.0327, 0.0829), (-0.0052, -0.0052, 0.0729), 0.0544),  # link7
    Capsule(8, 8, (-0.0002, 0.0598, -0.0722), (-0.0001, -0.0757, -0.0824), 0.0546),  # hand
    Capsule(8, 8, (-0.0001, -0.0550, -0.0229), (0.0001, 0.0550, -0.0229), 0.0374),  # fingers (closed to open)
)
# fmt: on
"""The capsules, base to hand (see the module docstring for how they were fitted).  The hand's are in
frame 8, the tool-tip frame (the hand frame moved `kinematics.TOOL_TIP_OFFSET` along its z axis)."""
CAPSULE_NAMES: tuple[str, ...] = (
    "link0",
    "pedestal",
    "controller_box",
    "link1",
    "link2",
    "link3",
    "link4",
    "link5",
    "link6",
    "link7",
    "hand",
    "fingers",
)
"""Name of each capsule of `LINK_CAPSULES`, in order."""

CAPSULE_LINK = np.array([c.link for c in LINK_CAPSULES])
"""Link of each capsule (K,): 0..7, or `HAND`."""
CAPSULE_RADII = np.array([c.radius for c in LINK_CAPSULES])
"""Radius of each capsule (K,), m."""
CAPSULE_FRAME = np.array([c.frame for c in LINK_CAPSULES])
"""Frame of each capsule (K,): an index into `kinematics.frames`'s output, or `BASE_FRAME`."""
NUM_CAPSULES = len(LINK_CAPSULES)


def adjacent(a: int, b: int) -> bool:
    """Whether capsules a and b are on the same or on adjacent links (links i and i+1 meet at joint
    i+1, link 7 and the hand at the flange): such pairs always touch and are never checked."""
    return abs(int(CAPSULE_LINK[a]) - int(CAPSULE_LINK[b])) < 2


# fmt: off
INSEPARABLE_PAIRS: dict[tuple[str, str], str] = {
    ("link5", "link7"): "the capsules overlap in 76% of configurations within the joint limits and "
    "are never more than 5 mm apart: no margin can be kept.  The engines' own shapes (convex "
    "hulls; link 5's fills in its concave forearm) are never more than 2.3 cm apart either and "
    "touch in 6-10% of configurations (joints 6 and 7): this model does not see that",
    ("link6", "hand"): "depends on joint 7 alone; the capsules are 0-7 mm apart (and overlap by "
    "0.1 mm) at every joint-7 angle, while the engines' shapes stay 2.8-3.0 cm apart at all of "
    "them (swept at 1 mrad): they cannot touch, the capsules cannot tell",
}
# fmt: on
"""Non-adjacent capsule pairs left out of `SELF_COLLISION_PAIRS` because the capsules cannot
separate them, with the reason (benchmarks/fit_collision_capsules.py --pairs; engine distances
from tests/safety/test_collision_model.py)."""

# fmt: off
NEVER_TOUCHING_PAIRS: dict[tuple[str, str], float] = {
    ("link0", "link2"): 0.0943, ("link0", "link3"): 0.1313,
    ("pedestal", "link2"): 0.0701, ("pedestal", "link3"): 0.0849,
    ("controller_box", "link2"): 0.2861, ("controller_box", "link3"): 0.1325,
    ("link1", "link3"): 0.0836, ("link1", "link4"): 0.0884,
    ("link2", "link4"): 0.0333,
    ("link3", "link5"): 0.0094, ("link3", "link6"): 0.1600, ("link3", "link7"): 0.1186,
    ("link3", "hand"): 0.0471, ("link3", "fingers"): 0.0132,
    ("link4", "link6"): 0.1184, ("link4", "link7"): 0.1003, ("link4", "hand"): 0.0374,
    ("link4", "fingers"): 0.0057,
    ("link6", "fingers"): 0.0763,
}
# fmt: on
"""Non-adjacent capsule pairs that cannot overlap anywhere within Franka's joint limits, left out
of `SELF_COLLISION_PAIRS`, with the smallest clearance the proof evaluated, m (the true minimum is
positive and at most this).  Proved by branch and bound over the joints between the two links
(`benchmarks/fit_collision_capsules.prove_separated`, rerun by the tests): each cell of joint space
is cleared by the clearance at its centre exceeding a Lipschitz bound on how far the joints can
move one capsule towards the other within the cell.  Checking them would cost time and, with a
margin, forbid harmless poses: link 3 and link 5 are 1-3 cm apart at every configuration (1.9 cm
at home)."""

SELF_COLLISION_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (a, b)
    for a in range(NUM_CAPSULES)
    for b in range(a + 1, NUM_CAPSULES)
    if not adjacent(a, b)
    and (CAPSULE_NAMES[a], CAPSULE_NAMES[b]) not in INSEPARABLE_PAIRS
    and (CAPSULE_NAMES[a], CAPSULE_NAMES[b]) not in NEVER_TOUCHING_PAIRS
)
"""Capsule index pairs (a < b) that `self_clearances` checks: every pair on non-adjacent links,
less `INSEPARABLE_PAIRS` and `NEVER_TOUCHING_PAIRS`."""
SELF_COLLISION_PAIR_NAMES: tuple[str, ...] = tuple(
    f"{CAPSULE_NAMES[a]}-{CAPSULE_NAMES[b]}" for a, b in SELF_COLLISION_PAIRS
)
"""``"first-second"`` capsule names of each pair of `SELF_COLLISION_PAIRS`."""

TABLE_CHECKED = CAPSULE_LINK >= 2
"""Capsules `table_clearances` checks (K,): all but link 0's and link 1's.  Link 0 and the mount
are fixed; the mount's capsules reach below the table top by design (below it every moving
capsule is caught instead) and link 0's own reaches down to 2.4 cm above the simulated table top.
Link 1 only turns about the vertical axis through the base: its capsule's lowest point stays
0.11 m above the base, 0.22 m above the simulated table top."""

for _name, _capsules in (("inseparable", INSEPARABLE_PAIRS), ("never touching", NEVER_TOUCHING_PAIRS)):
    for _pair in _capsules:
        if not (set(_pair) <= set(CAPSULE_NAMES)) or CAPSULE_NAMES.index(_pair[0]) >= CAPSULE_NAMES.index(_pair[1]):
            raise AssertionError(f"{_name} pair {_pair}: unknown capsule or not in table order")

# ---- precomputed arrays ----------------------------------------------------------------------------
_EPS = 1e-12
"""Squared length, m^2, below which a segment is a point (1 micron); `segment_distances` only."""
_PARALLEL = 1e-16
"""Segments with sin^2 of their angle below this (1e-8 rad) are taken as parallel.  Nearer parallel
than about that, rounding makes the lines' closest points meaningless anyway; either way the
distance is off by at most about the angle times the segments' length (10 nm per metre)."""
_NUM_FIXED = int((CAPSULE_FRAME == BASE_FRAME).sum())
if not (CAPSULE_FRAME[:_NUM_FIXED] == BASE_FRAME).all():
    raise AssertionError("the capsules fixed in the base frame must come first")
_MOVING_FRAME = CAPSULE_FRAME[_NUM_FIXED:]
_P0 = np.array([c.p0 for c in LINK_CAPSULES])
_DIRECTION = np.array([c.p1 for c in LINK_CAPSULES]) - _P0
if (np.linalg.norm(_DIRECTION, axis=1) < 1e-3).any():
    raise AssertionError("a capsule's segment is shorter than 1 mm: self_clearances assumes none is")
# Moving capsules' local start point (homogeneous, w = 1) and direction (w = 0): (Km, 4, 2).
_MOVING_LOCAL = np.zeros((len(_MOVING_FRAME), 4, 2))
_MOVING_LOCAL[:, :3, 0] = _P0[_NUM_FIXED:]
_MOVING_LOCAL[:, 3, 0] = 1.0
_MOVING_LOCAL[:, :3, 1] = _DIRECTION[_NUM_FIXED:]
# Fixed capsules' start point and direction, component first: (3, 2, Kf).
_FIXED_LOCAL = np.ascontiguousarray(np.stack([_P0[:_NUM_FIXED], _DIRECTION[:_NUM_FIXED]]).transpose(2, 0, 1))

_PAIR_A = np.array([a for a, _ in SELF_COLLISION_PAIRS], dtype=np.intp)
_PAIR_B = np.array([b for _, b in SELF_COLLISION_PAIRS], dtype=np.intp)
_PAIR_RADII = CAPSULE_RADII[_PAIR_A] + CAPSULE_RADII[_PAIR_B]
_LENGTH2 = np.einsum("ij,ij->i", _DIRECTION, _DIRECTION)  # squared segment lengths: a rotation keeps them
_PAIR_A_LEN2, _PAIR_E = _LENGTH2[_PAIR_A], _LENGTH2[_PAIR_B]
_PAIR_AE = _PAIR_A_LEN2 * _PAIR_E
_PAIR_AE_PARALLEL = _PAIR_AE * _PARALLEL
_PAIR_INV_A, _PAIR_INV_E = 1.0 / _PAIR_A_LEN2, 1.0 / _PAIR_E
_TABLE_OFFSET = np.where(TABLE_CHECKED, CAPSULE_RADII, -np.inf)  # radius; -inf makes an unchecked one +inf


def _starts_and_directions(frames: np.ndarray) -> np.ndarray:
    """Base-frame start point p0 and direction p1 - p0 of every capsule for frames (..., 9, 4, 4),
    component first: (3, 2, ..., K) (x/y/z, start/direction, batch, capsule)."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.shape[-3:] != (9, 4, 4):
        raise ValueError(f"expected frames (..., 9, 4, 4) from kinematics.frames, got {frames.shape}")
    world = np.take(frames, _MOVING_FRAME, axis=-3)[..., :3, :] @ _MOVING_LOCAL  # (..., Km, 3, 2)
    batch = frames.shape[:-3]
    out = np.empty((3, 2, *batch, NUM_CAPSULES))
    out[..., :_NUM_FIXED] = _FIXED_LOCAL.reshape((3, 2) + (1,) * len(batch) + (_NUM_FIXED,))
    out[..., _NUM_FIXED:] = np.moveaxis(world, (-2, -1), (0, 1))
    return out


def capsule_segments(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base-frame endpoints (p0, p1), each (..., K, 3), m, of the capsules of `LINK_CAPSULES` for
    frames (..., 9, 4, 4) from `kinematics.frames`."""
    start, direction = np.moveaxis(_starts_and_directions(frames), 0, -1)
    return start, start + direction


def _clamp01(x: np.ndarray) -> np.ndarray:
    np.maximum(x, 0.0, out=x)
    np.minimum(x, 1.0, out=x)
    return x


def _segment_parameters(a, b, c, e, f):
    """Parameters (s, t) in [0, 1] of the closest points of segments p0 + s d1 and q0 + t d2 from
    a = d1.d1, b = d1.d2, c = d1.r, e = d2.d2, f = d2.r (r = p0 - q0), a and e > 0 (Ericson 5.1.9)."""
    ae = a * e
    denom = ae - b * b  # >= 0 (Cauchy-Schwarz), zero for parallel segments
    np.maximum(denom, ae * _PARALLEL, out=denom)
    # The first segment's point closest to the second line, clamped.  For parallel segments the
    # numerator vanishes with the denominator and s lands anywhere in [0, 1]: the next two steps
    # make any start exact there (Ericson starts from 0).
    s = b * f
    s -= c * e
    s /= denom
    _clamp01(s)
    # The second segment's point closest to it, clamped, and the first recomputed for that point,
    # clamped.  Ericson recomputes the first only when the second was clamped; recomputing always
    # gives the same distance (it minimises over the first for that second point).
    t = b * s
    t += f
    t /= e
    _clamp01(t)
    s = b * t
    s -= c
    s /= a
    _clamp01(s)
    return s, t


def segment_distances(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray) -> np.ndarray:
    """Closest distance (...), between the segments p0-p1 and q0-q1 (arrays (..., 3), broadcast).

    Exact, by the clamped closed form of Ericson, *Real-Time Collision Detection* (Morgan
    Kaufmann, 2005), section 5.1.9 "Closest points of two line segments" (``ClosestPtSegmentSegment``):
    the parameter of the first segment's point closest to the second line, clamped to the segment;
    the second segment's point closest to that, clamped; the first recomputed for that point and
    clamped.  A segment shorter than 1 micron is a point; segments within 1e-8 rad of parallel are
    parallel (the result is then off by at most about 1e-8 times their length).
    """
    p0, p1, q0, q1 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (p0, p1, q0, q1)))
    batch = p0.shape[:-1]
    p0, p1, q0, q1 = (np.reshape(v, (-1, 3)).T for v in (p0, p1, q0, q1))
    d1, d2, r = p1 - p0, q1 - q0, p0 - q0
    a, e = np.einsum("i...,i...->...", d1, d1), np.einsum("i...,i...->...", d2, d2)
    b, c, f = (np.einsum("i...,i...->...", x, y) for x, y in ((d1, d2), (d1, r), (d2, r)))
    a_point, e_point = a <= _EPS, e <= _EPS
    # A point segment: its parameter is immaterial, the other's is its closest point's.  Give it a
    # unit direction orthogonal to everything (b = c = 0 or b = f = 0), which yields exactly that.
    a, e = np.where(a_point, 1.0, a), np.where(e_point, 1.0, e)
    b = np.where(a_point | e_point, 0.0, b)
    c, f = np.where(a_point, 0.0, c), np.where(e_point, 0.0, f)
    s, t = _segment_parameters(a, b, c, e, f)
    gap = r + d1 * s - d2 * t
    return np.sqrt(np.einsum("i...,i...->...", gap, gap)).reshape(batch)


def _self_clearances(ends: np.ndarray) -> np.ndarray:
    """`self_clearances` from `_starts_and_directions`'s output: the steps of `_segment_parameters`
    with the pairs' constant squared lengths, then the distance from the parameters."""
    rows = ends.reshape(6, *ends.shape[2:])  # x, dx, y, dy, z, dz
    first = np.take(rows, _PAIR_A, axis=-1)
    second = np.take(rows, _PAIR_B, axis=-1)
    first[0::2] -= second[0::2]
    rx, ax, ry, ay, rz, az = first  # r = p0 of the first less p0 of the second; the first's direction
    bx, by, bz = second[1], second[3], second[5]
    b = ax * bx
    b += ay * by
    b += az * bz
    c = ax * rx
    c += ay * ry
    c += az * rz
    f = bx * rx
    f += by * ry
    f += bz * rz
    denom = b * b
    np.subtract(_PAIR_AE, denom, out=denom)
    np.maximum(denom, _PAIR_AE_PARALLEL, out=denom)
    s = b * f
    s -= c * _PAIR_E
    s /= denom
    _clamp01(s)
    t = b * s
    t += f
    t *= _PAIR_INV_E
    _clamp01(t)
    s = b * t
    s -= c
    s *= _PAIR_INV_A
    _clamp01(s)
    # |r + s d1 - t d2|^2 = r.r + s (s a + 2 c) - t (2 f + 2 s b - t e)
    distance = rx * rx
    distance += ry * ry
    distance += rz * rz
    c *= 2.0
    c += s * _PAIR_A_LEN2
    c *= s
    distance += c
    f *= 2.0
    b *= 2.0 * s
    f += b
    f -= t * _PAIR_E
    f *= t
    distance -= f
    np.maximum(distance, 0.0, out=distance)
    np.sqrt(distance, out=distance)
    distance -= _PAIR_RADII
    return distance


def _table_clearances(ends: np.ndarray, table_height: float) -> np.ndarray:
    lowest = np.minimum(ends[2, 1], 0.0)
    lowest += ends[2, 0]
    lowest -= _TABLE_OFFSET + table_height
    return lowest


def self_clearances(frames: np.ndarray) -> np.ndarray:
    """Surface distance (segment distance less both radii), m, of each pair of
    `SELF_COLLISION_PAIRS` for frames (..., 9, 4, 4): (..., P).  Negative: the capsules overlap."""
    return _self_clearances(_starts_and_directions(frames))


def table_clearances(frames: np.ndarray, table_height: float) -> np.ndarray:
    """Height above the table plane z = ``table_height`` (base frame, m) of each capsule's lowest
    point (its lower endpoint's height less its radius), m, for frames (..., 9, 4, 4): (..., K).
    ``inf`` for the capsules not checked (`TABLE_CHECKED` false: link 0, the mount and link 1)."""
    return _table_clearances(_starts_and_directions(frames), table_height)


def clearances_from_frames(frames: np.ndarray, table_height: float) -> tuple[np.ndarray, np.ndarray]:
    """(`self_clearances`, `table_clearances`) for frames (..., 9, 4, 4), the capsules placed once."""
    ends = _starts_and_directions(frames)
    return _self_clearances(ends), _table_clearances(ends, table_height)


def clearances(q: np.ndarray, table_height: float) -> tuple[np.ndarray, np.ndarray]:
    """(`self_clearances`, `table_clearances`) for joint angles ``q`` (..., 7), rad."""
    return clearances_from_frames(kinematics.frames(q), table_height)
