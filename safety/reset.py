"""Safe reset planning: from any state inside the limits to the home pose (issue 3, item 5).

Seed 001 reset the arm to a home pose after every episode and whenever a safety limit would be
violated; on hardware that reset is a real motion, so it must respect the same limits as the
exploration.  `plan_reset` builds a joint-space trajectory at the control rate:

1. brake the current joint velocity to rest at the acceleration limit (per joint);
2. move through zero or more intermediate waypoints to ``home``; every segment is a
   synchronised time-optimal jerk-limited profile from Ruckig (all joints start and stop together,
   within the velocity cap and the operating acceleration and jerk limits: Franka's controller
   rejects motions that are not jerk-limited), from rest to rest;
3. every configuration of the trajectory is checked with forward kinematics: joints inside the
   operating limits, tool tip inside the box and above the table, the arm's watched points above
   the table.  The straight joint-space move is tried first; if it would leave the box or dip
   toward the table, the plan goes via safe intermediates: retract (shoulder and elbow, joints 2
   and 4, and the wrist, joint 6, to their home angles, which folds the arm up in its current
   vertical plane), lift the tool tip straight up first, or both, or move some joints to their
   home angles first and the others after (every subset is tried); all of these again after
   first nudging the tool tip 3 cm toward its home position (off a boundary the arm may sit on).
4. if none of those stays inside (folded configurations exploration rarely reaches), a
   bidirectional sampling search in joint space (RRT-Connect, Kuffner & LaValle 2000) between the
   resting configuration and home, every straight edge checked at `EDGE_CHECK_RAD` resolution with
   a `SEARCH_CLEARANCE_M` extra clearance, then shortened by shortcutting; its waypoints are passed
   at rest like the others. It is seeded from the start configuration, so a plan is reproducible.
   Only if that also fails (or the full path at the control rate leaves the limits),
   `ResetPlanningError`: the collector holds for the operator.

The commands are the averages of the continuous profile over each control period, so they sum
exactly to the planned displacement, never exceed the cap and never change by more than
``acceleration * period`` between periods: the filter's rate limiter lets them through unchanged.

Why the search is ours and the profiles are not: the RRT-Connect search is small, deterministic
(seeded from the start configuration), checks every edge with the filter's own Cartesian margins
and is tested here; a motion planning library would bring its own collision model and its own idea
of the limits.  The time-parameterisation, by contrast, is Ruckig's (jerk limits are easy to get
subtly wrong by hand).

Execution (`ResetController`): the collector sends ``controller.action(state)`` THROUGH THE SAME
FILTER (a ``joint_velocity`` `SafetyFilter`, whatever the session's action space), so the filter
still guards the reset; a proportional correction toward the planned configuration absorbs any
deviation (the filter slowing down near a boundary, servo lag) and a final phase converges on
home.  In simulation the driver may instead teleport to home (``driver.reset(home)``).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from safety import kinematics
from safety.filter import brake, cartesian_margins
from safety.limits import SafetyLimits

DEFAULT_HOME_Q = np.array([0.0, 0.19634954, 0.0, -2.61799388, 0.0, 2.94159265, 0.78539816])
"""Home joint configuration, rad: robosuite's Panda start pose, tool tip about 0.22 m above the
table and pointing down.  The one definition: the simulator, the collector's config and the
trainer import it from here (safety/ is the leaf everything may import)."""
RETRACT_JOINTS = (1, 3, 5)
"""Joints (0-based: joints 2, 4 and 6) moved to their home angles by the retract intermediate."""
LIFT_HEIGHT_M = 0.12
"""How far the lift intermediate raises the tool tip, m (less if the box top is closer)."""
NUDGE_M = 0.03
"""How far the nudge intermediate moves the tool tip toward its home position, m."""
SEARCH_ITERATIONS = 4000
"""Most extensions of the joint-space search (step 4) before it gives up (about 1 s)."""
SEARCH_STEP_RAD = 0.25
"""Longest edge the search adds in one extension, rad (largest joint change)."""
EDGE_CHECK_RAD = 0.02
"""Resolution at which search edges are checked against the limits, rad (largest joint change)."""
SEARCH_CLEARANCE_M = 0.005
"""Extra margin the search keeps to every limit, m or rad: the executed rest-to-rest profiles
deviate slightly from the straight edges it checked."""
SHORTCUT_TRIES = 200
"""Random shortcut attempts on the path the search found."""


class ResetPlanningError(RuntimeError):
    """No candidate path to home stays inside the limits."""


@dataclasses.dataclass(frozen=True)
class ResetPlan:
    """A reset trajectory sampled at the control rate.

    Attributes:
        period: control period, s.
        positions: (n + 1, 7) planned configuration at the start of each period, rad
            (positions[0] is the start, positions[-1] is home).
        velocities: (n, 7) joint velocity command of each period, rad/s.
        waypoints: the configurations the plan passes at rest, home last, rad.
        strategy: which candidate path was chosen (``direct``, ``retract``, ``lift``, ...).
        min_margin: the smallest Cartesian margin along the plan, m.
    """

    period: float
    positions: np.ndarray
    velocities: np.ndarray
    waypoints: tuple[np.ndarray, ...]
    strategy: str
    min_margin: float

    @property
    def duration_s(self) -> float:
        return len(self.velocities) * self.period


def _segment(start: np.ndarray, goal: np.ndarray, limits: SafetyLimits, period: float) -> np.ndarray:
    """Configurations (n + 1, 7) at the control rate of a synchronised rest-to-rest move: Ruckig's
    time-optimal jerk-limited profile (Berscheid & Kroeger 2021, "Jerk-limited real-time
    trajectory generation with arbitrary target states", RSS) within the operating velocity cap,
    acceleration and jerk limits, every joint finishing together, sampled every period and held
    at ``goal`` from its end to the end of the last period."""
    from ruckig import InputParameter, Result, Ruckig, Trajectory  # the reset planner only

    rest = [0.0] * 7
    request = InputParameter(7)
    request.current_position, request.current_velocity, request.current_acceleration = list(start), rest, rest
    request.target_position, request.target_velocity, request.target_acceleration = list(goal), rest, rest
    request.max_velocity = list(limits.velocity_caps)
    request.max_acceleration = list(limits.accelerations)
    request.max_jerk = list(limits.jerks)
    trajectory = Trajectory(7)
    result = Ruckig(7).calculate(request, trajectory)
    if result not in (Result.Working, Result.Finished):
        raise ResetPlanningError(f"no jerk-limited profile from {np.round(start, 4)} to {np.round(goal, 4)}: {result}")
    steps = max(1, int(np.ceil(trajectory.duration / period - 1e-9)))
    positions = np.array([trajectory.at_time(min(k * period, trajectory.duration))[0] for k in range(steps + 1)])
    positions[0], positions[-1] = start, goal
    return positions


def _path_through(braking: np.ndarray, waypoints: list[np.ndarray], limits: SafetyLimits, period: float) -> np.ndarray:
    """The braking configurations, then rest-to-rest segments through each waypoint in turn."""
    path, start = [braking], braking[-1]
    for waypoint in waypoints:
        path.append(_segment(start, waypoint, limits, period)[1:])
        start = waypoint
    return np.concatenate(path)


def _move_tip(q: np.ndarray, limits: SafetyLimits, displacement: np.ndarray) -> np.ndarray | None:
    """A configuration with the tool tip moved by ``displacement`` (m, orientation free), by
    damped least squares from ``q``; None if it does not get there inside the joint limits."""
    target = kinematics.tip_position(q) + displacement
    current = q.copy()
    for _ in range(100):
        f = kinematics.frames(current)
        error = target - f[8, :3, 3]
        if np.linalg.norm(error) < 1e-4:
            return current
        jacobian = kinematics.jacobian_from_frames(f)[:3]
        step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + 1e-4 * np.eye(3), np.clip(error, -0.02, 0.02))
        current = np.clip(current + step, limits.q_lower, limits.q_upper)
        if not np.all(np.isfinite(current)):
            return None
    return None


def _candidates(q: np.ndarray, home: np.ndarray, limits: SafetyLimits) -> list[tuple[str, list[np.ndarray]]]:
    """Candidate waypoint lists from ``q`` (at rest) to ``home``, in order of preference."""
    out: list[tuple[str, list[np.ndarray]]] = [("direct", [home])]
    # Retract first: joints 2, 4, 6 (shoulder, elbow, wrist) to their home angles.
    retract = q.copy()
    retract[list(RETRACT_JOINTS)] = home[list(RETRACT_JOINTS)]
    out.append(("retract", [retract, home]))
    # Lift the tool tip first (and then retract).
    height = max(0.0, min(LIFT_HEIGHT_M, limits.tip_upper[2] - 0.02 - kinematics.tip_position(q)[2]))
    lifted = _move_tip(q, limits, np.array([0.0, 0.0, height]))
    if lifted is not None:
        lift_retract = lifted.copy()
        lift_retract[list(RETRACT_JOINTS)] = home[list(RETRACT_JOINTS)]
        out += [("lift", [lifted, home]), ("lift_retract", [lifted, lift_retract, home])]
    # Then: first some joints to their home angles, then the rest (every subset, smallest first).
    subsets = sorted(range(1, 127), key=lambda m: (bin(m).count("1"), m))
    for mask in subsets:
        joints = [i for i in range(7) if mask >> i & 1]
        partial = q.copy()
        partial[joints] = home[joints]
        out.append((f"joints_{''.join(str(i + 1) for i in joints)}_first", [partial, home]))
    return out


def _nudged(q: np.ndarray, home: np.ndarray, limits: SafetyLimits) -> list[tuple[str, list[np.ndarray]]]:
    """The candidates again, after first moving the tool tip `NUDGE_M` toward the home tool tip
    (off a boundary the start may be sitting on)."""
    toward = kinematics.tip_position(home) - kinematics.tip_position(q)
    distance = float(np.linalg.norm(toward))
    if distance < 1e-6:
        return []
    nudged = _move_tip(q, limits, toward * min(1.0, NUDGE_M / distance))
    if nudged is None:
        return []
    return [(f"nudge_{name}", [nudged, *waypoints]) for name, waypoints in _candidates(nudged, home, limits)]


def _edge_margin(a: np.ndarray, b: np.ndarray, limits: SafetyLimits) -> float:
    """`path_margin` of the straight joint-space edge a -> b sampled every `EDGE_CHECK_RAD`."""
    n = max(1, int(np.ceil(np.max(np.abs(b - a)) / EDGE_CHECK_RAD)))
    return path_margin(a + (b - a) * np.linspace(0.0, 1.0, n + 1)[:, None], limits)


def _search(start: np.ndarray, goal: np.ndarray, limits: SafetyLimits, floor: float) -> list[np.ndarray] | None:
    """RRT-Connect (Kuffner & LaValle 2000) from ``start`` to ``goal`` in joint space; every edge
    keeps `path_margin` >= ``floor``.  Returns the waypoints after ``start`` (``goal`` last), shortened
    by random shortcuts, or None after `SEARCH_ITERATIONS` extensions."""
    rng = np.random.default_rng(np.frombuffer(np.round(start, 6).tobytes(), dtype=np.uint32))
    low = limits.q_lower + limits.tracking_margin_joint
    high = limits.q_upper - limits.tracking_margin_joint

    def steer(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        gap = float(np.max(np.abs(dst - src)))
        return dst if gap <= SEARCH_STEP_RAD else src + (dst - src) * (SEARCH_STEP_RAD / gap)

    def extend(tree: list[np.ndarray], parents: list[int], target: np.ndarray) -> int | None:
        """Add one step from the nearest node toward target; the new node's index or None."""
        nearest = int(np.argmin(np.max(np.abs(np.asarray(tree) - target), axis=1)))
        new = steer(tree[nearest], target)
        if _edge_margin(tree[nearest], new, limits) < floor:
            return None
        tree.append(new)
        parents.append(nearest)
        return len(tree) - 1

    def branch(tree: list[np.ndarray], parents: list[int], index: int) -> list[np.ndarray]:
        out = []
        while index >= 0:
            out.append(tree[index])
            index = parents[index]
        return out  # from the node back to the tree's root

    trees = ([start.copy()], [-1]), ([goal.copy()], [-1])
    path = None
    for iteration in range(SEARCH_ITERATIONS):
        (tree_a, parents_a), (tree_b, parents_b) = trees if iteration % 2 == 0 else trees[::-1]
        new = extend(tree_a, parents_a, rng.uniform(low, high))
        if new is None:
            continue
        target = tree_a[new]
        while (reached := extend(tree_b, parents_b, target)) is not None:  # connect
            if np.array_equal(tree_b[reached], target):
                from_a, from_b = branch(tree_a, parents_a, new), branch(tree_b, parents_b, reached)
                path = [*from_a[::-1], *from_b[1:]] if iteration % 2 == 0 else [*from_b[::-1], *from_a[1:]]
                break
        if path is not None:
            break
    if path is None:
        return None
    for _ in range(SHORTCUT_TRIES):
        if len(path) <= 2:
            break
        i, j = sorted(rng.choice(len(path), size=2, replace=False))
        if j - i > 1 and _edge_margin(path[i], path[j], limits) >= floor:
            path = path[: i + 1] + path[j:]
    return path[1:]


def path_margin(positions: np.ndarray, limits: SafetyLimits) -> float:
    """Smallest margin of a sequence of configurations (m, 7) to every limit as the filter
    enforces it (tracking margins included): joint limits (rad) and Cartesian limits (m),
    negative when some configuration is outside."""
    joint_inset = limits.tracking_margin_joint
    joint = np.minimum(positions - limits.q_lower, limits.q_upper - positions).min() - joint_inset
    cartesian = cartesian_margins(
        limits, kinematics.frames(positions), limits.tracking_margin_position, q=positions
    ).min()
    return float(min(joint, cartesian))


def plan_reset(
    q: np.ndarray,
    dq: np.ndarray | None = None,
    home: np.ndarray | None = None,
    limits: SafetyLimits | None = None,
    control_rate_hz: float = 20.0,
) -> ResetPlan:
    """Plan the reset from (``q``, ``dq``) to ``home`` (default `DEFAULT_HOME_Q`); see the module
    docstring.  Raises `ResetPlanningError` if no candidate path stays inside the limits."""
    limits = limits if limits is not None else SafetyLimits()
    period = 1.0 / control_rate_hz
    home = DEFAULT_HOME_Q.copy() if home is None else np.asarray(home, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    dq = (
        np.zeros(7)
        if dq is None
        else np.clip(np.asarray(dq, dtype=np.float64), -limits.velocity_caps, limits.velocity_caps)
    )
    if path_margin(home[None], limits) < 0:
        raise ResetPlanningError("the home pose is outside the limits")

    # 1. brake to rest
    positions, velocities = [q.copy()], []
    position = q.copy()
    step = limits.accelerations * period
    velocity = brake(dq, step)
    while np.any(velocity):
        position = position + velocity * period
        positions.append(position.copy())
        velocities.append(velocity.copy())
        velocity = brake(velocity, step)
    if np.any(dq):  # one period at rest, so the move's first command is a small step from zero
        positions.append(position.copy())
        velocities.append(np.zeros(7))
    rest = positions[-1]
    braking = np.array(positions)

    # 2./3. candidate paths, first safe one wins
    best: tuple[float, str, list[np.ndarray], np.ndarray] | None = None
    for strategy, waypoints in itertools.chain(_candidates(rest, home, limits), _nudged(rest, home, limits)):
        path = _path_through(braking, waypoints, limits, period)
        margin = path_margin(path, limits)
        start_margin = path_margin(path[:1], limits)
        if margin >= min(0.0, start_margin) - 1e-9:
            best = (margin, strategy, waypoints, path)
            break
        if best is None or margin > best[0]:
            best = (margin, strategy, waypoints, path)
    assert best is not None
    floor = min(0.0, path_margin(braking[:1], limits))
    if best[0] < floor - 1e-9:  # 4. no hand-made candidate stays inside: search
        found = _search(rest, home, limits, floor + SEARCH_CLEARANCE_M)
        if found is not None:
            searched = _path_through(braking, found, limits, period)
            best = max(best, (path_margin(searched, limits), "search", found, searched), key=lambda b: b[0])
    margin, strategy, waypoints, path = best
    if margin < min(0.0, path_margin(path[:1], limits)) - 1e-9:
        raise ResetPlanningError(f"no safe path to home; the best ({strategy}) is {-margin:.4f} outside the limits")
    commands = np.diff(path, axis=0) / period
    return ResetPlan(period, path, commands, tuple(np.array(w) for w in waypoints), strategy, margin)


class ResetController:
    """Executes a `ResetPlan` in closed loop; send each action through a ``joint_velocity`` filter.

    ``action(state)`` returns the planned velocity of the current period plus ``gain`` times the
    error to the planned configuration; after the plan, ``gain`` times the error to home.  `done`
    turns True once every joint is within ``tolerance`` rad of home and slower than
    ``rest_speed`` rad/s.
    """

    def __init__(self, plan: ResetPlan, gain: float = 4.0, tolerance: float = 2e-3, rest_speed: float = 0.01) -> None:
        self.plan = plan
        self.gain = float(gain)
        self.tolerance = float(tolerance)
        self.rest_speed = float(rest_speed)
        self.home = plan.positions[-1]
        self.step = 0

    def is_done(self, state) -> bool:
        q, dq = np.asarray(state.q), np.asarray(state.dq)
        return bool(np.max(np.abs(q - self.home)) < self.tolerance and np.max(np.abs(dq)) < self.rest_speed)

    def action(self, state) -> np.ndarray:
        q = np.asarray(state.q, dtype=np.float64)
        k = self.step
        self.step += 1
        if k < len(self.plan.velocities):
            return self.plan.velocities[k] + self.gain * (self.plan.positions[k] - q)
        return self.gain * (self.home - q)
