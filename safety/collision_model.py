"""Capsule collision model of the Panda, and vectorised clearances for batches of configurations.

Each link of the arm is covered by one or more capsules (the points within a radius of a segment)
fixed in one of the frames of `safety.kinematics.frames`: link 5 by three (its wrist housing and
the two lengthwise halves of its forearm tube), the hand by two (the hand body, and its fingers at
any opening), link 0 by three (the base, and the simulated mount's pedestal and controller box as
far as they rise above the table top), every other link by one.  From a batch of frames
(..., 9, 4, 4):

- `capsule_segments`: the capsules' segments in the base frame, (..., K, 3) twice;
- `self_clearances`: surface-to-surface distance of every pair in `SELF_COLLISION_PAIRS`, (..., P);
- `table_clearances`: height of each capsule's lowest point above the table top, (..., K);
- `segment_distances`: exact closest distance between two batches of segments;

and from joint angles (..., 7), `wrist_clearance`: how far (rad) q6 lies above the wrist exclusion,
(...), for the pairs no capsules can keep apart (link 5 - link 7, link 6 - hand).

A clearance is a lower bound on the distance between the real (simulated) collision shapes: the
capsules of a part contain its collision geometry in both simulators with `FIT_PAD` to spare, so
where all clearances and the wrist clearance are positive neither PyBullet nor MuJoCo reports a
contact (checked against both engines by tests/safety/test_collision_model.py on thousands of
configurations).

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
(any opening lies in between).  Both engines collide with the convex hull of each shape.  A part
with several capsules is cut by planes into cells (`benchmarks.fit_collision_capsules.PIECES`:
link 5 at z = 0 of its frame, the tube below lengthwise through its slanted axis); each shape's
hull cut by a cell is the hull of its vertices on that side and its edges' crossings of the planes,
so a capsule containing those points contains the part's share of its cell, and the cells cover
space.  Per capsule, the minimum-volume capsule containing its points (Nelder-Mead over the
segment's line from the principal axes and random restarts, the radius by a bounded scalar search,
the segment in closed form), endpoints rounded to 0.1 mm, radius = largest point distance to the
rounded segment + `FIT_PAD`, rounded up to 0.1 mm.

Fit residuals: the largest distance of a point to its capsule's surface is -5.01 .. -5.09 mm (every
point inside by at least the pad; the tests also sample points over and inside every shape: all
at least 5.01 mm deep in one of the part's capsules).  Capsule volume over the convex hull of its
points (unpadded in brackets): link0 2.69 (2.38), pedestal 1.42 (1.33), controller box 35.9
(32.5; a 7 mm slab), link1 1.79 (1.54), link2 1.81 (1.55), link3 1.65 (1.39), link4 1.64 (1.38),
link5 wrist 3.23 (2.56), tube halves 2.55 (2.10) and 2.54 (2.10) (one capsule for all of link 5:
1.68 (1.43), but 2 cm fatter than the wrist housing all round), link6 2.38 (2.01), link7 2.65
(2.07), hand 2.74 (2.19), fingers 4.72 (3.39).

The mount is robosuite's (RethinkMount); the PyBullet scene has none and a real Panda's mount is
whatever it is bolted to: there it only makes the model more cautious near the base.

Pairs (benchmarks/fit_collision_capsules.py --pairs): of the 69 capsule pairs on non-adjacent links,
42 are checked (`SELF_COLLISION_PAIRS`), 23 are proved never to touch within Franka's joint limits
(`NEVER_TOUCHING_PAIRS`; among them link 5's wrist housing and the hand: their capsules stay at
least 1.7 cm apart, so link 5 - hand is checked on the tube halves alone) and 4 are wrist pairs
(`WRIST_PAIRS`: link 5's three capsules with link 7, link 6 with the hand), left to
`wrist_clearance`.

The wrist (benchmarks/fit_collision_capsules.py --wrist): link 5 - link 7 and link 6 - hand (and
fingers) depend on q6 and q7 alone.  Branch and bound over (q6, q7) within the joint limits with
both engines' distances at cell centres (PyBullet's own, MuJoCo's by a separating-axis bound on
its hulls) and Lipschitz bounds on how fast the joints move the parts (link 7: 0.218 m/rad about
joint 6, 0.092 about joint 7; hand: 0.105; fingers: 0.068, at any opening) leaves the cells of
5 mrad where a contact cannot be excluded: all link 5 - link 7, all with q6 <= 0.741 rad.  (The
sims' own contact reports, at 5 mrad: link 5 - link 7 touch for q6 up to 0.12 rad in PyBullet,
0.07 in MuJoCo, at most q7; up to 0.22 (0.18) at q7 = -0.65, 0.49 (0.45) at -2.9 and 0.73 (0.69)
for q7 in 2.1 .. 2.9.)  `WRIST_EXCLUSION_Q6` (knots every 0.05 rad of q7) lies `WRIST_MARGIN`
above those cells, 0.06-0.13 rad above the highest PyBullet contact: 0.19-0.28 rad for q7 in
-2.4 .. 1.2, rising to 0.55 at q7 = -2.9 and to 0.76-0.79 for q7 in 2.0 .. 2.9.  Outside it the
same branch and bound clears every cell (4,425 evaluated, rerun by the tests); the sims' own
contact reports agree on 3,000 configurations outside it, most within 0.1 rad of it, and just
inside it both engines report link 5 - link 7 contacts.  Link 6 and the hand never touch (at
least 2.8 cm apart in PyBullet, 2.9 cm in MuJoCo; the fingers 11 cm).  The filter can keep
``wrist_clearance(q) >= 0`` as a joint-space constraint; at home it is 2.75 rad.

Against the engines (tests/safety/test_collision_model.py: 5,000 configurations drawn uniformly
within the joint limits, 4,000 whose smallest capsule clearance is in (0, 1 cm], 1,000 with the
wrist clearance in (0, 0.02 rad], 1,261 with exactly one check violated): no configuration the
model calls clear has an arm self-contact or an arm-table contact in either engine.  The model
flags 26% of uniform configurations, 38-40% of them without a contact in the engine (the table
plane where there is no table, the mount in PyBullet, the fatter capsules).  Capsule clearance
against the engines' distance (where both engines' shapes are 0-15 cm apart, 3,000 uniform
configurations; the smaller engine distance less the smallest checked capsule clearance of the
pair, quantiles 0/50/100%): link 5 - hand 0.4/1.2/4.0 cm (one capsule for link 5: 1.4/2.8/4.7),
link 5 - fingers 0.5/1.8/7.2 (2.0/3.5/8.1), link 2 - link 5 0.9/2.0/4.1 (0.9/2.5/4.1), link 1 -
link 5 0.9/2.2/4.2, link 2 - hand 1.0/2.8/5.3, link 0 - link 6 1.2/4.2/9.2, link 1 - fingers
1.5/4.9/9.0 (unchanged: single capsules, each one convex hull a second capsule does not fit
better).

For the filter: at home the smallest checked clearance is link 5 (tube) - hand, 5.1 cm (the
engines' shapes: 6.5 cm apart; one capsule for link 5 gave 2.6 cm).  Turning joint 7 from -2.9 to
2.9 rad at home it stays >= 2.5 cm (engines >= 3.1 cm), and >= 3.8 cm wherever the engines are
>= 5 cm apart (one capsule for link 5: down to 2 mm, and 1.5 cm).  Turning joint 6 over its range
(q7 = pi/4) it is >= 1.8 cm wherever the engines are >= 5 cm apart (fingers - link 1 / link 2 /
pedestal at q6 0.6-1.6 rad); the capsules overlap for q6 < 0.25 rad, inside the wrist exclusion.
(benchmarks/fit_collision_capsules.py --sweeps.)

Speed (benchmarks/fit_collision_capsules.py --timing, 17 x 20 = 340 configurations, this 2-core
machine shared with other jobs): `clearances_from_frames` 0.62 ms, with `kinematics.frames`
0.87 ms (one capsule for link 5, 30 pairs: 0.48 and 0.72 ms); in a fresh process whose heap has not
yet grown (glibc gives freed temporaries back to the system and every call faults them in again)
1.6 and 2.0 ms.  `wrist_clearance`: 7 us (one interpolation).  Pure numpy; imports nothing of ours but
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
    into `kinematics.frames`'s output, or `BASE_FRAME`), named ``name``, part of link ``link`` (0..7,
    or `HAND`)."""

    name: str
    link: int
    frame: int
    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    radius: float


# fmt: off
LINK_CAPSULES: tuple[Capsule, ...] = (
    # name, link, frame, p0, p1 (m, in the frame), radius (m)  -- printed by benchmarks/fit_collision_capsules.py
    Capsule("link0", 0, BASE_FRAME, (-0.0003, -0.0002, 0.0505), (-0.0574, -0.0001, 0.0226), 0.1104),
    Capsule("pedestal", 0, BASE_FRAME, (-0.0200, 0.0000, -0.0070), (-0.0200, 0.0000, -0.5530), 0.1888),
    Capsule("controller_box", 0, BASE_FRAME, (-0.3250, -0.1783, -0.1085), (-0.3250, 0.1783, -0.1085), 0.1172),
    Capsule("link1", 1, 0, (0.0000, -0.0534, 0.0009), (0.0000, -0.0002, -0.1397), 0.0812),
    Capsule("link2", 2, 1, (-0.0001, 0.0015, 0.0535), (0.0002, -0.1437, 0.0020), 0.0812),
    Capsule("link3", 3, 2, (0.0829, 0.0426, 0.0004), (0.0003, 0.0001, -0.0798), 0.0743),
    Capsule("link4", 4, 3, (0.0000, -0.0001, 0.0425), (-0.0823, 0.0823, 0.0001), 0.0745),
    Capsule("link5_wrist", 5, 4, (0.0000, 0.0377, 0.0002), (-0.0001, 0.0883, 0.0039), 0.0579),
    Capsule("link5_tube_a", 5, 4, (0.0000, -0.0024, -0.2514), (0.0001, 0.0415, -0.0102), 0.0607),
    Capsule("link5_tube_b", 5, 4, (0.0000, 0.0128, -0.2538), (0.0001, 0.0859, -0.0163), 0.0611),
    Capsule("link6", 6, 5, (0.0865, 0.0085, -0.0003), (0.0234, 0.0063, 0.0057), 0.0803),
    Capsule("link7", 7, 6, (0.0326, 0.0327, 0.0829), (-0.0052, -0.0052, 0.0729), 0.0544),
    Capsule("hand", 8, 8, (-0.0002, 0.0598, -0.0722), (-0.0001, -0.0757, -0.0824), 0.0546),
    Capsule("fingers", 8, 8, (-0.0001, -0.0550, -0.0229), (0.0001, 0.0550, -0.0229), 0.0374),
)
# fmt: on
"""The capsules, base to hand (see the module docstring for how they were fitted).  Link 5 has three:
its wrist housing (the part of the link above the plane z = 0 of its frame, around joint 6's axis)
and the two lengthwise halves of its forearm tube (`benchmarks.fit_collision_capsules.PIECES`).
The hand's are in frame 8, the tool-tip frame (the hand frame moved `kinematics.TOOL_TIP_OFFSET`
along its z axis)."""
CAPSULE_NAMES: tuple[str, ...] = tuple(c.name for c in LINK_CAPSULES)
"""Name of each capsule of `LINK_CAPSULES`, in order (no name contains "-": pair names join two)."""

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


WRIST_LINK_PAIRS: tuple[tuple[int, int], ...] = ((5, 7), (6, HAND))
"""Non-adjacent link pairs whose relative pose depends on joints 6 and 7 alone: link 5 with link 7
(link 6 between them), link 6 with the hand (link 7 between them).  Their capsules cannot be kept
apart (link 5's wrist housing and link 7 are never more than 9 mm apart as capsules, link 6 and
the hand 7 mm; the engines' link 5 and link 7 never more than 2.3 cm), so their contacts are left
to `wrist_clearance`, a joint-space constraint on (q6, q7) fitted to the engines' own contacts."""

# fmt: off
NEVER_TOUCHING_PAIRS: dict[tuple[str, str], float] = {
    ("link0", "link2"): 0.0943, ("link0", "link3"): 0.1313,
    ("pedestal", "link2"): 0.0701, ("pedestal", "link3"): 0.0849,
    ("controller_box", "link2"): 0.2861, ("controller_box", "link3"): 0.1325,
    ("link1", "link3"): 0.0836, ("link1", "link4"): 0.0884,
    ("link2", "link4"): 0.0333,
    ("link3", "link5_wrist"): 0.2138, ("link3", "link5_tube_a"): 0.0215, ("link3", "link5_tube_b"): 0.0119,
    ("link3", "link6"): 0.1600, ("link3", "link7"): 0.1186, ("link3", "hand"): 0.0471, ("link3", "fingers"): 0.0132,
    ("link4", "link6"): 0.1184, ("link4", "link7"): 0.1003, ("link4", "hand"): 0.0374, ("link4", "fingers"): 0.0057,
    ("link5_wrist", "hand"): 0.0168, ("link5_wrist", "fingers"): 0.0963,
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


def wrist_pair(a: int, b: int) -> bool:
    """Whether capsules a and b are on one of `WRIST_LINK_PAIRS`."""
    links = tuple(sorted((int(CAPSULE_LINK[a]), int(CAPSULE_LINK[b]))))
    return links in WRIST_LINK_PAIRS


WRIST_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (CAPSULE_NAMES[a], CAPSULE_NAMES[b])
    for a in range(NUM_CAPSULES)
    for b in range(a + 1, NUM_CAPSULES)
    if wrist_pair(a, b) and (CAPSULE_NAMES[a], CAPSULE_NAMES[b]) not in NEVER_TOUCHING_PAIRS
)
"""Capsule pairs on `WRIST_LINK_PAIRS` not proved apart: not checked as capsules, covered by
`wrist_clearance`."""

SELF_COLLISION_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (a, b)
    for a in range(NUM_CAPSULES)
    for b in range(a + 1, NUM_CAPSULES)
    if not adjacent(a, b) and not wrist_pair(a, b) and (CAPSULE_NAMES[a], CAPSULE_NAMES[b]) not in NEVER_TOUCHING_PAIRS
)
"""Capsule index pairs (a < b) that `self_clearances` checks: every pair on non-adjacent links,
less `WRIST_PAIRS` and `NEVER_TOUCHING_PAIRS`."""
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

for _pair in NEVER_TOUCHING_PAIRS:
    if not (set(_pair) <= set(CAPSULE_NAMES)) or CAPSULE_NAMES.index(_pair[0]) >= CAPSULE_NAMES.index(_pair[1]):
        raise AssertionError(f"never touching pair {_pair}: unknown capsule or not in table order")
    if adjacent(CAPSULE_NAMES.index(_pair[0]), CAPSULE_NAMES.index(_pair[1])):
        raise AssertionError(f"never touching pair {_pair}: adjacent capsules are never checked anyway")
if any("-" in _name for _name in CAPSULE_NAMES) or len(set(CAPSULE_NAMES)) != NUM_CAPSULES:
    raise AssertionError("capsule names must be unique and free of '-'")

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


# ---- the wrist ---------------------------------------------------------------------------------------
WRIST_MARGIN = 0.05
"""Margin, rad, by which `WRIST_EXCLUSION_Q6` lies above the largest q6 at which either engine can
report a contact on `WRIST_LINK_PAIRS` (0.05 rad turns link 7 by at most 1.1 cm about joint 6)."""
# fmt: off
WRIST_EXCLUSION_Q7: tuple[float, ...] = (
    -2.8973, -2.8473, -2.7974, -2.7474, -2.6975, -2.6475, -2.5976, -2.5476, -2.4977, -2.4477,
    -2.3978, -2.3478, -2.2979, -2.2479, -2.1980, -2.1480, -2.0980, -2.0481, -1.9981, -1.9482,
    -1.8982, -1.8483, -1.7983, -1.7484, -1.6984, -1.6485, -1.5985, -1.5486, -1.4986, -1.4486,
    -1.3987, -1.3487, -1.2988, -1.2488, -1.1989, -1.1489, -1.0990, -1.0490, -0.9991, -0.9491,
    -0.8992, -0.8492, -0.7993, -0.7493, -0.6993, -0.6494, -0.5994, -0.5495, -0.4995, -0.4496,
    -0.3996, -0.3497, -0.2997, -0.2498, -0.1998, -0.1499, -0.0999, -0.0500, 0.0000, 0.0500,
    0.0999, 0.1499, 0.1998, 0.2498, 0.2997, 0.3497, 0.3996, 0.4496, 0.4995, 0.5495,
    0.5994, 0.6494, 0.6993, 0.7493, 0.7993, 0.8492, 0.8992, 0.9491, 0.9991, 1.0490,
    1.0990, 1.1489, 1.1989, 1.2488, 1.2988, 1.3487, 1.3987, 1.4487, 1.4986, 1.5486,
    1.5985, 1.6485, 1.6984, 1.7484, 1.7983, 1.8483, 1.8982, 1.9482, 1.9981, 2.0481,
    2.0980, 2.1480, 2.1980, 2.2479, 2.2979, 2.3478, 2.3978, 2.4477, 2.4977, 2.5476,
    2.5976, 2.6475, 2.6975, 2.7474, 2.7974, 2.8473, 2.8973,
)
WRIST_EXCLUSION_Q6: tuple[float, ...] = (
    0.545, 0.545, 0.504, 0.464, 0.420, 0.375, 0.324, 0.276, 0.224, 0.202,
    0.195, 0.191, 0.191, 0.191, 0.191, 0.188, 0.191, 0.191, 0.191, 0.188,
    0.188, 0.191, 0.191, 0.191, 0.188, 0.188, 0.191, 0.191, 0.191, 0.188,
    0.191, 0.191, 0.191, 0.188, 0.188, 0.191, 0.199, 0.210, 0.221, 0.239,
    0.254, 0.269, 0.276, 0.276, 0.276, 0.276, 0.280, 0.280, 0.276, 0.272,
    0.265, 0.258, 0.247, 0.235, 0.221, 0.206, 0.199, 0.195, 0.191, 0.188,
    0.191, 0.191, 0.191, 0.191, 0.188, 0.191, 0.191, 0.191, 0.188, 0.188,
    0.191, 0.191, 0.191, 0.188, 0.191, 0.191, 0.191, 0.191, 0.191, 0.191,
    0.191, 0.191, 0.195, 0.199, 0.206, 0.221, 0.235, 0.258, 0.280, 0.309,
    0.342, 0.383, 0.423, 0.475, 0.530, 0.596, 0.663, 0.721, 0.762, 0.788,
    0.788, 0.788, 0.788, 0.780, 0.773, 0.769, 0.762, 0.758, 0.758, 0.762,
    0.766, 0.773, 0.780, 0.791, 0.791, 0.791, 0.788,
)
# fmt: on
"""The wrist exclusion: q6 below the piecewise linear function through (`WRIST_EXCLUSION_Q7`,
`WRIST_EXCLUSION_Q6`) of q7 (rad).  Outside it neither engine reports a contact on
`WRIST_LINK_PAIRS` (proved on a grid, see the module docstring)."""
_WRIST_Q7 = np.array(WRIST_EXCLUSION_Q7)
_WRIST_Q6 = np.array(WRIST_EXCLUSION_Q6)


def wrist_clearance(q: np.ndarray) -> np.ndarray:
    """How far q6 lies above the wrist exclusion at q7, rad, for joint angles ``q`` (..., 7): (...).
    Negative inside it, where link 5 may touch link 7 (or link 6 the hand) within `WRIST_MARGIN`."""
    q = np.asarray(q, dtype=np.float64)
    return q[..., 5] - np.interp(q[..., 6], _WRIST_Q7, _WRIST_Q6)
