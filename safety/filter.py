"""The command filter: every action passes here before it reaches a driver (issue 3).

``SafetyFilter(limits, control_rate_hz, action_space).filter(state, action) -> (SafeCommand,
[SafetyEvent])``.  The state is duck-typed (anything with ``.q``, ``.dq`` and optionally
``.tip_pos`` and ``.time``, e.g. ``robot_drivers.RobotState``); the action is an array.  The
filter is deterministic: its only memory is the previous command (for rate limiting) and, for
``tip_delta``, the tool-tip target; `SafetyFilter.reset` clears both.

Output: always a joint velocity command (`SafeCommand`, 7 values in rad/s).  ``tip_delta``
actions are converted to joint velocities here with our own kinematics, so every guarantee below
holds in both action spaces and the driver never converts anything itself.

What one call does, in order:

1. **Non-finite** values anywhere in the action, or an action of the wrong shape (a ``nonfinite``
   / ``fault`` event): the action is replaced by a stop (zero velocity), which the steps below
   turn into a planned stop: braking at the operating acceleration limit, every limit checked.
   Non-finite values in the state (q, dq, tip_pos, time): the command is the *emergency stop*:
   the previous command braked toward zero as fast as the robot's published acceleration limits
   allow (``acceleration_max * period`` per period), never a velocity step the arm cannot follow.
   With an unreadable state no braking path can be planned; the fastest stop the limits allow is
   what Franka's own controller would do with a zero command (libfranka's rate limiter), now said
   by the filter itself.  The emergency stop (`emergency_stop`, also used by the watchdog) and the
   emergency brake below are the only places a command may change by more than the operating
   acceleration limit, and never by more than the published one.
2. **Desired velocity.**  ``joint_velocity``: the action, each joint clipped to the operating cap
   (0.5 rad/s, seed 001).  ``tip_delta``: the displacement, each axis clipped to
   ``tip_delta_max``, is added to an internal tool-tip target (kept inside the workspace box and
   within `resolved_rate.TIP_TARGET_LEAD_M` of the tool tip, so a blocked arm does not wind up); damped least
   squares resolved-rate control on the tool-tip Jacobian (position rows toward the target within
   one period, orientation rows holding the tool pointing down at the yaw it had when the target
   was created) gives joint velocities, scaled down as a whole if one exceeds the cap.
3. **Acceleration**: each joint's command differs from the previous command by at most
   ``acceleration_limit * period``.
4. **Joint limits (predictive)**: each joint's velocity toward a limit is capped so that moving at
   it for one period and then braking at the acceleration limit (the velocity falling by
   ``acceleration * period`` per period, exactly the rate limiter's steps) stops the joint at or
   before the operating limit (less ``tracking_margin_joint``).  Closed form, per joint
   (`max_speed_toward`).
5. **Cartesian limits (predictive)**: the tool tip must stay in the box and above the table
   (``min_tip_height``), the elbow, forearm, wrist, flange and hand at least ``min_body_height``
   above the table, the forearm, wrist, flange and hand at least ``min_base_distance`` from the
   vertical axis through the base (the arm folded back onto itself: self-collision with links
   0-1, seen in MuJoCo), the tool tip no faster than ``max_tip_speed``.  Candidates on the segment from
   the *braking command* (the previous command decelerated by one step of the acceleration limit)
   to the command from step 4 are checked by rolling each out on the integrator model (one period
   at the candidate, then braking per joint at the acceleration limit to rest) and evaluating
   forward kinematics at every rolled-out configuration; the candidate closest to the step-4
   command whose whole rollout is inside is sent.  The filter plans ``tracking_margin_position``
   inside every Cartesian limit and ``tracking_margin_joint`` inside every joint limit, room for
   the joint servo's tracking error (a real or simulated arm lags its command and then
   overshoots the commanded integral by a few millimetres; measured in MuJoCo and PyBullet by
   benchmarks/safety_soak.py), so the measured state stays inside the limits themselves.  Every
   candidate on that segment is within the acceleration limit of the previous command, so the
   limits never force a velocity jump.  The rollout is exact for the integrator model
   (q += v * period), not a linearisation.

Why this is safe, by induction on the integrator model: if the previous command's braking rollout
stayed inside, the braking command's rollout from the new state is the tail of that rollout, so
it is inside too, and the filter always has a candidate within the acceleration limit.  When the
state is not where the model says (a fresh filter, a simulator lagging its commands, a pushed
arm), the braking command itself may fail the check; the filter then brakes harder than the
acceleration limit, as little harder as the check allows, down to the emergency stop at the
published acceleration limit (an ``emergency_brake`` event): stopping is always allowed, but never
faster than the arm can brake.  A state already outside a limit (which
the monitor reports as a violation) may move back inside but never further out.
"""

from __future__ import annotations

import numpy as np

from safety import collision_model, kinematics, resolved_rate
from safety.limits import SafetyLimits
from safety.types import SafeCommand, SafetyEvent

SEGMENT_STEPS = 16
"""Number of intervals the segment from the braking command to the requested command is cut into
when searching for the largest safe command (resolution 1/16 of the requested change)."""
ACTION_SPACES = ("joint_velocity", "tip_delta")

_TIP_CONSTRAINTS = ("x_min", "x_max", "y_min", "y_max", "z_min", "z_max")
_BODY_CONSTRAINTS = tuple(name for name in kinematics.BODY_POINT_NAMES if name != "tip")
_BASE_POINTS = ("forearm", "wrist", "flange", "hand")
_BASE_CONSTRAINTS = tuple(f"{name}_base" for name in _BASE_POINTS)
_BASE_INDEX = [kinematics.BODY_POINT_NAMES.index(name) for name in _BASE_POINTS]
_SELF_CONSTRAINTS = collision_model.SELF_COLLISION_PAIR_NAMES
_TABLE_CAPSULES = np.flatnonzero(collision_model.TABLE_CHECKED)
_TABLE_CONSTRAINTS = tuple(f"{collision_model.CAPSULE_NAMES[k]}_table" for k in _TABLE_CAPSULES)
_FINGERS = collision_model.CAPSULE_NAMES.index("fingers")
CONSTRAINT_NAMES: tuple[str, ...] = (
    _TIP_CONSTRAINTS + _BODY_CONSTRAINTS + _BASE_CONSTRAINTS + _SELF_CONSTRAINTS + _TABLE_CONSTRAINTS + ("wrist",)
)
"""Names of the Cartesian constraints in the order `cartesian_margins` returns them: the six faces
of the tool-tip region, the height above the table of each other watched point, the horizontal
distance of the forearm, wrist, flange and hand from the base column (``*_base``), the clearance
of each checked pair of link capsules (``link5_tube_a-hand``: `collision_model.SELF_COLLISION_PAIRS`),
each moving capsule's clearance above the table (``link6_table``), then ``wrist``: how far joint 6
lies outside the wrist exclusion at joint 7's angle (rad, `collision_model.wrist_clearance`: link 5
against link 7, which capsules cannot separate)."""

_EPS = 1e-12
_TIP_AXES = np.array([0, 0, 1, 1, 2, 2])
_TIP_SIGNS = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
_TABLE_MARGIN_SHARE = np.where(_TABLE_CAPSULES == _FINGERS, 0.0, 1.0)
"""Which table clearances keep ``collision_margin`` (all but the fingers', see `cartesian_margins`)."""


def max_speed_toward(distance: np.ndarray, acceleration: np.ndarray, period: float) -> np.ndarray:
    """Largest speed toward a limit ``distance`` away (>= 0) such that moving at it for one period
    and then braking by ``acceleration * period`` per period until at rest covers at most
    ``distance`` (integrator model q += v * period).  Elementwise; 0 where distance <= 0.

    With step a*T, braking from v covers T * sum_{j>=1} max(v - j a T, 0); the total is piecewise
    linear and increasing in v, with knots at v = n a T where it equals a T^2 n (n + 1) / 2.
    """
    distance = np.maximum(np.asarray(distance, dtype=np.float64) - _EPS, 0.0)
    step = acceleration * period
    n = np.floor((np.sqrt(1.0 + 8.0 * distance / (step * period)) - 1.0) / 2.0)
    return (distance / period + step * n * (n + 1.0) / 2.0) / (n + 1.0)


def brake(velocity: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Each joint's velocity one braking step closer to zero (``step`` = acceleration * period)."""
    return np.sign(velocity) * np.maximum(np.abs(velocity) - step, 0.0)


def cartesian_margins(limits: SafetyLimits, f: np.ndarray, inset: float = 0.0, *, q: np.ndarray) -> np.ndarray:
    """Signed distances (..., C), m, inside each Cartesian constraint (named in `CONSTRAINT_NAMES`)
    for joint angles ``q`` (..., 7) and their frames ``f = kinematics.frames(q)``, less ``inset``;
    negative outside.  The last column, ``wrist``, is in rad, less ``tracking_margin_joint`` when
    ``inset`` is not zero (the filter's planning inset for the joint servo's tracking error).

    The collision constraints: each checked pair of link capsules at least ``collision_margin``
    apart, and each moving capsule at least ``collision_margin`` above the table (the fingers'
    capsule at least 0 above it: the tool tip's own height limit ``min_tip_height`` governs the
    fingers)."""
    points = kinematics.body_points_from_frames(f)
    # x_min, x_max, y_min, y_max, z_min, z_max: +-(tip - bound)
    tip_margins = points[..., -1, _TIP_AXES]
    tip_margins -= np.stack([limits.tip_lower, limits.tip_upper], axis=-1).reshape(6)
    tip_margins *= _TIP_SIGNS
    base = np.linalg.norm(points[..., _BASE_INDEX, :2], axis=-1) - limits.min_base_distance
    self_clearance, table_clearance = collision_model.clearances_from_frames(f, limits.table_height)
    table_clearance = table_clearance[..., _TABLE_CAPSULES] - _TABLE_MARGIN_SHARE * limits.collision_margin
    cartesian = (
        np.concatenate(
            [
                tip_margins,
                points[..., :-1, 2] - limits.body_floor,
                base,
                self_clearance - limits.collision_margin,
                table_clearance,
            ],
            axis=-1,
        )
        - inset
    )
    wrist = collision_model.wrist_clearance(q) - (limits.tracking_margin_joint if inset else 0.0)
    return np.concatenate([cartesian, wrist[..., None]], axis=-1)


class SafetyFilter:
    """Turns an explorer's action into a joint velocity command that respects `SafetyLimits`.

    Args:
        limits: the limits to enforce (Panda defaults if None).
        control_rate_hz: rate at which commands are sent, Hz (seed 001: 20).
        action_space: ``"joint_velocity"`` (7 values, rad/s) or ``"tip_delta"`` (3 values, m per
            step); ``robot_drivers.ActionSpace`` members are accepted too.
    """

    def __init__(
        self,
        limits: SafetyLimits | None = None,
        control_rate_hz: float = 20.0,
        action_space: str = "joint_velocity",
    ) -> None:
        self.limits = limits if limits is not None else SafetyLimits()
        if not control_rate_hz > 0:
            raise ValueError(f"control_rate_hz must be positive, got {control_rate_hz}")
        self.control_rate_hz = float(control_rate_hz)
        self.period = 1.0 / self.control_rate_hz
        action_space = str(getattr(action_space, "value", action_space))
        if action_space not in ACTION_SPACES:
            raise ValueError(f"unknown action space {action_space!r}; known: {', '.join(ACTION_SPACES)}")
        self.action_space = action_space
        self.action_dim = 7 if action_space == "joint_velocity" else 3
        self._cap = self.limits.velocity_caps
        self._acc = self.limits.accelerations
        self._step = self._acc * self.period
        self._hard_step = np.asarray(self.limits.acceleration_max, dtype=np.float64) * self.period
        self._q_lower = self.limits.q_lower + self.limits.tracking_margin_joint
        self._q_upper = self.limits.q_upper - self.limits.tracking_margin_joint
        self._inset = self.limits.tracking_margin_position
        self._rollout_steps = int(np.ceil(np.max(self._cap / self._step) - 1e-9)) + 1
        self._grid = np.linspace(1.0, 0.0, SEGMENT_STEPS + 1)
        self._previous: np.ndarray | None = None
        self._tip_target: resolved_rate.TipTarget | None = None

    # ---- memory -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the previous command and the tool-tip target (call at every episode start)."""
        self._previous = None
        self._tip_target = None

    def notify_stopped(self) -> None:
        """Tell the filter the arm was sent a stop outside it (watchdog, operator): the next
        command ramps up from zero."""
        self._previous = np.zeros(7)
        self._tip_target = None

    @property
    def previous_command(self) -> np.ndarray | None:
        """The last command this filter returned (rad/s, (7,)), or None after `reset`."""
        return None if self._previous is None else self._previous.copy()

    # ---- the filter -------------------------------------------------------------------------
    def filter(self, state, action) -> tuple[SafeCommand, list[SafetyEvent]]:
        """The safe joint velocity command for ``action`` in ``state``, and every intervention."""
        events: list[SafetyEvent] = []
        state_fault, action_fault = self._check_inputs(state, action, events)
        if state_fault:
            return self._emergency(state, events)
        q = np.asarray(state.q, dtype=np.float64)
        dq = np.asarray(state.dq, dtype=np.float64)
        f_now = kinematics.frames(q)

        # 2. desired velocity
        if action_fault:  # an unusable action from a readable state: a planned stop
            desired = np.zeros(7)
            self._tip_target = None
        elif self.action_space == "joint_velocity":
            action = np.asarray(action, dtype=np.float64).reshape(-1)
            desired = np.clip(action, -self._cap, self._cap)
            for i in np.flatnonzero(desired != action):
                events.append(SafetyEvent("velocity_clip", int(i), float(abs(action[i] - desired[i]))))
        else:
            desired = self._resolve_tip_delta(f_now, np.asarray(action, dtype=np.float64).reshape(-1), events)

        # 3. acceleration
        previous = self._previous if self._previous is not None else np.clip(dq, -self._cap, self._cap)
        rate_lo, rate_hi = previous - self._step, previous + self._step
        requested = np.clip(desired, rate_lo, rate_hi)
        for i in np.flatnonzero(np.abs(requested - desired) > 1e-12):
            events.append(SafetyEvent("acceleration_limit", int(i), float(abs(desired[i] - requested[i]))))

        # 4. joint limits, per joint, closed form
        hi = max_speed_toward(self._q_upper - q, self._acc, self.period)
        lo = -max_speed_toward(q - self._q_lower, self._acc, self.period)
        # A joint already too fast for its limit still brakes no harder than the arm can.
        lo = np.minimum(lo, previous + self._hard_step)
        hi = np.maximum(hi, previous - self._hard_step)
        limited = np.clip(requested, lo, hi)
        for i in np.flatnonzero(np.abs(limited - requested) > 1e-12):
            events.append(SafetyEvent("joint_limit", int(i), float(abs(requested[i] - limited[i]))))
        braking = np.clip(brake(previous, self._step), lo, hi)

        # 5. Cartesian limits along the segment braking -> limited
        # the state's own margins and the requested command's rollout in one evaluation
        rolled = self.rollout(q, (braking + self._grid[0] * (limited - braking))[None])[0]
        stacked = np.concatenate([q[None], rolled])
        stacked_frames = np.concatenate([f_now[None], kinematics.frames(rolled)])
        both = cartesian_margins(self.limits, stacked_frames, self._inset, q=stacked)
        margins_now = both[0]
        jacobian = kinematics.jacobian_from_frames(f_now)[:3]
        command = self._search_segment(q, braking, limited, margins_now, jacobian, events, requested_margins=both[1:])
        if command is None:  # the braking command itself is unsafe: brake harder, down to the hardest allowed
            hardest = brake(previous, self._hard_step)
            command = self._search_segment(q, hardest, braking, margins_now, jacobian, events, report=False)
            if command is None:  # cannot stop in time even so: brake as hard as the arm can
                command = hardest
                events.append(SafetyEvent("emergency_brake", "all", 1.0, "braking at the published acceleration limit"))
        excess = np.maximum(np.maximum(rate_lo - command, command - rate_hi), 0.0)
        for i in np.flatnonzero(excess > 1e-9):
            events.append(
                SafetyEvent("emergency_brake", int(i), float(excess[i]), "braking beyond the acceleration limit")
            )
        self._previous = command
        return SafeCommand(command), events

    # ---- helpers ----------------------------------------------------------------------------
    def _check_inputs(self, state, action, events: list[SafetyEvent]) -> tuple[bool, bool]:
        """(state unusable, action unusable), with an event for each problem."""
        action_fault = False
        try:
            values = np.asarray(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            events.append(SafetyEvent("fault", "action", 0.0, f"action is not numeric: {action!r}"[:200]))
            values, action_fault = np.zeros(self.action_dim), True
        if values.shape != (self.action_dim,):
            events.append(
                SafetyEvent("fault", "action", 0.0, f"{self.action_space} action needs {self.action_dim} values")
            )
            values, action_fault = np.zeros(self.action_dim), True
        fault = False
        parts = {"action": values}
        for name in ("q", "dq", "tip_pos", "time"):
            value = getattr(state, name, None)
            if value is None and name in ("tip_pos", "time"):
                continue
            try:
                parts[f"state.{name}"] = np.asarray(value, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                parts[f"state.{name}"] = np.array([np.nan])
        for name in ("state.q", "state.dq"):
            if parts[name].shape != (7,):
                events.append(SafetyEvent("fault", name, 0.0, f"{name} needs 7 values, got {parts[name].shape}"))
                fault = True
        for name, value in parts.items():
            bad = int(np.count_nonzero(~np.isfinite(value)))
            if bad:
                events.append(SafetyEvent("nonfinite", name, float(bad), f"{bad} non-finite value(s) in {name}"))
                if name == "action":
                    action_fault = True
                else:
                    fault = True
        return fault, action_fault

    def emergency_stop(self, measured_velocity=None, from_command: np.ndarray | None = None) -> SafeCommand:
        """The fastest stop the robot's published acceleration limits allow: the last command sent
        (``from_command``, by default the previous command; for a fresh filter the finite measured
        velocity, else zero) braked by ``acceleration_max * period``.  Send it every period until it
        is zero (`SafeCommand.is_stop`).  Used for non-finite input and by the watchdog; the next
        command ramps up from it; clears the tool-tip target."""
        previous = self._previous if from_command is None else np.asarray(from_command, dtype=np.float64)
        if previous is None:
            try:
                measured = np.asarray(measured_velocity, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                measured = np.zeros(0)
            previous = np.clip(measured, -self._cap, self._cap) if measured.shape == (7,) else np.zeros(7)
            if not np.all(np.isfinite(previous)):
                previous = np.zeros(7)
        command = brake(previous, self._hard_step)
        self._previous = command
        self._tip_target = None
        return SafeCommand(command)

    def _emergency(self, state, events: list[SafetyEvent]) -> tuple[SafeCommand, list[SafetyEvent]]:
        return self.emergency_stop(getattr(state, "dq", None)), events

    def _resolve_tip_delta(self, f_now: np.ndarray, action: np.ndarray, events: list[SafetyEvent]) -> np.ndarray:
        delta = np.clip(action, -self.limits.tip_delta_max, self.limits.tip_delta_max)
        for i in np.flatnonzero(delta != action):
            events.append(SafetyEvent("velocity_clip", "xyz"[i], float(abs(action[i] - delta[i])), "tip_delta range"))
        tip, rotation = f_now[8, :3, 3], f_now[8, :3, :3]
        bounds = (self.limits.tip_lower, self.limits.tip_upper)
        self._tip_target = resolved_rate.advance_target(self._tip_target, tip, rotation, delta, bounds)
        jacobian = kinematics.jacobian_from_frames(f_now)
        velocity = resolved_rate.joint_velocity_toward(self._tip_target, tip, rotation, jacobian, self.period)
        scale = float(np.max(np.abs(velocity) / self._cap))
        if scale > 1.0:
            velocity /= scale
            events.append(SafetyEvent("velocity_clip", "all", 1.0 - 1.0 / scale, "tip_delta scaled to the cap"))
        return velocity

    def rollout(self, q: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Configurations (m, steps, 7) of each candidate command (m, 7) on the integrator model:
        one period at the command, then braking per joint at the acceleration limit to rest."""
        velocity = candidates.copy()
        out = np.empty((candidates.shape[0], self._rollout_steps, 7))
        position = q + velocity * self.period
        out[:, 0] = position
        for k in range(1, self._rollout_steps):
            velocity = brake(velocity, self._step)
            position = position + velocity * self.period
            out[:, k] = position
        return out

    def _search_segment(
        self,
        q: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        margins_now: np.ndarray,
        jacobian: np.ndarray,
        events: list[SafetyEvent],
        report: bool = True,
        requested_margins: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """The candidate on start -> end closest to ``end`` that passes every Cartesian check, or
        None if even ``start`` fails.  Reports which constraints cut the command short.

        The requested command itself is checked first, alone: it passes in most calls (the arm
        away from every limit), and then the segment is not searched (same result, ~10x less
        work)."""
        floor = np.minimum(margins_now, 0.0) - 1e-12  # outside already: no further out
        requested = start + self._grid[0] * (end - start)
        if requested_margins is None:
            rolled = self.rollout(q, requested[None])
            margins = cartesian_margins(self.limits, kinematics.frames(rolled), self._inset, q=rolled)[0]
        else:  # computed by the caller together with the state's own margins
            margins = requested_margins
        speed_requested = float(np.linalg.norm(jacobian @ requested))
        speed_start = float(np.linalg.norm(jacobian @ start))
        if np.all(margins - floor >= 0.0) and speed_requested <= max(self.limits.max_tip_speed, speed_start) + 1e-12:
            return requested
        candidates = start + self._grid[:, None] * (end - start)
        rolled = self.rollout(q, candidates[1:])  # the first, the request, was checked above
        margins = np.concatenate(
            [margins[None], cartesian_margins(self.limits, kinematics.frames(rolled), self._inset, q=rolled)]
        )
        worst = np.min(margins - floor, axis=1)  # (m, constraints)
        speed = np.linalg.norm(candidates @ jacobian.T, axis=1)
        speed_bound = max(self.limits.max_tip_speed, float(speed[-1])) + 1e-12
        ok = np.all(worst >= 0.0, axis=1) & (speed <= speed_bound)
        feasible = np.flatnonzero(ok)
        if feasible.size == 0:
            return None
        best = int(feasible[0])
        if best > 0 and report:
            removed = float(self._grid[0] - self._grid[best])
            rejected = best - 1
            for k in np.flatnonzero(worst[rejected] < 0.0):
                name = CONSTRAINT_NAMES[k]
                if name in _BASE_CONSTRAINTS:
                    events.append(SafetyEvent("self_clearance", name, removed, "kept away from the base column"))
                    continue
                if name in _SELF_CONSTRAINTS:
                    events.append(SafetyEvent("self_clearance", name, removed, "link capsules kept apart"))
                    continue
                if name in _TABLE_CONSTRAINTS:
                    events.append(SafetyEvent("table_clearance", name, removed, "link capsule kept off the table"))
                    continue
                if name == "wrist":
                    events.append(SafetyEvent("self_clearance", name, removed, "joint 6 kept off link 7's reach"))
                    continue
                is_table = name in _BODY_CONSTRAINTS or (
                    name == "z_min" and self.limits.tip_lower[2] > self.limits.workspace_min[2]
                )
                where = ("tip" if name == "z_min" else name) if is_table else name
                events.append(
                    SafetyEvent(
                        "table_clearance" if is_table else "workspace",
                        where,
                        removed,
                        f"motion scaled to {1.0 - removed:.4f} of the request",
                    )
                )
            if speed[rejected] > speed_bound:
                events.append(
                    SafetyEvent("tip_speed", "tip", removed, f"tool tip would move at {speed[rejected]:.3f} m/s")
                )
        return candidates[best]
