"""Adversarial soak of the safety filter in both simulators (issue 3, "Must be true"), resumable.

Adversarial actions (uniform random at ten times the action range, plus bursts of NaN) pass
through `SafetyFilter` into a simulated Panda (MuJoCo via robosuite, and PyBullet), in both action
spaces.  Everything is measured on the simulator's own state, per (simulator, action space):

- **engine contacts**, self and table (`safety.contact_events` of ``driver.arm_contacts()``), read
  after every physics substep; counted once per control step and touching pair; the first few
  kept with their step, substep and joint angles;
- **monitor violations**: control steps whose state `ViolationMonitor.violations` rejects, and the
  closest approach to each operating limit (joints, tool-tip box, heights, capsule clearances less
  ``collision_margin``; negative: outside);
- **Franka's published limits**, after every physics substep: joint positions outside
  ``FRANKA_Q_MIN``/``FRANKA_Q_MAX``, speeds above ``FRANKA_DQ_MAX``, accelerations
  (|change of the measured joint velocity| / physics timestep) above ``FRANKA_DDQ_MAX``, the
  latter split into free space and substeps in contact (any arm contact, the cube's included,
  reported after that substep or the one before: MuJoCo reports after a step the contacts it
  solved in it, PyBullet those at the new poses; contact impulses are not the servo's doing).
  Free-space accelerations count as violations above ``1 + ACCELERATION_TOLERANCE`` times the
  published limit (the engines' residual, tests/sim/test_servo_limits.py; the count strictly
  above the limit is kept too);
- **capsule clearances** (`safety.collision_model.clearances` of the measured joint angles, every
  substep): the closest link-link pair and link-table capsule, where and when;
- **filter time** per `SafetyFilter.filter` call (mean, p99 from a log histogram, max);
- **collision reflex stops**: commands the simulated arm's collision reflex faulted
  (robot_drivers/collision_reflex.py: a contact force over Franka's default thresholds, usually
  the fingers striking the cube).  As the collector does, the soak lets the arm brake to rest,
  then resets it and goes on with the episode's next step; the first few are kept with their step.

The run is resumable.  Work proceeds in whole episodes of `EPISODE_STEPS` steps, each starting
with a reset and seeded by (seed, simulator, action space, episode index), so episode k is the same
whether it runs in one process or after any number of restarts; the accumulated statistics of the
finished episodes are saved (atomically) to the state file after every chunk of episodes and on
Ctrl-C / SIGTERM (the unfinished episode is dropped and rerun).  Rerun the same command to go on;
``--steps`` is the target per (simulator, action space).  The state records the seed, the limits
and a fingerprint of safety/, sim/ and robot_drivers/; a state measured with other code or
settings is refused (``--fresh`` starts over, ``--accept-code-change`` goes on and notes it).

The run for the README (500,000 steps per action space: 1,000,000 per simulator), in the
background, rerun after an interruption until it prints the table:

    .venv/bin/python benchmarks/safety_soak.py --steps 500000 > benchmarks/results/safety_soak.log 2>&1 &

The table of what the state file holds so far, without running anything (``--json -``: all the
numbers as JSON):

    .venv/bin/python benchmarks/safety_soak.py --report

Exit status: 0 done; 2 the state file cannot be used; 3 another soak holds the state file;
128 + signal number after an interruption (state saved).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import signal
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

from safety import SafetyFilter, SafetyLimits, ViolationMonitor, collision_model, contact_events, kinematics  # noqa: E402
from safety.filter import CONSTRAINT_NAMES, cartesian_margins  # noqa: E402
from safety.limits import FRANKA_DDQ_MAX, FRANKA_DQ_MAX, FRANKA_Q_MAX, FRANKA_Q_MIN  # noqa: E402

EPISODE_STEPS = 1000
"""Steps between resets (seed 001's episode length)."""
NAN_BURST_PROBABILITY = 0.005
"""Chance per step that a burst of NaN actions (1 to 10 steps) starts."""
ACTION_SCALE = 10.0
"""Actions are uniform in +-ACTION_SCALE times the action range (velocity cap, tip_delta_max)."""
ACCELERATION_TOLERANCE = 0.03
"""Relative excess of a free-space joint acceleration over Franka's published limit counted as a
violation: the engines' residual (tests/sim/test_servo_limits.py FREE_SPACE_TOLERANCE: PyBullet
up to 0.9 %, MuJoCo 1.8 %)."""
CHUNK_EPISODES = 10
"""Episodes between two saves of the state (and progress lines)."""
EXAMPLES = 10
"""Contacts, violations and free-space acceleration excesses kept in full for diagnosis."""
STATE_VERSION = 1
"""Version of what the state holds and how it is measured; a state of another version is refused."""
DEFAULT_STATE = ROOT / "benchmarks" / "results" / "safety_soak_state.json"
BACKENDS = ("robosuite", "pybullet")
ACTION_SPACES = ("joint_velocity", "tip_delta")
FINGERPRINTED = ("safety", "sim", "robot_drivers")
"""Packages whose code decides the results: a state measured with other code is refused."""

Q_MIN, Q_MAX = np.array(FRANKA_Q_MIN), np.array(FRANKA_Q_MAX)
DQ_MAX, DDQ_MAX = np.array(FRANKA_DQ_MAX), np.array(FRANKA_DDQ_MAX)
LIMIT_NAMES = [f"q{i + 1}_min" for i in range(7)] + [f"q{i + 1}_max" for i in range(7)] + list(CONSTRAINT_NAMES)
"""Operating limits whose closest approach is reported (`ViolationMonitor`'s, from each state)."""
SELF_PAIRS = collision_model.SELF_COLLISION_PAIR_NAMES
TABLE_INDEX = np.flatnonzero(collision_model.TABLE_CHECKED)
TABLE_CAPSULES = tuple(collision_model.CAPSULE_NAMES[k] for k in TABLE_INDEX)
HIST_BINS_PER_DECADE = 100
HIST_LOG10_MIN = -7.0
"""Filter times are histogrammed in log bins from 0.1 us (2.3 % wide): p99 to within a bin."""


# ---- statistics --------------------------------------------------------------------------------
def _first(examples: list, more: list) -> list:
    return (examples + more)[:EXAMPLES] if len(examples) < EXAMPLES else examples


class Tally:
    """What the soak measures over some episodes of one (simulator, action space); `merge` adds the
    next episodes' (the result does not depend on how the episodes were grouped), `to_dict` /
    `from_dict` go to and from JSON exactly."""

    def __init__(self) -> None:
        self.episodes = self.steps = self.substeps = 0
        self.elapsed_s = 0.0
        self.closest = np.full(len(LIMIT_NAMES), np.inf)
        self.monitor_violations = 0
        self.violation_examples: list[dict] = []
        self.contacts = {"self_collision": 0, "table_collision": 0}
        self.contact_pairs: dict[str, int] = {}
        self.contact_examples: list[dict] = []
        self.substeps_in_contact = 0
        self.reflexes = 0
        self.reflex_examples: list[dict] = []
        self.position_violations = self.velocity_violations = 0
        self.acc_free_violations = self.acc_free_over_published = self.acc_contact_over_published = 0
        self.acc_examples: list[dict] = []
        self.q_margin = np.full(7, np.inf)
        self.speed_ratio = np.zeros(7)
        self.acc_ratio_free = np.zeros(7)
        self.acc_ratio_contact = np.zeros(7)
        self.self_clearance = np.full(len(SELF_PAIRS), np.inf)
        self.table_clearance = np.full(len(TABLE_CAPSULES), np.inf)
        self.closest_self: dict | None = None
        self.closest_table: dict | None = None
        self.filter_calls = 0
        self.filter_total_s = self.filter_max_s = 0.0
        self.filter_hist: dict[int, int] = {}

    _ARRAYS = (
        "closest",
        "q_margin",
        "speed_ratio",
        "acc_ratio_free",
        "acc_ratio_contact",
        "self_clearance",
        "table_clearance",
    )
    _MIN_ARRAYS = ("closest", "q_margin", "self_clearance", "table_clearance")
    _COUNTS = (
        "episodes",
        "steps",
        "substeps",
        "monitor_violations",
        "substeps_in_contact",
        "reflexes",
        "position_violations",
        "velocity_violations",
        "acc_free_violations",
        "acc_free_over_published",
        "acc_contact_over_published",
        "filter_calls",
    )
    _EXAMPLES = ("violation_examples", "contact_examples", "acc_examples", "reflex_examples")

    def merge(self, other: Tally) -> None:
        for name in self._COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.elapsed_s += other.elapsed_s
        self.filter_total_s += other.filter_total_s
        self.filter_max_s = max(self.filter_max_s, other.filter_max_s)
        for name in self._ARRAYS:
            combine = np.minimum if name in self._MIN_ARRAYS else np.maximum
            setattr(self, name, combine(getattr(self, name), getattr(other, name)))
        for name in self._EXAMPLES:
            setattr(self, name, _first(getattr(self, name), getattr(other, name)))
        for kind, count in other.contacts.items():
            self.contacts[kind] += count
        for table, mine in ((other.contact_pairs, self.contact_pairs), (other.filter_hist, self.filter_hist)):
            for key, count in table.items():
                mine[key] = mine.get(key, 0) + count
        for name in ("closest_self", "closest_table"):
            theirs, ours = getattr(other, name), getattr(self, name)
            if theirs is not None and (ours is None or theirs["distance_m"] < ours["distance_m"]):
                setattr(self, name, theirs)

    def to_dict(self) -> dict:
        out = {}
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif name == "filter_hist":
                value = {str(k): v for k, v in sorted(value.items())}
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Tally:
        tally = cls()
        for name, value in data.items():
            if not hasattr(tally, name):
                raise ValueError(f"unknown statistic {name!r}")
            if name in cls._ARRAYS:
                value = np.array(value, dtype=np.float64)
            elif name == "filter_hist":
                value = {int(k): v for k, v in value.items()}
            setattr(tally, name, value)
        return tally

    def filter_p99_s(self) -> float:
        """99th percentile of the filter's time per call, s (upper edge of its histogram bin)."""
        if not self.filter_calls:
            return float("nan")
        needed, seen = math.ceil(0.99 * self.filter_calls), 0
        for index in sorted(self.filter_hist):
            seen += self.filter_hist[index]
            if seen >= needed:
                return min(10.0 ** (HIST_LOG10_MIN + (index + 1) / HIST_BINS_PER_DECADE), self.filter_max_s)
        return self.filter_max_s


# ---- the soak ---------------------------------------------------------------------------------
def episode_rng(seed: int, backend: str, action_space: str, episode: int) -> np.random.Generator:
    """The adversary's generator for one episode: the same in every process, whatever ran before."""
    return np.random.default_rng([seed, zlib.crc32(backend.encode()), zlib.crc32(action_space.encode()), episode])


class _Substeps:
    """Stands in for the driver's ``_step_physics`` (an instance attribute over the method): steps
    the physics one substep at a time (the same physics as n at once) and records, after each, the
    engine's joint state and the arm's contacts."""

    def __init__(self, driver) -> None:
        self.driver = driver
        self.step_physics = driver._step_physics
        self.q: list[np.ndarray] = []
        self.dq: list[np.ndarray] = []
        self.contacts: list[list[tuple[str, str]]] = []

    def __call__(self, n: int) -> None:
        driver = self.driver
        for _ in range(n):
            self.step_physics(1)
            q, dq = driver._joint_state()
            self.q.append(q)
            self.dq.append(dq)
            self.contacts.append(driver.arm_contacts())

    def take(self) -> tuple[np.ndarray, np.ndarray, list[list[tuple[str, str]]]]:
        q, dq, contacts = np.array(self.q), np.array(self.dq), self.contacts
        self.q, self.dq, self.contacts = [], [], []
        return q, dq, contacts


class Soak:
    """One simulated Panda behind a `SafetyFilter`, fed adversarial actions episode by episode
    (`episode`); a context manager (closes the simulator)."""

    def __init__(self, backend: str, action_space: str, seed: int = 0, limits: SafetyLimits | None = None) -> None:
        from robot_drivers import create_driver  # the simulators' imports take seconds: only when soaking
        from sim.config import SimConfig

        self.backend, self.action_space, self.seed = backend, action_space, seed
        self.limits = limits if limits is not None else SafetyLimits()
        self.driver = create_driver(backend, SimConfig(backend=backend, cameras=(), seed=seed))
        self.driver.connect()
        self.filter = SafetyFilter(self.limits, self.driver.control_rate_hz, action_space)
        self.monitor = ViolationMonitor(self.limits, max_violations=10**9)
        self.scale = ACTION_SCALE * (
            self.limits.velocity_cap if action_space == "joint_velocity" else self.limits.tip_delta_max
        )
        self.recorder = _Substeps(self.driver)
        self.driver._step_physics = self.recorder
        self.h = self.driver.physics_timestep_s

    def __enter__(self) -> Soak:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            del self.driver._step_physics
        self.driver.close()

    def episode(self, index: int, steps: int = EPISODE_STEPS, stop: Callable[[], bool] | None = None) -> Tally | None:
        """Episode ``index``: a reset, then ``steps`` adversarial steps; its `Tally`, or None if
        ``stop()`` turned true before it ended."""
        from robot_drivers import ActionSpace, Command, DriverFault, FaultReason

        driver, limits, tally = self.driver, self.limits, Tally()
        rng = episode_rng(self.seed, self.backend, self.action_space, index)
        filter_call = self.filter.filter
        start = time.perf_counter()
        state = driver.reset(None)
        self.filter.reset()
        self.recorder.take()
        prev_dq = driver._joint_state()[1]
        prev_touching = bool(driver.arm_contacts())
        nan_left = 0
        for step in range(steps):
            if stop is not None and stop():
                return None
            if nan_left == 0 and rng.random() < NAN_BURST_PROBABILITY:
                nan_left = int(rng.integers(1, 11))
            action = rng.uniform(-self.scale, self.scale, self.filter.action_dim)
            if nan_left:
                action[rng.integers(0, self.filter.action_dim)] = np.nan
                nan_left -= 1
            t0 = time.perf_counter()
            command, _ = filter_call(state, action)
            dt = time.perf_counter() - t0
            tally.filter_calls += 1
            tally.filter_total_s += dt
            tally.filter_max_s = max(tally.filter_max_s, dt)
            b = int((math.log10(max(dt, 1e-12)) - HIST_LOG10_MIN) * HIST_BINS_PER_DECADE)
            b = min(max(b, 0), 10 * HIST_BINS_PER_DECADE)
            tally.filter_hist[b] = tally.filter_hist.get(b, 0) + 1
            reflex = None
            try:
                driver.send(Command(ActionSpace(command.kind), command.values))
            except DriverFault as fault:
                if fault.reason is not FaultReason.collision_reflex:
                    raise
                reflex = fault.message  # the arm stopped itself: brake to rest, then reset (as the collector)
                driver.stop()
            state = driver.read_state()
            # The monitor's view: each control step's state against the operating limits.
            q, tip = state.q, state.tip_pos
            cartesian = cartesian_margins(limits, kinematics.frames(q), q=q)
            cartesian[:6] = np.ravel(np.column_stack([tip - limits.tip_lower, limits.tip_upper - tip]))
            np.minimum(
                tally.closest, np.concatenate([q - limits.q_lower, limits.q_upper - q, cartesian]), out=tally.closest
            )
            events = self.monitor.violations(state)
            if events:
                tally.monitor_violations += 1
                if len(tally.violation_examples) < EXAMPLES:
                    tally.violation_examples.append(
                        {
                            "episode": index,
                            "step": step,
                            "events": [f"{e.where}: {e.detail}" for e in events],
                            "q": q.tolist(),
                        }
                    )
            prev_dq, prev_touching = self._substeps(tally, index, step, prev_dq, prev_touching)
            tally.steps += 1
            if reflex is not None:
                tally.reflexes += 1
                if len(tally.reflex_examples) < EXAMPLES:
                    tally.reflex_examples.append({"episode": index, "step": step, "reason": reflex, "q": q.tolist()})
                state = driver.reset(None)
                self.filter.reset()
                self.recorder.take()
                prev_dq = driver._joint_state()[1]
                prev_touching = bool(driver.arm_contacts())
        tally.episodes = 1
        tally.elapsed_s = time.perf_counter() - start
        return tally

    def _substeps(self, tally: Tally, episode: int, step: int, prev_dq: np.ndarray, prev_touching: bool) -> tuple:
        """Measure one control step's physics substeps against the published limits, the capsule
        clearances and the engine's contacts; returns the last substep's (dq, touching)."""
        q, dq, contacts = self.recorder.take()
        n = len(q)
        tally.substeps += n
        touching = np.array([bool(c) for c in contacts])
        in_contact = touching | np.concatenate([[prev_touching], touching[:-1]])
        tally.substeps_in_contact += int(in_contact.sum())
        # Positions and speeds.
        margin = np.minimum(q - Q_MIN, Q_MAX - q)
        np.minimum(tally.q_margin, margin.min(axis=0), out=tally.q_margin)
        tally.position_violations += int((margin < 0.0).any(axis=1).sum())
        speed = np.abs(dq) / DQ_MAX
        np.maximum(tally.speed_ratio, speed.max(axis=0), out=tally.speed_ratio)
        tally.velocity_violations += int((speed > 1.0).any(axis=1).sum())
        # Accelerations, free space and in contact.
        acc = np.abs(np.diff(np.vstack([prev_dq, dq]), axis=0)) / (self.h * DDQ_MAX)
        worst = acc.max(axis=1)
        free = ~in_contact
        if free.any():
            np.maximum(tally.acc_ratio_free, acc[free].max(axis=0), out=tally.acc_ratio_free)
            tally.acc_free_over_published += int((worst[free] > 1.0).sum())
            over = free & (worst > 1.0 + ACCELERATION_TOLERANCE)
            if over.any():
                tally.acc_free_violations += int(over.sum())
                for k in np.flatnonzero(over)[: max(0, EXAMPLES - len(tally.acc_examples))]:
                    tally.acc_examples.append(
                        {
                            "episode": episode,
                            "step": step,
                            "substep": int(k),
                            "ratio": acc[k].tolist(),
                            "q": q[k].tolist(),
                        }
                    )
        if in_contact.any():
            np.maximum(tally.acc_ratio_contact, acc[in_contact].max(axis=0), out=tally.acc_ratio_contact)
            tally.acc_contact_over_published += int((worst[in_contact] > 1.0).sum())
        # Capsule clearances of the measured joint angles.
        self_c, table_c = collision_model.clearances(q, self.limits.table_height)
        table_c = table_c[:, TABLE_INDEX]
        for name, values, store, names in (
            ("closest_self", self_c, tally.self_clearance, SELF_PAIRS),
            ("closest_table", table_c, tally.table_clearance, TABLE_CAPSULES),
        ):
            np.minimum(store, values.min(axis=0), out=store)
            k, j = np.unravel_index(int(np.argmin(values)), values.shape)
            best = getattr(tally, name)
            if best is None or values[k, j] < best["distance_m"]:
                setattr(
                    tally,
                    name,
                    {
                        "where": names[j],
                        "distance_m": float(values[k, j]),
                        "episode": episode,
                        "step": step,
                        "substep": int(k),
                        "q": q[k].tolist(),
                    },
                )
        # Engine contacts of the arm with itself and the table: once per control step and pair.
        if touching.any():
            seen: set[tuple[str, str]] = set()
            for k in np.flatnonzero(touching):
                for event in contact_events(contacts[k]):
                    key = (event.kind, str(event.where))
                    if key in seen:
                        continue
                    seen.add(key)
                    tally.contacts[event.kind] += 1
                    tally.contact_pairs[key[1]] = tally.contact_pairs.get(key[1], 0) + 1
                    if len(tally.contact_examples) < EXAMPLES:
                        tally.contact_examples.append(
                            {
                                "kind": event.kind,
                                "pair": key[1],
                                "detail": event.detail,
                                "episode": episode,
                                "step": step,
                                "substep": int(k),
                                "q": q[k].tolist(),
                            }
                        )
        return dq[-1], bool(touching[-1])


def soak(backend: str, action_space: str, steps: int, seed: int = 0, limits: SafetyLimits | None = None) -> dict:
    """Run ``steps`` adversarial steps (episodes 0, 1, ... of `EPISODE_STEPS`, the last one cut
    short if needed) in one process; returns `summary` of what was measured."""
    total = Tally()
    with Soak(backend, action_space, seed, limits) as run:
        for index in range(math.ceil(steps / EPISODE_STEPS)):
            total.merge(run.episode(index, min(EPISODE_STEPS, steps - index * EPISODE_STEPS)))
    return summary(backend, action_space, total)


# ---- reporting -------------------------------------------------------------------------------
def summary(backend: str, action_space: str, tally: Tally) -> dict:
    """What a `Tally` says, in the units people read (JSON-able).  Keys used by the tests:
    ``closest`` (closest approach to each operating limit, by name, rad or m), ``violations``
    (monitor), ``collisions`` (engine contacts by kind), ``published`` (published-limit violations
    by kind)."""
    ms = 1000.0 * tally.elapsed_s / tally.steps if tally.steps else float("nan")
    return {
        "backend": backend,
        "action_space": action_space,
        "steps": tally.steps,
        "episodes": tally.episodes,
        "substeps": tally.substeps,
        "ms_per_step": ms,
        "closest": dict(zip(LIMIT_NAMES, tally.closest.tolist(), strict=True)),
        "violations": tally.monitor_violations,
        "violation_examples": tally.violation_examples,
        "collisions": dict(tally.contacts),
        "contact_pairs": dict(tally.contact_pairs),
        "contact_examples": tally.contact_examples,
        "substeps_in_contact": tally.substeps_in_contact,
        "reflexes": tally.reflexes,
        "reflex_examples": tally.reflex_examples,
        "published": {
            "position": tally.position_violations,
            "velocity": tally.velocity_violations,
            "acceleration_free": tally.acc_free_violations,
            "acceleration_free_over_published": tally.acc_free_over_published,
            "acceleration_contact_over_published": tally.acc_contact_over_published,
            "acceleration_tolerance": ACCELERATION_TOLERANCE,
        },
        "published_position_margin_rad": tally.q_margin.tolist(),
        "speed_over_published": tally.speed_ratio.tolist(),
        "acceleration_over_published_free": tally.acc_ratio_free.tolist(),
        "acceleration_over_published_contact": tally.acc_ratio_contact.tolist(),
        "acceleration_examples": tally.acc_examples,
        "self_clearance_m": dict(zip(SELF_PAIRS, tally.self_clearance.tolist(), strict=True)),
        "table_clearance_m": dict(zip(TABLE_CAPSULES, tally.table_clearance.tolist(), strict=True)),
        "closest_self": tally.closest_self,
        "closest_table": tally.closest_table,
        "filter_ms": {
            "calls": tally.filter_calls,
            "mean": 1000.0 * tally.filter_total_s / tally.filter_calls if tally.filter_calls else float("nan"),
            "p99": 1000.0 * tally.filter_p99_s(),
            "max": 1000.0 * tally.filter_max_s,
        },
    }


def report(result: dict) -> str:
    """A few lines on one `summary` (the test prints it)."""
    closest = result["closest"]
    joint = min(v for k, v in closest.items() if k.startswith("q"))
    cartesian = min((v, k) for k, v in closest.items() if not k.startswith("q"))
    published, filter_ms = result["published"], result["filter_ms"]
    pair, table = result["closest_self"], result["closest_table"]
    acc_free, acc_contact = result["acceleration_over_published_free"], result["acceleration_over_published_contact"]
    return "\n".join(
        [
            f"{result['backend']:>9} {result['action_space']:>14}: {result['steps']} steps, "
            f"{result['ms_per_step']:.2f} ms/step, monitor violations {result['violations']}, "
            f"engine contacts {result['collisions']} (substeps touching anything, cube included: "
            f"{result['substeps_in_contact']}), collision reflex stops {result['reflexes']}",
            f"    published limits (substeps over): position {published['position']}, velocity "
            f"{published['velocity']}, acceleration free space {published['acceleration_free']} "
            f"(> {1 + ACCELERATION_TOLERANCE:g}x; > 1x: {published['acceleration_free_over_published']}), "
            f"in contact > 1x {published['acceleration_contact_over_published']}",
            f"    max |ddq| / published, free space {np.round(acc_free, 3).tolist()}, "
            f"in contact {np.round(acc_contact, 2).tolist()}; "
            f"max |dq| / published {max(result['speed_over_published']):.3f}; "
            f"closest to a published joint limit {min(result['published_position_margin_rad']):+.4f} rad",
            f"    closest approach to the operating limits (negative = outside): joints {joint:+.5f} rad, "
            f"Cartesian {cartesian[0]:+.4f} m ({cartesian[1]})",
            f"    closest capsules: link-link {pair['where']} {1000 * pair['distance_m']:.1f} mm, "
            f"link-table {table['where']} {1000 * table['distance_m']:.1f} mm; filter "
            f"{filter_ms['mean']:.3f} ms mean, {filter_ms['p99']:.3f} ms p99, {filter_ms['max']:.2f} ms max",
        ]
    )


TABLE_HEADER = (
    "| simulator | action space | steps | self contacts | table contacts | reflex stops | monitor violations "
    f"| published-limit violations: pos / vel / acc free (> {1 + ACCELERATION_TOLERANCE:g}x) / acc in contact (> 1x) "
    "| closest link-link | closest link-table | max joint acc / published: free / contact "
    "| filter ms mean / p99 |\n"
    "|---|---|--:|--:|--:|--:|--:|--:|---|---|--:|--:|"
)
SIMULATOR_NAMES = {"robosuite": "MuJoCo (robosuite)", "pybullet": "PyBullet"}


def table_row(result: dict) -> str:
    published, filter_ms = result["published"], result["filter_ms"]
    pair, table = result["closest_self"], result["closest_table"]
    acc_free, acc_contact = result["acceleration_over_published_free"], result["acceleration_over_published_contact"]
    return (
        f"| {SIMULATOR_NAMES.get(result['backend'], result['backend'])} | {result['action_space']} "
        f"| {result['steps']:,} | {result['collisions']['self_collision']} | {result['collisions']['table_collision']} "
        f"| {result['reflexes']} | {result['violations']} | {published['position']} / {published['velocity']} / "
        f"{published['acceleration_free']} / {published['acceleration_contact_over_published']} "
        f"| {pair['where']} {1000 * pair['distance_m']:.1f} mm | {table['where']} {1000 * table['distance_m']:.1f} mm "
        f"| {max(acc_free):.3f} / {max(acc_contact):.2f} "
        f"| {filter_ms['mean']:.3f} / {filter_ms['p99']:.3f} |"
    )


def table(results: list[dict]) -> str:
    """The markdown table for the README: one row per simulator and action space."""
    return "\n".join([TABLE_HEADER, *(table_row(r) for r in results if r["steps"])])


# ---- the resumable run ---------------------------------------------------------------------------
class StateError(Exception):
    """The state file cannot be used for this run (message says why and what to do)."""


def code_fingerprint() -> str:
    """SHA-256 of the Python files of `FINGERPRINTED` (path and contents)."""
    digest = hashlib.sha256()
    for package in FINGERPRINTED:
        for path in sorted((ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _same_settings(stored: dict, wanted: dict) -> bool:
    """Whether a state's settings are ``wanted``: a limits field added to `SafetyLimits` after the
    state was written counts as the same when it has its default (what ran before it existed).
    ``stored`` is brought up to date when they are the same."""
    if {k: v for k, v in stored.items() if k != "limits"} != {k: v for k, v in wanted.items() if k != "limits"}:
        return False
    old, new = stored.get("limits", {}), wanted["limits"]
    defaults = SafetyLimits().model_dump(mode="json")
    if any(key not in new or old[key] != new[key] for key in old):
        return False
    if any(new[key] != defaults.get(key) for key in new if key not in old):
        return False
    stored["limits"] = new
    return True


def settings(seed: int, limits: SafetyLimits, episode_steps: int) -> dict:
    """What must match for a state to be continued (besides the code)."""
    return json.loads(
        json.dumps(
            {
                "version": STATE_VERSION,
                "seed": seed,
                "episode_steps": episode_steps,
                "nan_burst_probability": NAN_BURST_PROBABILITY,
                "action_scale": ACTION_SCALE,
                "acceleration_tolerance": ACCELERATION_TOLERANCE,
                "limits": limits.model_dump(mode="json"),
            }
        )
    )


def load_state(path: Path) -> dict | None:
    """The state saved at ``path``, None if there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        state = json.loads(text)
        runs, version = state["runs"], state["settings"]["version"]
    except (ValueError, KeyError, TypeError) as error:
        raise StateError(f"{path}: not a safety soak state ({error}); move it away or use --fresh") from None
    if version != STATE_VERSION:
        raise StateError(f"{path}: state version {version}, this soak writes {STATE_VERSION}; use --fresh")
    for key, run in runs.items():
        try:
            run["tally"] = Tally.from_dict(run["tally"])
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise StateError(f"{path}: run {key} is damaged ({error}); use --fresh") from None
    return state


def save_state(path: Path, state: dict) -> None:
    """Write the state atomically: a ``.partial`` file beside it, flushed, then renamed over it."""
    data = dict(state, runs={k: dict(v, tally=v["tally"].to_dict()) for k, v in state["runs"].items()})
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the state file for the run (two soaks on one state would
    overwrite each other's work)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(f"another safety soak is running on {path}") from None
        yield


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def run(
    state_path: Path,
    steps: int,
    backends: tuple[str, ...] = BACKENDS,
    action_spaces: tuple[str, ...] = ACTION_SPACES,
    seed: int = 0,
    *,
    limits: SafetyLimits | None = None,
    episode_steps: int = EPISODE_STEPS,
    chunk_episodes: int = CHUNK_EPISODES,
    fresh: bool = False,
    accept_code_change: bool = False,
    restart: bool = False,
    stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> tuple[dict, bool]:
    """Bring every (backend, action space) of the state at ``state_path`` to ``steps`` steps
    (rounded up to whole episodes), saving after every ``chunk_episodes`` episodes and when
    ``stop()`` turns true (then the unfinished episode is dropped).  ``restart`` measures the
    selected runs again from zero with the current code (their old results are kept in the state
    under ``superseded``; the other runs are kept as they are).  Returns (state, finished)."""
    limits = limits if limits is not None else SafetyLimits()
    wanted = settings(seed, limits, episode_steps)
    fingerprint = code_fingerprint()
    state = None if fresh else load_state(state_path)
    if state is None:
        if fresh and state_path.exists():
            os.replace(state_path, state_path.with_name(state_path.name + ".old"))
            log(f"--fresh: the previous state is kept as {state_path.name}.old")
        state = {"settings": wanted, "code": [fingerprint], "target_steps": 0, "runs": {}}
    elif not _same_settings(state["settings"], wanted):
        different = sorted(k for k in wanted if state["settings"].get(k) != wanted.get(k))
        raise StateError(f"{state_path} was measured with other settings ({', '.join(different)}); use --fresh")
    elif state["code"][-1] != fingerprint:
        if not (accept_code_change or restart):
            raise StateError(
                f"{state_path} was measured with other code in {', '.join(FINGERPRINTED)}/ (changed since); "
                "--fresh starts over, --accept-code-change goes on (noted in the state)"
            )
        state["code"].append(fingerprint)
        log(f"code changed since the last chunk: going on (code versions in the state: {len(state['code'])})")
    target = math.ceil(steps / episode_steps)
    state["target_steps"] = target * episode_steps
    keys = [(b, a) for b in backends for a in action_spaces]
    for backend, action_space in keys:
        key = f"{backend}/{action_space}"
        if restart and key in state["runs"]:
            old = state["runs"].pop(key)
            state.setdefault("superseded", []).append(dict(old, run=key, tally=old["tally"].to_dict()))
            log(f"{key}: measuring again from zero (the old result is kept under 'superseded')")
        state["runs"].setdefault(key, {"tally": Tally(), "code_version": len(state["code"]) - 1})

    def remaining(key: str) -> int:
        return max(0, target - state["runs"][key]["tally"].episodes) * episode_steps

    for backend, action_space in keys:
        key = f"{backend}/{action_space}"
        total: Tally = state["runs"][key]["tally"]
        if total.episodes >= target or stop():
            continue
        log(f"{key}: {total.steps:,} steps done, {remaining(key):,} to go (episodes {total.episodes}..{target - 1})")
        with Soak(backend, action_space, seed, limits) as soaker:
            chunk_start, chunk_steps = time.perf_counter(), 0
            try:
                while total.episodes < target:
                    tally = soaker.episode(total.episodes, episode_steps, stop)
                    if tally is None:
                        break
                    total.merge(tally)
                    chunk_steps += tally.steps
                    if total.episodes % chunk_episodes == 0 or total.episodes == target:
                        save_state(state_path, state)
                        rate = chunk_steps / (time.perf_counter() - chunk_start)
                        left_all = sum(remaining(f"{b}/{a}") for b, a in keys)
                        contacts, p = total.contacts, summary(backend, action_space, total)["published"]
                        log(
                            f"{key}: {total.steps:,}/{target * episode_steps:,} steps, {rate:.0f} steps/s "
                            f"({1000 / rate:.2f} ms/step), ETA {_duration(remaining(key) / rate)} "
                            f"(all runs ~{_duration(left_all / rate)}); contacts self {contacts['self_collision']} "
                            f"table {contacts['table_collision']}, monitor violations {total.monitor_violations}, "
                            f"published pos/vel/acc {p['position']}/{p['velocity']}/{p['acceleration_free']}"
                        )
                        chunk_start, chunk_steps = time.perf_counter(), 0
            finally:  # every finished episode is kept, whatever ended the run
                save_state(state_path, state)
        if stop():
            break
    finished = all(state["runs"][f"{b}/{a}"]["tally"].episodes >= target for b, a in keys)
    return state, finished


def results(state: dict) -> list[dict]:
    """`summary` of every run in the state, in table order."""
    order = {b: i for i, b in enumerate(BACKENDS)}, {a: i for i, a in enumerate(ACTION_SPACES)}
    keys = sorted(state["runs"], key=lambda k: (order[0].get(k.split("/")[0], 9), order[1].get(k.split("/")[1], 9), k))
    return [summary(*key.split("/"), state["runs"][key]["tally"]) for key in keys if state["runs"][key]["tally"].steps]


def _dump_json(out: list[dict], destination: str) -> None:
    text = json.dumps(out, indent=1)
    if destination == "-":
        print(text)
    else:
        Path(destination).write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500_000, help="target steps per simulator and action space")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--action-spaces", nargs="+", default=list(ACTION_SPACES), choices=ACTION_SPACES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--state", type=Path, default=DEFAULT_STATE, help=f"state file (default {DEFAULT_STATE.relative_to(ROOT)})"
    )
    parser.add_argument("--report", action="store_true", help="print the table of the state file and exit")
    parser.add_argument("--json", metavar="FILE", help="also write every number as JSON to FILE ('-': stdout)")
    parser.add_argument("--fresh", action="store_true", help="start over (the old state is kept as FILE.old)")
    parser.add_argument("--accept-code-change", action="store_true", help="go on with a state measured with other code")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="measure the selected --backends/--action-spaces again from zero with the current code (others kept)",
    )
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error("--steps must be positive")
    try:
        if args.report:
            state = load_state(args.state)
            if state is None:
                print(f"no soak state at {args.state}", file=sys.stderr)
                return 2
            out = results(state)
            print(table(out))
            if args.json:
                _dump_json(out, args.json)
            return 0
        received: list[int] = []

        def on_signal(signum, frame) -> None:
            received.append(signum)
            signal.signal(signum, signal.SIG_DFL)  # a second one ends it at once

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, on_signal)
        with locked(args.state):
            state, finished = run(
                args.state,
                args.steps,
                tuple(args.backends),
                tuple(args.action_spaces),
                args.seed,
                fresh=args.fresh,
                accept_code_change=args.accept_code_change,
                restart=args.restart,
                stop=lambda: bool(received),
            )
    except StateError as error:
        print(f"safety_soak: {error}", file=sys.stderr)
        return 3 if "another safety soak" in str(error) else 2
    if received:
        done = sum(run["tally"].steps for run in state["runs"].values())
        print(
            f"interrupted ({signal.Signals(received[0]).name}): state saved to {args.state} "
            f"({done:,} steps in whole episodes); rerun the same command to resume",
            flush=True,
        )
        return 128 + received[0]
    out = results(state)
    print(table(out))
    if args.json:
        _dump_json(out, args.json)
    return 0 if finished else 1


if __name__ == "__main__":
    sys.exit(main())
