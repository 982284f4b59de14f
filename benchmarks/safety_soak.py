"""Soak test of the safety filter in both simulators (issue 3, "Must be true").

Adversarial actions (uniform random at ten times the action range, plus bursts of NaN) pass
through `SafetyFilter` into a simulated Panda (MuJoCo via robosuite, and PyBullet), in both action
spaces; every state the simulator reports is measured against the limits: joint positions (rad)
against the operating joint limits, the simulator's own tool-tip position (m) against the box and
the height above the table, the arm's other watched points (from the reported joint angles)
against their height above the table.  Prints the closest approach to each limit (negative:
outside) and the number of simulator-reported table / self collisions.

    .venv/bin/python benchmarks/safety_soak.py --steps 20000          # the issue's 20,000 steps
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MUJOCO_GL", "egl")

from robot_drivers import ActionSpace, Command, create_driver
from safety import SafetyFilter, SafetyLimits, ViolationMonitor, contact_events, kinematics
from safety.filter import CONSTRAINT_NAMES, cartesian_margins
from sim.config import SimConfig

EPISODE_STEPS = 1000
"""Steps between resets (seed 001's episode length)."""
NAN_BURST_PROBABILITY = 0.005
"""Chance per step that a burst of NaN actions (1 to 10 steps) starts."""


def soak(backend: str, action_space: str, steps: int, seed: int = 0, limits: SafetyLimits | None = None) -> dict:
    """Run ``steps`` adversarial steps; returns closest approaches (by limit name), violation and
    collision counts, and the time per step."""
    limits = limits if limits is not None else SafetyLimits()
    rng = np.random.default_rng(seed)
    driver = create_driver(backend, SimConfig(backend=backend, cameras=(), seed=seed))
    driver.connect()
    safety_filter = SafetyFilter(limits, driver.control_rate_hz, action_space)
    monitor = ViolationMonitor(limits, max_violations=10**9)
    scale = limits.velocity_cap if action_space == "joint_velocity" else limits.tip_delta_max
    names = [f"q{i + 1}_min" for i in range(7)] + [f"q{i + 1}_max" for i in range(7)] + list(CONSTRAINT_NAMES)
    closest = np.full(len(names), np.inf)
    violations, collisions, nan_left = 0, {"table_collision": 0, "self_collision": 0}, 0
    start = time.perf_counter()
    try:
        state = driver.read_state()
        for step in range(steps):
            if step % EPISODE_STEPS == 0:
                state = driver.reset(None)
                safety_filter.reset()
            if nan_left == 0 and rng.random() < NAN_BURST_PROBABILITY:
                nan_left = int(rng.integers(1, 11))
            action = rng.uniform(-10 * scale, 10 * scale, safety_filter.action_dim)
            if nan_left:
                action[rng.integers(0, safety_filter.action_dim)] = np.nan
                nan_left -= 1
            command, _ = safety_filter.filter(state, action)
            driver.send(Command(ActionSpace(command.kind), command.values))
            state = driver.read_state()
            q, tip = state.q, state.tip_pos
            cartesian = cartesian_margins(limits, kinematics.frames(q))
            cartesian[:6] = np.ravel(np.column_stack([tip - limits.tip_lower, limits.tip_upper - tip]))
            margins = np.concatenate([q - limits.q_lower, limits.q_upper - q, cartesian])
            closest = np.minimum(closest, margins)
            violations += bool(monitor.violations(state))
            for event in contact_events(driver.arm_contacts()):
                collisions[event.kind] += 1
    finally:
        driver.close()
    elapsed = time.perf_counter() - start
    return {
        "backend": backend,
        "action_space": action_space,
        "steps": steps,
        "closest": dict(zip(names, closest.tolist(), strict=True)),
        "violations": violations,
        "collisions": collisions,
        "ms_per_step": 1000 * elapsed / steps,
    }


def report(result: dict) -> str:
    closest = result["closest"]
    joint = min(v for k, v in closest.items() if k.startswith("q"))
    lines = [
        f"{result['backend']:>9} {result['action_space']:>14}: {result['steps']} steps, "
        f"{result['ms_per_step']:.2f} ms/step, violations {result['violations']}, collisions {result['collisions']}",
        f"    closest approach (negative = outside): joints {joint:+.5f} rad "
        + ", ".join(f"{k} {v:+.4f} m" for k, v in closest.items() if not k.startswith("q")),
        "    per joint limit: " + ", ".join(f"{k} {v:+.4f}" for k, v in closest.items() if k.startswith("q")),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--backends", nargs="+", default=["robosuite", "pybullet"])
    parser.add_argument("--action-spaces", nargs="+", default=["joint_velocity", "tip_delta"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for backend in args.backends:
        for action_space in args.action_spaces:
            print(report(soak(backend, action_space, args.steps, args.seed)), flush=True)


if __name__ == "__main__":
    main()
