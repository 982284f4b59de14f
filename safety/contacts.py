"""Self and table collisions in simulation, as safety events (issue 3, item 6).

The simulated drivers report the arm's contacts (``SimPandaDriver.arm_contacts()``) as
(arm part, other) pairs, where other is another arm part, ``"table"`` or ``"cube"``.  Contact
with the cube is the point of the task and is not an event.  On hardware there is no contact
sensor: see the package docstring for what the hardware path relies on instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from safety.types import SafetyEvent

NON_ARM = frozenset({"table", "cube", "floor", "world", "ground"})
"""Contact partners that are not parts of the arm."""
ENVIRONMENT = frozenset({"table", "floor", "world", "ground"})
"""Contact partners reported as ``table_collision``."""


def contact_events(contacts: Iterable[tuple[str, str]]) -> list[SafetyEvent]:
    """``self_collision`` events for arm-arm pairs, ``table_collision`` events for contacts with the
    table (or floor); one event per distinct pair, in the order first seen; cube contacts ignored."""
    events, seen = [], set()
    for part, other in contacts:
        part, other = str(part), str(other)
        if other in ENVIRONMENT or part in ENVIRONMENT:
            arm_part = other if part in ENVIRONMENT else part
            key = ("table_collision", arm_part)
            detail = f"{arm_part} touches the {other if part == arm_part else part}"
        elif other in NON_ARM or part in NON_ARM:
            continue
        else:
            key = ("self_collision", "-".join(sorted((part, other))))
            detail = f"{part} touches {other}"
        if key not in seen:
            seen.add(key)
            events.append(SafetyEvent(key[0], key[1], 1.0, detail))
    return events
