"""The safety layer (issue 3): limits, the command filter, the violation monitor, the watchdog and
safe reset planning.  Pure computation on states and commands: no simulator, no transport, no
clock, and it imports nothing else of ours (DESIGN.md).

No command reaches a driver, simulated or real, except through `SafetyFilter.filter`:

    command, events = safety_filter.filter(state, action)          # SafeCommand, [SafetyEvent]
    command, more = watchdog.guard(command, now=..., state_time=..., deadline=...)
    driver.send(Command(ActionSpace(command.kind), command.values))  # always joint_velocity
    verdict = monitor.check(next_state, now=...)                    # continue / safety_stop / hold

- `SafetyLimits` (limits.py): Franka's published Panda limits with an operating margin, the
  0.5 rad/s velocity cap of seed 001, an acceleration limit, the tool-tip workspace box and the
  heights above the table; pydantic, unknown keys rejected, every bad field named.
- `SafetyFilter` (filter.py): NaN/inf -> stop; velocity cap; acceleration (rate) limit;
  predictive joint and Cartesian limits (the arm brakes and stops at a boundary instead of
  crossing it); ``tip_delta`` actions converted to joint velocities with our own kinematics, so the
  output is always a joint velocity `SafeCommand` and the guarantees hold in both action spaces.
- `ViolationMonitor` (monitor.py): a state outside the limits ends the episode (outcome
  ``safety_stop``), stops the arm and triggers the reset (seed 001: "episodes were reset ... when
  the robot violated physical safety limits"); repeated violations put the collector on hold.
- `Watchdog` (watchdog.py): a stale state or a missed loop deadline turns the command into a stop.
- `plan_reset` / `ResetController` (reset.py): a joint-space move to home within the velocity and
  acceleration limits that stays inside the box, executed through the same filter.
- `contact_events` (contacts.py): simulator contacts of the arm with itself or the table, as
  ``self_collision`` / ``table_collision`` events.
- `kinematics`: Panda forward kinematics and the tool-tip Jacobian (Franka's DH parameters).

Self-collision and table collision.  The filter carries a collision model (`collision_model`):
capsules fitted to each link's collision geometry in both simulators; every command's braking
rollout keeps every checkable pair of non-adjacent links, and every moving link and the table,
at least ``collision_margin`` apart, so contact is prevented before it happens, on hardware too.
In simulation the drivers also report contacts (``arm_contacts()``) and `contact_events` turns
them into ``self_collision`` / ``table_collision`` incidents (end of episode); on hardware
Franka's own reflexes (``setCollisionBehavior`` thresholds) remain the last line, independent of
this software.
"""

from safety.contacts import contact_events
from safety.filter import SafetyFilter
from safety.limits import SafetyLimits
from safety.monitor import Verdict, ViolationMonitor
from safety.reset import ResetController, ResetPlan, ResetPlanningError, plan_reset
from safety.types import SafeCommand, SafetyEvent
from safety.watchdog import Watchdog

__all__ = [
    "ResetController",
    "ResetPlan",
    "ResetPlanningError",
    "SafeCommand",
    "SafetyEvent",
    "SafetyFilter",
    "SafetyLimits",
    "Verdict",
    "ViolationMonitor",
    "Watchdog",
    "contact_events",
    "plan_reset",
]
