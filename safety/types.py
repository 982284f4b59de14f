"""What the safety layer hands back: the command to send and the events explaining every change.

safety/ imports nothing of ours (DESIGN.md), so it cannot build a ``robot_drivers.Command``.
`SafeCommand` has the same two fields (``kind``, ``values``) and the collector wraps it with
``Command(ActionSpace(cmd.kind), cmd.values)``.  ``kind`` is always ``"joint_velocity"``: the
filter turns ``tip_delta`` actions into joint velocities itself, so the same guarantees hold in
both action spaces and the driver always receives joint velocities from the filter (a driver
configured for ``tip_delta`` must therefore be run in ``joint_velocity`` mode under the filter).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

JOINT_VELOCITY = "joint_velocity"
"""The only kind of command the safety layer emits (matches ``ActionSpace.joint_velocity``)."""

EVENT_KINDS = (
    # interventions: the filter shaping a command, routine in every episode
    "velocity_clip",  # a joint velocity above the cap, or a tip_delta step above its range
    "acceleration_limit",  # the change from the previous command limited to acceleration * period
    "joint_limit",  # motion toward a joint limit reduced so the joint brakes before the limit
    "workspace",  # motion that would carry the tool tip out of the box reduced
    "table_clearance",  # motion that would bring the tool tip or the arm too near the table reduced
    "self_clearance",  # motion that would bring two parts of the arm too near each other reduced
    "tip_speed",  # motion reduced to the tool-tip speed limit
    # incidents: something went wrong, or nearly did
    "nonfinite",  # a NaN or inf in the action or the state: emergency stop
    "fault",  # a malformed action (wrong shape): emergency stop
    "emergency_brake",  # braking harder than the operating acceleration limit (state inconsistent)
    "watchdog",  # stale state or missed loop deadline: emergency stop
    "violation",  # a state outside the limits (monitor)
    "self_collision",  # simulator contact of the arm with itself
    "table_collision",  # simulator contact of the arm with the table
    "collision_reflex",  # the arm's own collision reflex stopped it (external force over threshold)
    "hold",  # too many violations in the window: hold for the operator
)
"""Every ``SafetyEvent.kind`` this package emits."""
INTERVENTION_KINDS = frozenset(EVENT_KINDS[:7])
"""The filter's routine shaping of commands: counted, not alarming."""
INCIDENT_KINDS = frozenset(EVENT_KINDS[7:])
"""Events an operator must see: a stop, a limit crossed, a real contact."""


@dataclasses.dataclass(frozen=True)
class SafeCommand:
    """A command that passed the safety layer: joint velocities, rad/s, float64 (7,), read-only."""

    values: np.ndarray
    kind: str = JOINT_VELOCITY

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64).reshape(-1)
        if values.shape != (7,):
            raise ValueError(f"a SafeCommand holds 7 joint velocities, got shape {np.shape(self.values)}")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)

    @classmethod
    def stop(cls) -> SafeCommand:
        """Zero joint velocity."""
        return cls(np.zeros(7))

    @property
    def is_stop(self) -> bool:
        return not np.any(self.values)


@dataclasses.dataclass(frozen=True)
class SafetyEvent:
    """One intervention of the safety layer.

    Attributes:
        kind: one of `EVENT_KINDS`.
        where: the joint index (0-6), an axis or constraint name (``"x_max"``, ``"tip"``,
            ``"wrist"``, ``"action[3]"``...) or None when it concerns the whole command.
        magnitude: how much was changed or violated, in the unit of the quantity concerned
            (rad/s for velocity changes, rad or m for positions, a fraction for scalings, a count
            for non-finite values).
        detail: free text for people reading the log.
    """

    kind: str
    where: int | str | None = None
    magnitude: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite magnitudes become None) for events.jsonl."""
        magnitude = float(self.magnitude)
        return {
            "kind": self.kind,
            "where": self.where if not isinstance(self.where, np.integer) else int(self.where),
            "magnitude": magnitude if math.isfinite(magnitude) else None,
            "detail": self.detail,
        }
