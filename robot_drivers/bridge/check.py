"""``pandalab bridge check``: what an operator runs first on a new cell.

Connects to a bridge server and prints the robot model, the server and libfranka versions, the
cell's cameras (requested, achieved and recorded size and rate, the measured rate and the newest
frame's age), the joint state, the limits in force, the achieved state rate and the round-trip
latency of state requests and (zero) commands.  With ``--move`` (after a confirmation, or ``--yes``)
it moves each joint in turn by `MOVE_RAD` at `MOVE_SPEED` and back, through the safety filter with
the server's limits, paced at 20 Hz, and reports how closely the arm tracked the commanded velocity.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from robot_drivers.base import DriverFault
from robot_drivers.bridge.client import BridgeDriver
from robot_drivers.types import NUM_JOINTS, ActionSpace, Command

MOVE_RAD = 0.05
"""How far `--move` turns each joint, rad, there and back."""
MOVE_SPEED = 0.1
"""Joint speed of `--move`, rad/s."""
RATE_HZ = 20.0


def _percentiles(values: list[float]) -> str:
    array = 1000.0 * np.asarray(values)
    return f"median {np.median(array):.2f} ms, p99 {np.percentile(array, 99):.2f} ms"


def run_bridge_check(
    server: str,
    samples: int = 200,
    move: bool = False,
    assume_yes: bool = False,
    out: Callable[[str], None] = print,
    ask: Callable[[str], str] = input,
) -> int:
    """0 when everything answered (and, with ``move``, the arm moved and came back); 3 when the
    bridge cannot be reached; 1 when a request or the motion failed."""
    driver = BridgeDriver({"server": server, "connect_timeout_s": 5.0, "request_timeout_s": 1.0})
    try:
        driver.connect()
    except DriverFault as fault:
        out(f"pandalab bridge check: {fault.message}")
        return 3
    try:
        info = driver.server_info
        out(f"bridge      {server}: protocol {info.get('protocol')}, server version {info.get('server_version')}")
        versions = f"; libfranka {info['libfranka']}" if "libfranka" in info else ""
        out(f"arm         {info.get('arm')}: {info.get('robot_model')}{versions}")
        if "joint_states_topic" in info:  # the ros2 arm: where it reads and writes, and how it recovers
            out(
                f"ros 2       joint states {info['joint_states_topic']}, commands {info.get('commands_topic')}, "
                f"joints {', '.join(info.get('joint_names', []))}; error recovery: {info.get('error_recovery')}"
            )
        cameras = ", ".join(f"{c['name']} {c['width']}x{c['height']}" for c in info.get("cameras", [])) or "none"
        out(f"cameras     {cameras}")
        _print_camera_sources(driver, out)
        limits = info.get("limits", {})
        out(
            f"watchdog    {info.get('watchdog_ms')} ms; commands older than {info.get('max_command_age_ms')} ms dropped"
        )
        out(
            f"limits      q_min {limits.get('q_min')}\n            q_max {limits.get('q_max')}\n"
            f"            velocity cap {limits.get('velocity_cap')} rad/s (max {limits.get('velocity_max')})\n"
            f"            acceleration {limits.get('acceleration_limit')} rad/s^2\n"
            f"            box {limits.get('workspace_min')} .. {limits.get('workspace_max')} m, "
            f"table at {limits.get('table_height')} m"
        )
        state = driver.read_state()
        out(f"state       q {np.round(state.q, 4).tolist()} rad\n            dq {np.round(state.dq, 4).tolist()} rad/s")
        out(f"            tool tip {np.round(state.tip_pos, 4).tolist()} m, gripper {state.gripper_width:.4f} m")
        reads = []
        started = time.perf_counter()
        for _ in range(samples):
            t0 = time.perf_counter()
            driver.read_state()
            reads.append(time.perf_counter() - t0)
        rate = samples / (time.perf_counter() - started)
        out(f"state       {rate:.0f} states/s; round trip {_percentiles(reads)}")
        commands = []
        for _ in range(min(samples, 50)):
            t0 = time.perf_counter()
            driver.send(Command(ActionSpace.joint_velocity, np.zeros(NUM_JOINTS)))
            commands.append(time.perf_counter() - t0)
            time.sleep(1.0 / RATE_HZ)
        out(f"command     round trip {_percentiles(commands)} (zero velocity: nothing moves)")
        if move:
            answer = (
                "y"
                if assume_yes
                else ask(
                    f"move each joint by {MOVE_RAD} rad at {MOVE_SPEED} rad/s and back? Keep the e-stop at hand [y/N] "
                )
            )
            if answer.strip().lower() not in ("y", "yes"):
                out("not moved")
            else:
                _move_each_joint(driver, out)
        driver.stop()
    except DriverFault as fault:
        out(f"pandalab bridge check: {fault.message}")
        return 1
    finally:
        driver.close()
    return 0


def _print_camera_sources(driver: BridgeDriver, out: Callable[[str], None]) -> None:
    """Each camera of the cell: requested, achieved and recorded settings, then the measured frame
    rate and the newest frame's age now (a simulated arm's cameras render on demand: not listed)."""
    from robot_drivers.cameras.rig import settings_text

    sources = driver.server_info.get("camera_sources", [])
    if not sources:
        return
    time.sleep(0.5)  # let the measured rates cover a moment of frames
    live = {c.get("name"): c for c in driver.server_status().get("cameras", [])}
    for source in sources:
        out(f"camera      {source['name']} ({source['source']} {source['device']}): {settings_text(source)}")
        status = live.get(source["name"], {})
        age = status.get("age_s")
        age_text = "no frame yet" if age is None else f"newest frame {1000 * age:.1f} ms old"
        lost = f"; LOST: {status['lost']}" if status.get("lost") else ""
        out(
            f"            measured {status.get('fps_measured', 0):g} fps, {age_text}, "
            f"{status.get('frames', 0)} frames, lost {status.get('losses', 0)} times{lost}"
        )


def _move_each_joint(driver: BridgeDriver, out: Callable[[str], None]) -> None:
    """Each joint: +MOVE_SPEED for MOVE_RAD / MOVE_SPEED seconds, then back, through the filter."""
    from robot_drivers.safe_driver import SafeDriver
    from safety import SafetyLimits

    safe = SafeDriver(driver, SafetyLimits(**driver.server_info["limits"]), ActionSpace.joint_velocity)
    period = 1.0 / RATE_HZ
    steps = round(MOVE_RAD / MOVE_SPEED * RATE_HZ)
    for joint in range(NUM_JOINTS):
        start = safe.read_state().q
        errors = []
        deadline = time.monotonic()
        for direction in (1.0, -1.0):
            action = np.zeros(NUM_JOINTS)
            action[joint] = direction * MOVE_SPEED
            for step in range(steps):
                state = safe.read_state()
                command, _ = safe.act(state, action)
                if step >= steps // 2:  # past the ramp: tracking of a steady command
                    errors.append(abs(state.dq[joint] - command.values[joint]))
                deadline += period
                time.sleep(max(0.0, deadline - time.monotonic()))
        safe.stop()
        end = safe.read_state().q
        out(
            f"joint {joint + 1}     moved {MOVE_RAD} rad and back: velocity tracking error max "
            f"{max(errors):.4f} rad/s; back within {abs(end[joint] - start[joint]):.4f} rad"
        )
