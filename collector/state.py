"""The collector's state machine: what the loop is doing, why the arm is held, what the operator
asked for.  The same words as README "Collecting data: the operator's guide".

- **Activity**, what the loop does: ``starting`` -> ``resetting`` (arm to rest, then home) ->
  ``running`` (recording an episode) -> ``training`` (explorer learns, arm still) -> ``resetting``
  -> ... -> ``stopped``.  `CollectorState.enter` refuses any other transition (a bug, not a
  request: the loop never makes one).
- **Hold**, why the arm is kept still until something changes, typed (`HoldKind`): an operator
  e-stop, a failed write (``disk``), the store's writer behind or space low (``store``, clears by
  itself), repeated safety violations (``safety``), no safe path home (``reset``), a robot that does
  not answer (``link``, clears by itself), a camera that stopped delivering (``camera``).  Every
  hold but ``store`` and ``link`` waits for the operator's ``resume``.
- **Operator requests**: ``pause``/``resume``, ``stop`` (finish the episode, then stop), ``estop``
  (stop the arm now).

The state every report shows (`CollectorState.name`) is ``held`` or ``paused`` while the arm is
kept still, ``stopping`` while a stop finishes the episode, else the activity.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable


class Activity(enum.Enum):
    """What the collector's loop is doing."""

    starting = "starting"
    resetting = "resetting"
    running = "running"
    training = "training"
    stopped = "stopped"


TRANSITIONS: dict[Activity, frozenset[Activity]] = {
    Activity.starting: frozenset({Activity.resetting, Activity.stopped}),
    Activity.resetting: frozenset({Activity.resetting, Activity.running, Activity.stopped}),
    Activity.running: frozenset({Activity.training, Activity.resetting, Activity.stopped}),
    Activity.training: frozenset({Activity.resetting, Activity.stopped}),
    Activity.stopped: frozenset(),
}
"""The activities each activity may be followed by (``resetting`` again: a reset refused, then
retried after the operator guided the arm; ``running`` -> ``resetting``: a driver fault)."""


class HoldKind(enum.Enum):
    """Why the arm is held still."""

    estop = "e-stop"
    """The operator's ``ctl estop``."""
    disk = "disk"
    """A write failed (full disk, I/O error): free space, then resume; the writes are retried."""
    store = "store"
    """The store's writer is behind or free space is low: clears by itself once it recovers."""
    safety = "safety"
    """Repeated safety violations: inspect the arm, then resume."""
    reset = "reset"
    """No safe path home could be planned: guide the arm near home by hand, then resume."""
    link = "link"
    """The robot does not answer (the bridge server down, the network cut): clears by itself once it
    answers again, then the arm is stopped, recovered and brought home before the next episode."""
    camera = "camera"
    """A camera of the cell stopped delivering (the bridge stopped the arm): reconnect it, then
    resume; a camera still lost at the next reset holds again."""


@dataclasses.dataclass(frozen=True)
class Hold:
    """A hold: its kind and the one line the operator reads (``status``'s ``hold_reason``)."""

    kind: HoldKind
    message: str

    @property
    def reason(self) -> str:
        """The line shown as ``hold_reason``: ``store:``, ``disk:``, ``link:`` and ``camera:`` holds
        start with their kind (the operator's guide documents those prefixes); the others are their
        message."""
        if self.kind in (HoldKind.store, HoldKind.disk, HoldKind.link, HoldKind.camera):
            return f"{self.kind.value}: {self.message}"
        return self.message

    @property
    def clears_by_itself(self) -> bool:
        return self.kind in (HoldKind.store, HoldKind.link)


class InvalidTransition(RuntimeError):
    """The loop asked for a transition `TRANSITIONS` does not allow (a bug)."""


class CollectorState:
    """Activity, hold, pause and the operator's stop requests, changed only through its methods."""

    def __init__(self) -> None:
        self.activity = Activity.starting
        self.hold: Hold | None = None
        self.paused = False
        self.stop_requested = False
        """``stop`` (or SIGINT / SIGTERM): finish the episode, leave the arm at home, exit."""
        self.estop_requested = False
        """``estop`` (or a second SIGINT) not yet carried out by the loop."""
        self.estopped = False
        """The arm was e-stopped and not resumed since: it is not moved home at the end."""
        self.needs_reset = True
        """The arm must be brought to rest and home before the next episode."""

    # ---- what reports show ---------------------------------------------------------------
    @property
    def name(self) -> str:
        """``starting``, ``resetting``, ``running``, ``training``, ``stopped``, or ``held`` /
        ``paused`` while the arm is kept still, ``stopping`` while a stop finishes the episode."""
        if self.activity in (Activity.starting, Activity.stopped):
            return self.activity.value
        if self.hold is not None:
            return "held"
        if self.paused:
            return "paused"
        if self.stop_requested and self.activity is Activity.running:
            return "stopping"
        return self.activity.value

    @property
    def hold_reason(self) -> str | None:
        return None if self.hold is None else self.hold.reason

    @property
    def keeps_arm_still(self) -> bool:
        """Paused or held: the loop waits with the arm stopped."""
        return self.paused or self.hold is not None

    # ---- transitions -----------------------------------------------------------------------
    def enter(self, activity: Activity) -> None:
        if activity not in TRANSITIONS[self.activity]:
            raise InvalidTransition(f"collector: {self.activity.value} cannot be followed by {activity.value}")
        self.activity = activity

    def hold_for(self, kind: HoldKind, message: str) -> Hold:
        """Hold the arm (a later hold replaces an earlier one: the operator sees the newest)."""
        self.hold = Hold(kind, message)
        return self.hold

    def clear_hold_if_recovered(self, recovered: Callable[[], bool]) -> None:
        """Clear a hold that clears by itself (``store``, ``link``) once ``recovered()`` (asked only then)."""
        if self.hold is not None and self.hold.clears_by_itself and recovered():
            self.hold = None

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """The operator's ``resume``: unpause, clear any hold and the e-stop."""
        self.paused = False
        self.hold = None
        self.estopped = False

    def request_stop(self) -> None:
        self.stop_requested = True

    def request_estop(self) -> None:
        self.estop_requested = True

    def may_move_home(self) -> bool:
        """Whether the arm may be moved home when the session ends: not after an e-stop (it stays
        where it stopped), and not while held for safety violations or for a reset that found no
        safe path (the operator was asked to inspect or guide the arm first)."""
        if self.estopped or self.estop_requested:
            return False
        return self.hold is None or self.hold.kind not in (HoldKind.safety, HoldKind.reset)

    def take_estop_request(self) -> bool:
        """Whether an e-stop was requested since the last call (the episode loop ends the episode)."""
        requested, self.estop_requested = self.estop_requested, False
        return requested

    def estop_done(self) -> None:
        """The arm was stopped for an e-stop.  An operator e-stop holds until ``resume``; one during
        a stop (a second Ctrl-C) ends the session where the arm stopped."""
        self.estopped = True
        if not self.stop_requested:
            self.paused = True
            self.hold_for(HoldKind.estop, "e-stop: send resume to continue")
