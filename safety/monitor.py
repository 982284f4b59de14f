"""The violation policy: what happens when a state is outside the limits (issue 3, seed 001).

The filter is meant to make violations impossible; the monitor checks that it did, on the state
the driver measured (its own tool-tip position, not our kinematics' prediction).  Seed 001 reset
the robot "when the robot violated physical safety limits such as self-collision"; here a
violation (a joint outside its operating limit, the tool tip outside the workspace box or below
its height above the table, a watched point of the arm below its height above the table) gives
the verdict ``safety_stop``: the collector ends the episode with outcome ``safety_stop``, stops the
arm and runs the safe reset (`safety.reset`).  ``max_violations`` violations within ``window_s``
seconds give ``hold``: the collector stops and waits for the operator, who calls `release`.

Pure: no clock is read.  Time comes from the ``now`` argument (use a monotonic wall clock: the
simulated ``state.time`` restarts at every reset) and defaults to ``state.time``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from safety import kinematics
from safety.filter import CONSTRAINT_NAMES, cartesian_margins
from safety.limits import SafetyLimits
from safety.types import SafetyEvent

CONTINUE, SAFETY_STOP, HOLD = "continue", "safety_stop", "hold"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the collector must do after a state: ``action`` is ``"continue"``, ``"safety_stop"``
    (end the episode with that outcome, stop, reset) or ``"hold"`` (stop and wait for the operator);
    ``events`` are the ``violation`` events found (plus a ``hold`` event)."""

    action: str
    events: tuple[SafetyEvent, ...] = ()

    @property
    def ok(self) -> bool:
        return self.action == CONTINUE

    @property
    def outcome(self) -> str | None:
        """The episode outcome to record, or None when the episode goes on."""
        return None if self.ok else SAFETY_STOP


class ViolationMonitor:
    """Checks states against the limits and applies the violation policy.

    Args:
        limits: the limits the filter enforces.
        max_violations: this many violations within ``window_s`` put the collector on hold.
        window_s: the window, s (default 10 minutes).
        joint_tolerance: how far past an operating joint limit counts as a violation, rad.
        position_tolerance: how far past a Cartesian limit counts as a violation, m.

    The tolerances absorb the joint servo's tracking error (a simulator's or the robot's
    position can lag or lead the commanded integral by a fraction of a millimetre); the
    operating limits themselves are already ``joint_margin`` inside Franka's hardware limits.
    """

    def __init__(
        self,
        limits: SafetyLimits | None = None,
        max_violations: int = 3,
        window_s: float = 600.0,
        joint_tolerance: float = 0.002,
        position_tolerance: float = 0.002,
    ) -> None:
        if max_violations < 1 or not window_s > 0:
            raise ValueError("max_violations must be >= 1 and window_s positive")
        self.limits = limits if limits is not None else SafetyLimits()
        self.max_violations = int(max_violations)
        self.window_s = float(window_s)
        self.joint_tolerance = float(joint_tolerance)
        self.position_tolerance = float(position_tolerance)
        self._times: list[float] = []
        self._held = False

    @property
    def held(self) -> bool:
        """True once the collector was put on hold, until `release`."""
        return self._held

    @property
    def recent_violations(self) -> int:
        return len(self._times)

    def release(self) -> None:
        """The operator lets the collector go on: the hold and the violation history are cleared."""
        self._held = False
        self._times.clear()

    def violations(self, state) -> list[SafetyEvent]:
        """Every limit ``state`` is outside of, as ``violation`` events (pure, no bookkeeping)."""
        q = np.asarray(state.q, dtype=np.float64)
        tip = getattr(state, "tip_pos", None)
        values = [q] + ([] if tip is None else [np.asarray(tip, dtype=np.float64)])
        if not all(np.all(np.isfinite(v)) for v in values):
            return [SafetyEvent("violation", "state", float("nan"), "non-finite state: cannot be shown inside")]
        events = []
        below = self.limits.q_lower - q
        above = q - self.limits.q_upper
        for i in range(7):
            if below[i] > self.joint_tolerance:
                events.append(SafetyEvent("violation", i, float(below[i]), "below the lower joint limit"))
            if above[i] > self.joint_tolerance:
                events.append(SafetyEvent("violation", i, float(above[i]), "above the upper joint limit"))
        margins = cartesian_margins(self.limits, kinematics.frames(q), q=q)
        if tip is not None:  # the measured tool tip replaces our prediction of it
            tip = np.asarray(tip, dtype=np.float64)
            lower, upper = self.limits.tip_lower, self.limits.tip_upper
            margins[:6] = np.ravel(np.column_stack([tip - lower, upper - tip]))
        for k in np.flatnonzero(margins < -self.position_tolerance):
            unit = "rad" if CONSTRAINT_NAMES[k] == "wrist" else "m"
            events.append(
                SafetyEvent("violation", CONSTRAINT_NAMES[k], float(-margins[k]), f"outside by this many {unit}")
            )
        return events

    def check(self, state, now: float | None = None) -> Verdict:
        """The verdict for ``state`` at time ``now`` (s; defaults to ``state.time``)."""
        events = self.violations(state)
        if not events:
            return Verdict(HOLD if self._held else CONTINUE)
        now = float(state.time if now is None else now)
        self._times = [t for t in self._times if now - t < self.window_s] + [now]
        if len(self._times) >= self.max_violations:
            self._held = True
        if self._held:
            detail = f"{len(self._times)} violations within {self.window_s:g} s: hold for the operator"
            return Verdict(HOLD, (*events, SafetyEvent("hold", None, float(len(self._times)), detail)))
        return Verdict(SAFETY_STOP, tuple(events))
