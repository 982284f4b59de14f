"""The watchdog: a command computed from stale information becomes a stop (issue 4).

Two checks, both on clocks the caller passes in (the module reads no clock, so it stays pure and
testable):

- the state's age, ``now - state_time``, above ``max_state_age_s``: the command was computed from
  a state the arm has since left;
- the loop's lateness, ``now - deadline``, above ``max_overrun_s``: the command arrives after the
  moment it was meant for (``deadline`` is when this cycle's command was due).

Either one gives a ``watchdog`` event, and the command must not be sent: `SafeDriver` sends the
filter's emergency stop instead (`SafetyFilter.emergency_stop`: the last command braked as fast as
the published acceleration limits allow, never a velocity step), and the next command ramps up
from it.  `guard` (a zero velocity in place of the command) remains for callers without a filter.  ``now`` and
``state_time`` must be on the same clock: in the collector, the wall-clock time at which the state
was read (the simulator's ``state.time`` is simulated time).  On the robot side of the bridge a
second watchdog stops the arm when commands stop arriving (hardware issue).
"""

from __future__ import annotations

import math

from safety.types import SafeCommand, SafetyEvent


class Watchdog:
    """Args:
    max_state_age_s: oldest state a command may be computed from, s (default 0.1 s: two
        periods at 20 Hz).
    max_overrun_s: how late past its deadline a command may still be sent, s (default 0.025 s:
        half a period at 20 Hz).
    """

    def __init__(self, max_state_age_s: float = 0.1, max_overrun_s: float = 0.025) -> None:
        if not (max_state_age_s > 0 and max_overrun_s >= 0):
            raise ValueError("max_state_age_s must be positive and max_overrun_s non-negative")
        self.max_state_age_s = float(max_state_age_s)
        self.max_overrun_s = float(max_overrun_s)

    def check(self, *, now: float, state_time: float | None = None, deadline: float | None = None) -> list[SafetyEvent]:
        """``watchdog`` events for a stale state or a missed deadline (empty if all is well)."""
        events = []
        if not math.isfinite(now):
            return [SafetyEvent("watchdog", "clock", float("nan"), "non-finite clock")]
        if state_time is not None:
            age = now - state_time
            if not math.isfinite(age) or age > self.max_state_age_s:
                events.append(SafetyEvent("watchdog", "state_age", age, f"state is {age:.4f} s old"))
        if deadline is not None:
            late = now - deadline
            if not math.isfinite(late) or late > self.max_overrun_s:
                events.append(SafetyEvent("watchdog", "deadline", late, f"loop is {late:.4f} s past its deadline"))
        return events

    def guard(
        self, command: SafeCommand, *, now: float, state_time: float | None = None, deadline: float | None = None
    ) -> tuple[SafeCommand, list[SafetyEvent]]:
        """``command`` unchanged if all is well, else a stop, with the watchdog's events."""
        events = self.check(now=now, state_time=state_time, deadline=deadline)
        return (SafeCommand.stop() if events else command), events
