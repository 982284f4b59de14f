"""The libfranka path end to end: collector -> bridge (``franky`` arm: franky-control, libfranka
inside) -> franky-sim, a MuJoCo FR3 that speaks libfranka's own network protocol on 127.0.0.1.  All
real processes and the real protocol; no physical arm.

franky-sim runs from its own virtualenv (.venv-franky-sim, made by `make test`: it needs mujoco 4
and pinocchio 3, ours pins mujoco 3.3.7).  What it does not do, and how the tests deal with it:

- it never raises reflexes or control errors: reflex handling is tested with a ``ControlException``
  injected at the arm backend's boundary (`test_a_reflex_...`, which says so);
- its joint 7 chatters standing still (velocity +-0.08 rad/s, position +-0.6 mrad, and it settles
  about 8 mrad off a target) and creeps at up to 0.016 rad/s once no motion runs: the sessions here
  allow 20 mrad and 0.1 rad/s at the end of a planned reset (``safety.reset_tolerance`` /
  ``rest_speed``; 2 mrad and 0.01 rad/s by default), rest is measured from positions over 50 ms
  windows, and joint 7 counts as at rest below 0.02 rad/s (the others 0.01);
- it enforces no limits: everything that keeps the arm inside them is ours.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import threading
import time

import numpy as np
import pytest
import yaml

from robot_drivers import DriverFault, FaultReason
from tests.bridge.clients import Client, Monitor
from tests.e2e.conftest import REPO, collect_complete, pandalab, wait_for
from tests.e2e.test_bridge import WATCHDOG_S, _stop_process

FRANKY_SIM = REPO / ".venv-franky-sim" / "bin" / "franky-sim"
FR3_ACCELERATION = 10.0
RELATIVE_DYNAMICS = 0.5
BRAKING_S = 0.5 / (RELATIVE_DYNAMICS * FR3_ACCELERATION)
"""Longest stop from the 0.5 rad/s cap with franky's motions at half the FR3's acceleration, s."""
WINDOW_S = 0.05
REST_SPEEDS = np.array([0.01] * 6 + [0.02])
"""At rest, rad/s: joint 7 of franky-sim creeps at up to 0.016 rad/s once no motion runs (measured;
a real arm holds still), the others stand."""
MARGIN_S = 0.08

pytestmark = pytest.mark.skipif(
    not FRANKY_SIM.exists(), reason="franky-sim is not installed: `make test` builds .venv-franky-sim"
)


@pytest.fixture(scope="module")
def franky_sim():
    process = subprocess.Popen(
        [str(FRANKY_SIM), "--simulator", "mujoco", "--hostname", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def listening() -> bool:
        with contextlib.closing(socket.socket()) as probe:
            probe.settimeout(0.2)
            return probe.connect_ex(("127.0.0.1", 1337)) == 0

    wait_for(listening, timeout_s=60, interval_s=0.2)
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _configs(tmp_path, **session) -> tuple[str, str, str]:
    address = f"ipc://{tmp_path}/bridge"
    bridge = {
        "address": address,
        "arm": "franky",
        "robot_model": "fr3",
        "options": {"hostname": "127.0.0.1", "realtime": False, "relative_dynamics_factor": RELATIVE_DYNAMICS},
    }
    bridge_path = tmp_path / "bridge.yaml"
    bridge_path.write_text(yaml.safe_dump(bridge))
    config = {
        "session_id": "fr3",
        "data_root": str(tmp_path / "data"),
        "robot": {"backend": "bridge", "model": "fr3", "options": {"server": address, "connect_timeout_s": 30}},
        "episode_steps": 20,
        "explorer": {"name": "random_linear"},
        "stop": {"episodes": 3},
        "safety": {"reset_tolerance": 0.02, "rest_speed": 0.1},
        "control_address": f"ipc://{tmp_path}/control",
        "telemetry_address": f"ipc://{tmp_path}/telemetry",
        **session,
    }
    session_path = tmp_path / "session.yaml"
    session_path.write_text(yaml.safe_dump(config))
    return str(bridge_path), address, str(session_path)


def _speeds_from_positions(t: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint speeds over `WINDOW_S` windows (franky-sim's velocities chatter): (window end times, speeds)."""
    ends, speeds = [], []
    j = 0
    for i in range(len(t)):
        while t[i] - t[j] > WINDOW_S:
            j += 1
        if j > 0 and t[i] - t[j - 1] >= WINDOW_S:
            ends.append(t[i])
            speeds.append(np.abs(q[i] - q[j - 1]) / (t[i] - t[j - 1]))
    return np.array(ends), np.array(speeds)


def _assert_at_rest_in_time(monitor: Monitor, since: float) -> float:
    """Every joint at rest (by positions) within the watchdog period plus the braking time after
    ``since``, and for the rest of what the monitor saw; returns the time to rest, s."""
    t, q, _ = monitor.after(since - 0.2)
    ends, speeds = _speeds_from_positions(t, q)
    after = ends >= since
    assert after.sum() > 20, "the monitor saw too little"
    moving = np.flatnonzero(np.any(speeds[after] >= REST_SPEEDS, axis=1))
    assert not moving.size or moving[-1] + 1 < after.sum(), "still moving at the end"
    rest_at = ends[after][moving[-1] + 1] - since if moving.size else 0.0
    bound = WATCHDOG_S + BRAKING_S + WINDOW_S + MARGIN_S
    assert rest_at <= bound, f"at rest {rest_at:.3f} s after, allowed {bound:.3f} s"
    return rest_at


def test_a_collector_stalled_for_a_second_leaves_franky_sim_at_rest(tmp_path, franky_sim):
    bridge_path, address, session_path = _configs(tmp_path, episode_steps=400, stop={"episodes": 1})
    server = pandalab("bridge", "serve", "--config", bridge_path)
    monitor = Monitor(address)
    collector = None
    try:
        wait_for(lambda: monitor.samples, timeout_s=60)
        collector = pandalab("collect", "--config", session_path)
        wait_for(monitor.moving, timeout_s=90)
        time.sleep(0.3)
        stalled_at = time.monotonic()
        collector.send_signal(signal.SIGSTOP)
        time.sleep(1.0)
        _assert_at_rest_in_time(monitor, stalled_at)
        collector.send_signal(signal.SIGCONT)
    finally:
        if collector is not None:
            collector.send_signal(signal.SIGCONT)
            collector.kill()
            collector.wait()
        monitor.close()
        log = _stop_process(server)
    assert "watchdog: no valid command" in log, log[-2000:]


def test_a_session_through_the_bridge_drives_franky_sim_and_a_kill_lets_the_watchdog_stop_it(tmp_path, franky_sim):
    bridge_path, address, session_path = _configs(tmp_path)
    server = pandalab("bridge", "serve", "--config", bridge_path)
    monitor = Monitor(address)
    try:
        wait_for(lambda: monitor.samples, timeout_s=60)
        # Three episodes, planned resets home between them, the data verified.
        folder = tmp_path / "data" / "fr3"
        collect_complete(session_path, folder, episodes=3, steps=20)
        # Joint positions stayed inside the FR3's published limits, measured from franky-sim.
        from safety.robot_model import robot_model

        fr3 = robot_model("fr3")
        q = np.array([s[1] for s in monitor.samples])
        assert np.all(q >= np.array(fr3.q_min)) and np.all(q <= np.array(fr3.q_max))
        # kill -9 of a collector while the arm moves: at rest within the watchdog period plus the braking.
        _, _, long_session = _configs(tmp_path, session_id="fr3_kill", episode_steps=400, stop={"episodes": 1})
        collector = pandalab("collect", "--config", long_session)
        try:
            wait_for(monitor.moving, timeout_s=90)
            time.sleep(0.3)
            killed_at = time.monotonic()
            collector.kill()
            time.sleep(1.0)
        finally:
            collector.kill()
            collector.wait()
        _assert_at_rest_in_time(monitor, killed_at)
    finally:
        monitor.close()
        log = _stop_process(server)
    assert "watchdog: no valid command" in log, log[-2000:]


def test_malformed_and_out_of_range_commands_never_reach_franky_sim_unfiltered(tmp_path, franky_sim):
    bridge_path, address, _ = _configs(tmp_path)
    server = pandalab("bridge", "serve", "--config", bridge_path)
    monitor = Monitor(address)
    client = Client(address)
    try:
        wait_for(lambda: monitor.samples, timeout_s=60)
        assert client.hello()["ok"]
        start = time.monotonic()
        for raw in (
            b"\xff\x00garbage",
            b'{"op": "command", "id": 1, "seq": 1, "sent": 0, "dq": [NaN, 0, 0, 0, 0, 0, 0]}',
            b'{"op": "command", "id": 2, "seq": 2, "sent": %f, "dq": [1e999, 0, 0, 0, 0, 0, 0]}' % time.time(),
            b'{"op": "command", "id": 3, "seq": 3, "sent": %f, "dq": ["1", 0, 0, 0, 0, 0, 0]}' % time.time(),
            b'{"op": "command", "id": 4, "seq": 4, "sent": %f, "dq": [0, 0, 0]}' % time.time(),
        ):
            reply = client.raw([raw])
            assert reply is not None and not reply["ok"], (raw, reply)
        time.sleep(0.3)
        t, q, _ = monitor.after(start)
        assert np.max(np.abs(q - q[0])) < 0.002, "a refused command moved the arm"
        # Out of range: 5 rad/s asked on joint 1 for 0.5 s; franky-sim's arm never exceeds the 0.5 rad/s cap.
        moved_at = time.monotonic()
        for seq in range(10, 20):
            assert client.command(seq, [5.0, 0, 0, 0, 0, 0, 0])["ok"]
            time.sleep(0.05)
        assert client.request(op="stop")["ok"]
        t, q, _ = monitor.after(moved_at)
        _, speeds = _speeds_from_positions(t, q)
        assert speeds[:, 0].max() > 0.3, "the arm did not move at all"
        assert speeds[:, 0].max() <= 0.5 + 0.02, speeds[:, 0].max()
    finally:
        client.close()
        monitor.close()
        _stop_process(server)


def test_a_reflex_faults_the_command_and_a_stop_recovers_the_arm(franky_sim, tmp_path):
    """franky-sim never raises reflexes: the running motion's ``ControlException`` is injected at the
    franky arm's boundary (its robot's ``poll_motion``), once."""
    import franky

    from robot_drivers.bridge.arm_franky import FrankyArm
    from robot_drivers.bridge.config import BridgeServerConfig
    from robot_drivers.bridge.server import BridgeServer

    config = BridgeServerConfig(
        address=f"ipc://{tmp_path}/bridge",
        arm="franky",
        robot_model="fr3",
        options={"hostname": "127.0.0.1", "realtime": False},
    )
    arm = FrankyArm(config.options)
    lines: list[str] = []
    bridge = BridgeServer(config, arm=arm, log=lines.append)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=bridge.serve, kwargs={"should_stop": stop.is_set, "ready": ready.set})
    thread.start()
    client = Client(config.address)
    try:
        assert ready.wait(60)
        assert client.hello()["ok"]
        assert client.command(0, [0.2, 0, 0, 0, 0, 0, 0])["ok"]
        robot = arm._robot
        poll = robot.poll_motion
        injected = []

        class Reflexing:
            def __getattr__(self, name):
                return getattr(robot, name)

            def poll_motion(self):
                if not injected:
                    injected.append(True)
                    raise franky.ControlException(
                        "libfranka: Move command aborted: motion aborted by reflex! [cartesian_reflex]"
                    )
                return poll()

        arm._robot = Reflexing()
        time.sleep(0.05)
        refused = client.command(1, [0.2, 0, 0, 0, 0, 0, 0])
        assert not refused["ok"] and refused["reason"] == FaultReason.collision_reflex.value, refused
        assert "reflex" in refused["error"]
        assert client.request(op="stop")["ok"]  # recover_from_errors, then at rest
        assert arm.fault() is None
        assert client.command(2, [0.0] * 7)["ok"]
        assert any("recovered from collision_reflex" in line for line in lines), lines
    finally:
        client.close()
        stop.set()
        thread.join(timeout=60)


def test_connecting_to_an_address_that_accepts_and_never_answers_times_out(tmp_path):
    from robot_drivers.bridge.arm_franky import FrankyArm

    listener = socket.socket()
    listener.bind(("127.0.0.3", 1337))
    listener.listen(8)
    try:
        arm = FrankyArm({"hostname": "127.0.0.3", "realtime": False, "connect_timeout_s": 3.0})
        started = time.monotonic()
        with pytest.raises(DriverFault) as raised:
            arm.connect()
        assert time.monotonic() - started < 4.0
        assert raised.value.reason is FaultReason.timeout and "127.0.0.3" in raised.value.message
    finally:
        listener.close()
