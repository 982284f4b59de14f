"""The ROS 2 path end to end: collector -> bridge (``ros2`` arm) -> Cyclone DDS on loopback -> a
stand-in for a franka_ros2 robot PC, in separate processes.

The stand-in (tools/franka_ros2_standin.py) is a FAKE ROBOT, not franka_ros2: no ROS 2 graph can run
here (rclpy and franka_ros2 are not installable).  It speaks the same DDS as rmw_cyclonedds
(``rt/franka/joint_states``, ``rt/joint_velocity_controller/commands``, ROS 2's type names, CDR), integrates
the commanded joint velocities at 1 kHz, holds the last command as a JointGroupVelocityController
does, lists the joints out of order with the fingers merged in, and stops like a reflex on SIGUSR1
(until SIGUSR2, what franka_ros2's ErrorRecovery action would do).  What each test measures comes
from what the stand-in receives and publishes over DDS, observed by a third participant here.
The session test runs against the Python stand-in (PyPI's Cyclone 11, the bridge's) and its C twin
(tools/franka_ros2_standin_c, Debian's Cyclone 0.10 as ROS 2 Humble and Jazzy ship): the versions
interoperate on ROS 2's wire format.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import yaml

from robot_drivers import DriverFault, FaultReason
from robot_drivers.bridge.ros2_wire import Float64MultiArray, JointState, Ros2Graph, loopback_options
from safety import SafetyLimits
from safety.robot_model import limits_fields, robot_model
from store import read_manifest, verify_session
from tests.bridge.clients import Client
from tests.e2e.conftest import REPO, collect_complete, pandalab, wait_for
from tests.e2e.test_bridge import _stop_process

STANDIN = REPO / "tools" / "franka_ros2_standin.py"
STANDIN_C = REPO / "tools" / "franka_ros2_standin_c" / "build" / "standin"
"""The stand-in in C on Debian's Cyclone DDS 0.10 (ROS 2 Humble and Jazzy's line), built by `make test`."""
COMMANDS = "/joint_velocity_controller/commands"
WATCHDOG_S = 0.1
STATE_TIMEOUT_S = 0.25
"""The arm's state_timeout_ms in these tests: four busy processes share two cores here (franka_ros2's
robot PC publishes at 1 kHz on its own cores; the default is 100 ms)."""
FR3_LIMITS = SafetyLimits(**limits_fields("fr3", {"velocity_cap": 0.5}))
BRAKING_S = float(np.max(0.5 / FR3_LIMITS.accelerations + FR3_LIMITS.accelerations / FR3_LIMITS.jerks))
"""Longest ramp from the 0.5 rad/s cap to rest at the operating acceleration and jerk, s."""
_domains = itertools.count()


def _domain_id() -> int:
    """A ROS domain of its own per test (no cross-talk with another test or a parallel run)."""
    return 100 + (os.getpid() * 13 + next(_domains)) % 130


def _start_standin(domain_id: int, *extra: str, kind: str = "python") -> subprocess.Popen:
    """The Python stand-in (PyPI's Cyclone 11, as the bridge) or, ``kind="c"``, the C one (Debian's
    Cyclone 0.10): the same fake robot, so every test may run against either."""
    if kind == "c":
        command = [str(STANDIN_C), str(domain_id), "fr3"]
        env = {**os.environ, "CYCLONEDDS_URI": loopback_options(domain_id).xml()}
    else:
        command = [sys.executable, str(STANDIN), "--robot-model", "fr3", "--domain-id", str(domain_id), "--loopback"]
        env = None
    process = subprocess.Popen(
        [*command, *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = process.stdout.readline()
    assert json.loads(line)["ready"], line
    return process


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


class Recorder:
    """A third DDS participant: every command the bridge publishes, with the time the bridge wrote it
    (the DDS source time stamp, wall clock, s), and the joint states the stand-in publishes, with the
    time each arrived here (monotonic, s)."""

    def __init__(self, domain_id: int) -> None:
        self.graph = Ros2Graph(loopback_options(domain_id))
        self._commands = self.graph.reader(COMMANDS, Float64MultiArray, depth=5000, reliable=True)
        self._states = self.graph.reader("/franka/joint_states", JointState)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.states: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        order = [f"fr3_joint{i}" for i in range(1, 8)]
        while not self._stop.is_set():
            now = time.monotonic()
            for sample in self._commands.take(N=5000):
                if isinstance(sample, Float64MultiArray):
                    self.commands.append((sample.sample_info.source_timestamp / 1e9, np.array(sample.data)))
            for sample in self._states.take(N=100):
                if isinstance(sample, JointState):
                    by_name = dict(zip(sample.name, zip(sample.position, sample.velocity, strict=True), strict=True))
                    q = np.array([by_name[n][0] for n in order])
                    dq = np.array([by_name[n][1] for n in order])
                    self.states.append((now, q, dq))
            time.sleep(0.002)

    def commands_after(self, since: float) -> tuple[np.ndarray, np.ndarray]:
        rows = [(t, c) for t, c in list(self.commands) if t >= since]
        return np.array([t for t, _ in rows]), np.array([c for _, c in rows]).reshape(-1, 7)

    def moving(self) -> bool:
        return bool(self.states) and float(np.max(np.abs(self.states[-1][2]))) > 0.1

    def commanding_motion(self) -> bool:
        """The bridge's newest command asks for motion and was written in the last 20 ms."""
        if not self.commands:
            return False
        written, command = self.commands[-1]
        return time.time() - written < 0.02 and bool(np.any(np.abs(command) > 0.05))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.graph.close()


def _configs(tmp_path, domain_id: int, **session) -> tuple[str, str, str]:
    address = f"ipc://{tmp_path}/bridge"
    bridge = {
        "address": address,
        "arm": "ros2",
        "robot_model": "fr3",
        "options": {
            "dds": loopback_options(domain_id).model_dump(mode="json"),
            "connect_timeout_s": 20,
            "state_timeout_ms": 1000 * STATE_TIMEOUT_S,
        },
        "safety": {"velocity_cap": 0.5},
    }
    bridge_path = tmp_path / "bridge.yaml"
    bridge_path.write_text(yaml.safe_dump(bridge))
    config = {
        "session_id": "ros2",
        "data_root": str(tmp_path / "data"),
        "robot": {"backend": "bridge", "model": "fr3", "options": {"server": address, "connect_timeout_s": 30}},
        "episode_steps": 20,
        "explorer": {"name": "random_linear"},
        "stop": {"episodes": 3},
        "safety": {"velocity_cap": 0.5},
        "control_address": f"ipc://{tmp_path}/control",
        "telemetry_address": f"ipc://{tmp_path}/telemetry",
        **session,
    }
    session_path = tmp_path / "session.yaml"
    session_path.write_text(yaml.safe_dump(config))
    return str(bridge_path), address, str(session_path)


def _assert_within_limits(times: np.ndarray, commands: np.ndarray) -> None:
    """Commanded velocities change no faster than the operating accelerations, measured over 10 ms
    windows of the stream as it arrived (delivery jitter allowed for by the window)."""
    assert len(times) > 20, "too few commands seen"
    j = 0
    worst = 0.0
    for i in range(len(times)):
        while times[i] - times[j] > 0.02:
            j += 1
        if times[i] - times[j] >= 0.01:
            rate = np.abs(commands[i] - commands[j]) / (times[i] - times[j])
            worst = max(worst, float(np.max(rate / FR3_LIMITS.accelerations)))
    assert worst <= 1.35, f"commands changed at {worst:.2f}x the operating acceleration"
    assert np.all(np.abs(commands) <= 0.5 + 1e-9), "a command above the velocity cap"


@pytest.mark.parametrize(
    "kind",
    [
        "python",
        pytest.param(
            "c",
            marks=pytest.mark.skipif(
                not STANDIN_C.exists(), reason="the C stand-in is not built: `make test` builds it (Cyclone 0.10)"
            ),
        ),
    ],
)
def test_a_session_through_ros2_records_episodes_and_a_killed_collector_ramps_the_commands_to_zero(tmp_path, kind):
    domain_id = _domain_id()
    standin = _start_standin(domain_id, kind=kind)
    recorder = Recorder(domain_id)
    bridge_path, _, session_path = _configs(tmp_path, domain_id)
    server = pandalab("bridge", "serve", "--config", bridge_path)
    try:
        folder = tmp_path / "data" / "ros2"
        collect_complete(session_path, folder, episodes=3, steps=20)
        # What the stand-in published stayed inside the FR3's joint ranges; the bridge's commands
        # stayed under the cap and within the operating accelerations.
        fr3 = robot_model("fr3")
        q = np.array([s[1] for s in recorder.states])
        assert np.all(q >= np.array(fr3.q_min)) and np.all(q <= np.array(fr3.q_max))
        assert float(np.ptp(q, axis=0).max()) > 0.05, "the fake arm never moved"
        _assert_within_limits(*recorder.commands_after(0.0))
        # Each episode starts at home as recorded: joints read by name, not in the stand-in's order.
        from safety.reset import DEFAULT_HOME_Q
        from store import iter_episodes

        for episode in iter_episodes(folder):
            np.testing.assert_allclose(episode.load("obs/q")[0], DEFAULT_HOME_Q, atol=0.01)

        # kill -9 of a collector while the arm moves: the bridge's watchdog ramps the commands to zero.
        _, _, long_session = _configs(
            tmp_path, domain_id, session_id="ros2_kill", episode_steps=400, stop={"episodes": 1}
        )
        collector = pandalab("collect", "--config", long_session)
        try:
            wait_for(recorder.moving, timeout_s=90)
            time.sleep(0.3)
            wait_for(recorder.commanding_motion, timeout_s=30, interval_s=0.001)
            killed_at = time.time()
            collector.kill()
            time.sleep(1.0)
        finally:
            _kill(collector)
        times, commands = recorder.commands_after(killed_at - 0.1)
        moving = np.flatnonzero(np.any(np.abs(commands) > 1e-9, axis=1))
        assert moving.size, "no motion was commanded before the kill"
        stopped_after = times[moving[-1]] - killed_at
        bound = WATCHDOG_S + BRAKING_S + 0.1
        assert stopped_after <= bound, (
            f"commands reached zero {stopped_after:.3f} s after the kill, allowed {bound:.3f}"
        )
        _assert_within_limits(times, commands)
        assert np.max(np.abs(recorder.states[-1][2])) < 1e-9, "the fake arm still moves"
    finally:
        recorder.close()
        log = _stop_process(server)
        _kill(standin)
    assert "watchdog: no valid command" in log, log[-2000:]


def test_killing_the_robot_side_is_a_fault_the_bridge_stops_commanding_and_the_collector_waits_for_it(tmp_path):
    domain_id = _domain_id()
    standin = _start_standin(domain_id)
    recorder = Recorder(domain_id)
    bridge_path, _, session_path = _configs(tmp_path, domain_id, episode_steps=60, stop={"episodes": 3})
    server = pandalab("bridge", "serve", "--config", bridge_path)
    collector = None
    try:
        collector = pandalab("collect", "--config", session_path)
        wait_for(recorder.moving, timeout_s=90)
        time.sleep(0.3)
        wait_for(recorder.commanding_motion, timeout_s=30, interval_s=0.001)
        killed_at = time.time()
        standin.kill()
        standin.wait()
        time.sleep(2.0)
        # The bridge ramped its commands to zero within the limits, published zero a few times, then
        # nothing: no command at all after the ramp and its zeros.
        times, commands = recorder.commands_after(killed_at - 0.1)
        _assert_within_limits(times, commands)
        nonzero = np.flatnonzero(np.any(np.abs(commands) > 1e-9, axis=1))
        zeros_after = len(commands) - 1 - (nonzero[-1] if nonzero.size else -1)
        from robot_drivers.bridge.arm_ros2 import ZERO_MESSAGES

        assert 1 <= zeros_after <= ZERO_MESSAGES + 2, zeros_after
        assert times[-1] - killed_at < STATE_TIMEOUT_S + BRAKING_S + 0.2, "the bridge kept commanding"
        # The episode ended as a fault with the reason; the collector holds for the link, alive.
        events = (tmp_path / "data" / "ros2" / "events.jsonl").read_text()
        faults = [json.loads(line) for line in events.splitlines() if '"driver_fault"' in line]
        assert faults and faults[0]["reason"] == FaultReason.connection_lost.value, events[-2000:]
        assert "no joint state on /franka/joint_states" in faults[0]["message"]
        assert collector.poll() is None, "the collector died"
        # It waits for the robot (a link hold: not counted as a loss while joint states are absent)...
        time.sleep(3.0)
        events = (tmp_path / "data" / "ros2" / "events.jsonl").read_text()
        assert events.count('"driver_fault"') <= 2, events[-3000:]
        # ...and goes on once franka_ros2 is back: the session finishes with complete episodes.
        standin = _start_standin(domain_id)
        assert collector.wait(timeout=120) == 0
        outcomes = [e.outcome for e in read_manifest(tmp_path / "data" / "ros2")]
        assert outcomes.count("complete") == 3 and set(outcomes) <= {"complete", "fault"}, outcomes
        assert verify_session(tmp_path / "data" / "ros2").clean
    finally:
        if collector is not None:
            _kill(collector)
        recorder.close()
        log = _stop_process(server)
        _kill(standin)
    assert "connection_lost: no joint state on /franka/joint_states" in log, log[-2000:]


@pytest.fixture
def ros2_server(tmp_path):
    """A bridge server with the ros2 arm in a thread here (to read the arm), against a stand-in."""
    from robot_drivers.bridge.config import BridgeServerConfig
    from robot_drivers.bridge.server import BridgeServer

    domain_id = _domain_id()
    standin = _start_standin(domain_id)
    config = BridgeServerConfig(
        address=f"ipc://{tmp_path}/bridge",
        arm="ros2",
        robot_model="fr3",
        options={
            "dds": loopback_options(domain_id).model_dump(mode="json"),
            "connect_timeout_s": 20,
            "state_timeout_ms": 1000 * STATE_TIMEOUT_S,
        },
    )
    lines: list[str] = []
    bridge = BridgeServer(config, log=lines.append)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=bridge.serve, kwargs={"should_stop": stop.is_set, "ready": ready.set})
    thread.start()
    client = Client(config.address)
    try:
        assert ready.wait(60)
        yield bridge, client, standin, lines
    finally:
        client.close()
        stop.set()
        thread.join(timeout=60)
        _kill(standin)


def test_a_reflex_is_a_fault_naming_the_recovery_command_and_a_stop_clears_it(ros2_server):
    bridge, client, standin, lines = ros2_server
    assert client.hello()["ok"]
    for seq in range(6):
        assert client.command(seq, [0.2, 0, 0, 0, 0, 0, 0])["ok"]
        time.sleep(0.05)
    standin.send_signal(signal.SIGUSR1)  # the fake robot stops like a reflex and ignores commands
    deadline = time.monotonic() + 2.0
    reply = {"ok": True}
    seq = 6
    while reply["ok"] and time.monotonic() < deadline:
        reply = client.command(seq, [0.2, 0, 0, 0, 0, 0, 0])
        seq += 1
        time.sleep(0.05)
    assert not reply["ok"] and reply["reason"] == FaultReason.robot_error.value, reply
    assert "ros2 action send_goal /action_server/error_recovery franka_msgs/action/ErrorRecovery {}" in reply["error"]
    assert any("robot_error: the arm does not follow" in line for line in lines), lines
    standin.send_signal(signal.SIGUSR2)  # what the operator's ErrorRecovery call does
    assert client.request(op="stop")["ok"]
    assert bridge.arm.fault() is None
    for step in range(8):
        assert client.command(seq + step, [0.2, 0, 0, 0, 0, 0, 0])["ok"]
        time.sleep(0.05)
    assert abs(bridge.arm.state().dq[0] - 0.2) < 0.02, "the arm does not move again after the recovery"
    assert client.request(op="stop")["ok"]


def test_the_arm_maps_joints_by_name_and_a_missing_robot_or_controller_is_a_clear_error(tmp_path):
    from robot_drivers.bridge.arm_ros2 import Ros2Arm

    domain_id = _domain_id()
    dds = loopback_options(domain_id).model_dump(mode="json")
    started = time.monotonic()
    with pytest.raises(DriverFault) as nobody:
        Ros2Arm({"dds": dds, "connect_timeout_s": 1.5}, robot_model="fr3").connect()
    assert time.monotonic() - started < 5.0
    assert nobody.value.reason is FaultReason.not_connected
    assert "no sensor_msgs/JointState" in nobody.value.message and "/franka/joint_states" in nobody.value.message
    standin = _start_standin(
        domain_id, "--prefix", "left_", "--home", "0.1", "-0.2", "0.3", "-2.0", "0.5", "1.6", "0.7"
    )
    try:
        with pytest.raises(DriverFault) as unnamed:  # fr3_joint1..7 are not in a namespaced bringup's message
            Ros2Arm({"dds": dds, "connect_timeout_s": 1.5}, robot_model="fr3").connect()
        assert "do the joint names match" in unnamed.value.message
        names = [f"left_fr3_joint{i}" for i in range(1, 8)]
        with pytest.raises(DriverFault) as no_controller:
            Ros2Arm(
                {"dds": dds, "joint_names": names, "controller": "wrong_controller", "connect_timeout_s": 1.5},
                robot_model="fr3",
            ).connect()
        assert "nothing subscribes to /wrong_controller/commands" in no_controller.value.message
        arm = Ros2Arm(
            {
                "dds": dds,
                "joint_names": names,
                "finger_joint_names": ["left_fr3_finger_joint1", "left_fr3_finger_joint2"],
            },
            robot_model="fr3",
        )
        arm.connect()
        try:
            arm.tick(time.monotonic())
            state = arm.state()
            np.testing.assert_allclose(state.q, [0.1, -0.2, 0.3, -2.0, 0.5, 1.6, 0.7])
            assert state.gripper_width == pytest.approx(0.08)
        finally:
            arm.close()
    finally:
        _kill(standin)
