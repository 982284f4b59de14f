"""Cost of the safety filter per call (issue 3: "far below the control period").

Prints microseconds per `SafetyFilter.filter` call in both action spaces, on states reached by
exploration (some in free space, some pressed against a limit), next to the control period
(50,000 us at 20 Hz) and a naive reference (clip to the cap only) for scale.

    .venv/bin/python benchmarks/safety_filter.py
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it

import numpy as np

from benchmarks._cli import run_script
from safety import SafetyFilter, SafetyLimits, kinematics
from safety.reset import DEFAULT_HOME_Q

HOME_Q = DEFAULT_HOME_Q


@dataclasses.dataclass
class State:
    q: np.ndarray
    dq: np.ndarray
    tip_pos: np.ndarray
    time: float = 0.0


def trajectory(action_space: str, steps: int, rng: np.random.Generator) -> list[tuple[State, np.ndarray]]:
    """(state, action) pairs along an adversarial run on the integrator model."""
    limits = SafetyLimits()
    safety_filter = SafetyFilter(limits, 20.0, action_space)
    scale = limits.velocity_cap if action_space == "joint_velocity" else limits.tip_delta_max
    q, v, out = HOME_Q.copy(), np.zeros(7), []
    action = np.zeros(safety_filter.action_dim)
    for k in range(steps):
        if k % 40 == 0:
            action = rng.choice([-10 * scale, 10 * scale], safety_filter.action_dim)
        state = State(q.copy(), v.copy(), kinematics.tip_position(q), k * 0.05)
        out.append((state, action.copy()))
        v = safety_filter.filter(state, action)[0].values
        q = q + v * safety_filter.period
    return out


def time_per_call(function, pairs, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        for state, action in pairs:
            function(state, action)
        best = min(best, (time.perf_counter() - start) / len(pairs))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="filter calls timed per row (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per row; the best is reported")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    limits = SafetyLimits()
    cap = limits.velocity_caps
    period_us = 1e6 / 20.0
    rows = []
    for action_space in ("joint_velocity", "tip_delta"):
        pairs = trajectory(action_space, args.steps, rng)
        safety_filter = SafetyFilter(limits, 20.0, action_space)
        rows.append((f"SafetyFilter.filter, {action_space}", time_per_call(safety_filter.filter, pairs, args.repeats)))
    pairs = trajectory("joint_velocity", args.steps, rng)
    clip = lambda s, a: np.clip(a, -cap, cap)  # noqa: E731
    rows.append(("naive: np.clip to the cap only", time_per_call(clip, pairs, args.repeats)))
    frames = lambda s, a: kinematics.frames(s.q)  # noqa: E731
    rows.append(("kinematics.frames, one configuration", time_per_call(frames, pairs, args.repeats)))
    print(f"{'what':<44} {'us/call':>10} {'% of period':>12}")
    for name, us in rows:
        print(f"{name:<44} {us:>10.1f} {100 * us / period_us:>11.3f}%")
    print(f"{'control period at 20 Hz':<44} {period_us:>10.0f} {100.0:>11.3f}%")


if __name__ == "__main__":
    run_script(main)
