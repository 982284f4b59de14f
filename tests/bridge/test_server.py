"""The bridge server against malformed and adversarial requests: any bytes get an error reply or
are dropped, nothing unfiltered or non-finite ever reaches the arm, and the server keeps serving.

The server runs in a thread of this process with its real simulated arm (PyBullet, free-running);
the arm is wrapped to record every velocity target the server sets: what the robot would see.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_drivers.bridge import protocol
from robot_drivers.bridge.config import BridgeServerConfig
from robot_drivers.bridge.server import BridgeServer
from sim.bridge_arm import SimArm
from tests.bridge.clients import Client


@pytest.fixture(scope="module")
def driving(server):
    """The client driving the arm (one per module: another is refused while it is active)."""
    client = Client(server[2])
    assert client.hello()["ok"]
    yield client
    client.request(op="stop")
    client.close()


class RecordingArm(SimArm):
    """The simulated arm, recording every velocity target it is given (what would reach libfranka)."""

    def __init__(self, options) -> None:
        super().__init__(options)
        self.targets: list[np.ndarray] = []

    def set_velocity_target(self, joint_velocity: np.ndarray) -> None:
        self.targets.append(np.array(joint_velocity, dtype=np.float64))
        super().set_velocity_target(joint_velocity)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    address = f"ipc://{tmp_path_factory.mktemp('bridge')}/bridge"
    config = BridgeServerConfig(address=address, options={"backend": "pybullet", "cameras": []})
    arm = RecordingArm(config.options)
    lines: list[str] = []
    bridge = BridgeServer(config, arm=arm, log=lines.append)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=bridge.serve, kwargs={"should_stop": stop.is_set, "ready": ready.set})
    thread.start()
    assert ready.wait(30)
    yield bridge, arm, address, lines
    stop.set()
    thread.join(timeout=30)


def _targets_are_safe(arm: RecordingArm, caps: np.ndarray) -> None:
    targets = np.array(arm.targets) if arm.targets else np.zeros((0, 7))
    assert np.all(np.isfinite(targets))
    assert np.all(np.abs(targets) <= caps + 1e-12), np.abs(targets).max(axis=0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=3))
def test_any_frames_get_an_error_reply_or_nothing_and_never_move_the_arm(server, frames):
    _bridge, arm, address, _ = server
    client = Client(address)
    try:
        before = len(arm.targets)
        reply = client.raw(frames or [b""], timeout_ms=500) if frames != [] else None
        if reply is not None and reply.get("ok"):  # random bytes that happen to be a valid request
            assert json.loads(frames[0])["op"] in ("state", "status")
        assert len(arm.targets) == before or np.all(arm.targets[-1] == 0.0)
        assert client.request(op="status")["ok"], "the server stopped answering"
    finally:
        client.close()


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=9),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dq=st.one_of(
        st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=7, max_size=7),
        st.lists(JSON_VALUES, max_size=9),
        JSON_VALUES,
    ),
    seq=JSON_VALUES,
    extra=st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=2),
)
def test_adversarial_commands_reach_the_arm_only_filtered_and_finite(server, driving, dq, seq, extra):
    bridge, arm, _, _ = server
    client = driving
    time.sleep(0.03)  # not dropped as too soon after the previous example's command
    body = {"op": "command", "id": 1, "seq": seq, "sent": time.time(), "dq": dq, **extra}
    text = json.dumps(body)  # NaN and Infinity as JSON's NaN / Infinity tokens: read, then the arm stopped
    reply = client.raw([text.encode()])
    assert reply is not None
    numbers = isinstance(dq, list) and len(dq) == 7 and all(type(v) in (int, float) for v in dq)
    values = np.array(dq, dtype=float) if numbers else None
    if values is not None and not np.all(np.isfinite(values)) and reply.get("reason") == "invalid_command":
        assert np.all(arm.targets[-1] == 0.0), "a non-finite command did not stop the arm"
    _targets_are_safe(arm, bridge.config.safety.velocity_caps)


def test_the_driving_client_is_filtered_stopped_on_non_finite_input_and_drops_stale_commands(server, driving):
    bridge, arm, address, lines = server
    caps = bridge.config.safety.velocity_caps
    other = Client(address)
    client = driving
    try:
        assert client.hello()["ok"]
        # Out of range: clipped (and rate-limited) by the robot-side filter.
        reply = client.command(0, [5.0, -5.0, 0, 0, 0, 0, 0])
        assert reply["ok"] and np.all(np.abs(reply["applied"]) <= caps) and "velocity_clip" in reply["events"]
        # A huge number written as JSON (1e999 parses as infinity): the arm is stopped, an error.
        reply = client.raw(
            [b'{"op": "command", "id": 7, "seq": 1, "sent": %f, "dq": [1e999, 0, 0, 0, 0, 0, 0]}' % time.time()]
        )
        assert not reply["ok"] and reply["reason"] == "invalid_command"
        assert np.all(arm.targets[-1] == 0.0)
        # Out of order and stale: dropped, counted, the arm keeps its target.
        assert client.command(5, [0.1] + [0] * 6)["ok"]
        held = arm.targets[-1].copy()
        assert client.command(4, [0.3] + [0] * 6)["dropped"] == "out_of_order"
        assert client.command(6, [0.3] + [0] * 6, sent=time.time() - 5.0)["dropped"] == "stale"
        assert np.all(arm.targets[-1] == held)
        counters = client.request(op="status")["counters"]
        assert counters["dropped_out_of_order"] >= 1 and counters["dropped_stale"] >= 1
        # Another client may read, not drive, while this one commands.
        assert other.request(op="state", images=False)["ok"]
        refused = other.command(100, [0.1] + [0] * 6)
        assert not refused["ok"] and "does not drive the arm" in refused["error"]
        taken = other.hello()
        assert not taken["ok"] and "another client" in taken["error"]
        _targets_are_safe(arm, caps)
        # Faster than the filter's period: dropped.
        assert client.command(20, [0.1] + [0] * 6)["ok"]
        assert client.command(21, [0.1] + [0] * 6, paced=False)["dropped"] == "too_soon"
        # A NaN written as JSON's NaN token from the driving client: recognised, the arm stopped.
        assert client.command(22, [0.2] + [0] * 6)["ok"] and np.any(arm.targets[-1])
        time.sleep(0.03)
        nan = b'{"op": "command", "id": 9, "seq": 23, "sent": %f, "dq": [NaN, 0, 0, 0, 0, 0, 0]}' % time.time()
        reply = client.raw([nan])
        assert not reply["ok"] and reply["reason"] == "invalid_command" and np.all(arm.targets[-1] == 0.0)
        # Numbers no double holds: an error reply, never a crash.
        huge = b'{"op": "command", "id": 10, "seq": 24, "sent": 1%s, "dq": [0, 0, 0, 0, 0, 0, 0]}' % (b"0" * 400)
        assert not client.raw([huge])["ok"]
        wrong_rate = other.request(op="hello", protocol=protocol.PROTOCOL, control_rate_hz=1.0, client_time=time.time())
        assert not wrong_rate["ok"]
        # A stop is answered only once the arm is at rest (also right after an earlier stop).
        assert client.request(op="stop")["ok"]
        for seq in range(30, 40):
            assert client.command(seq, [0.5, 0, 0, 0, 0, 0, -0.5])["ok"]
        assert client.request(op="stop")["ok"]
        assert np.max(np.abs(arm.state().dq)) < 0.01
        # Silence: the watchdog stops the arm, logged.
        time.sleep(0.03)
        assert client.command(40, [0.2] + [0] * 6)["ok"]
        time.sleep(0.3)
        assert np.all(arm.targets[-1] == 0.0)
        assert any(line.startswith("watchdog: no valid command") for line in lines), lines
        assert client.request(op="stop")["ok"]
    finally:
        other.close()
