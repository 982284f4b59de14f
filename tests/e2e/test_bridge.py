"""The bridge end to end, with real processes: `pandalab bridge serve` (its simulated arm runs free in
real time, like a real arm, so stalls and kills have the consequences they have on hardware) and
`pandalab collect` with ``robot.backend: bridge``, killed and stalled for real.  The arm's motion is
measured from the simulator's own joint state, read by an independent client of the bridge
(`Monitor`) at about 500 Hz.  No physical arm here; the libfranka path is tested against franky-sim
elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
import zmq

from collector.control import send_request
from robot_drivers import DriverFault, FaultReason
from robot_drivers.bridge import protocol
from robot_drivers.bridge.client import BridgeDriver
from safety.limits import FRANKA_DDQ_MAX
from store import read_events, read_manifest, verify_session
from tests.bridge.clients import Monitor
from tests.e2e.conftest import REPO, pandalab, wait_for, wait_until_answering

WATCHDOG_S = 0.1
VELOCITY_CAP = 0.5
BRAKING_S = max(VELOCITY_CAP / a for a in FRANKA_DDQ_MAX)
"""Longest stop from the velocity cap at the simulated servo's rate (Franka's published accelerations), s."""
MARGIN_S = 0.06
"""Monitor sampling, the server's loop and scheduling on a busy 2-core machine, s."""
AT_REST = 0.01


def bridge_config(tmp_path, **overrides) -> tuple[str, str]:
    address = f"ipc://{tmp_path}/bridge"
    config = {"address": address, "arm": "sim", "options": {"backend": "pybullet", "cameras": []}}
    config.update(overrides)
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path), address


def session_config(tmp_path, address: str, **overrides) -> str:
    config = {
        "session_id": "bridge",
        "data_root": str(tmp_path / "data"),
        "robot": {"backend": "bridge", "options": {"server": address, "connect_timeout_s": 20}},
        "episode_steps": 40,
        "explorer": {"name": "random_linear"},
        "stop": {"episodes": 1000},
        "store": {"flush_every_steps": 10},
        "control_address": f"ipc://{tmp_path}/control",
        "telemetry_address": f"ipc://{tmp_path}/telemetry",
    }
    config.update(overrides)
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def serve(config_path: str) -> subprocess.Popen:
    return pandalab("bridge", "serve", "--config", config_path)


def _check_stopped_by_watchdog(monitor: Monitor, since: float, horizon_s: float) -> float:
    """The arm came to rest within the watchdog period plus the braking time after ``since`` and
    stayed there, moving no further than its speed at ``since`` implies; returns the time to rest."""
    time.sleep(horizon_s)
    q0, dq0 = monitor.last_before(since)
    t, q, dq = monitor.after(since)
    assert len(t) > 50, "the monitor saw too little"
    speed = np.max(np.abs(dq), axis=1)
    moving = np.flatnonzero(speed >= AT_REST)
    rest_at = t[moving[-1] + 1] - since if moving.size else 0.0
    bound = WATCHDOG_S + BRAKING_S + MARGIN_S
    assert rest_at <= bound, f"at rest {rest_at:.3f} s after, allowed {bound:.3f} s"
    travel = np.max(np.abs(q - q0), axis=0)
    allowed = np.abs(dq0) * (WATCHDOG_S + MARGIN_S) + dq0**2 / (2 * np.array(FRANKA_DDQ_MAX)) + 0.002
    assert np.all(travel <= allowed), (travel, allowed)
    return rest_at


def _stop_process(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.stdout.read() if process.stdout else ""


@pytest.fixture
def bridge(tmp_path):
    config_path, address = bridge_config(tmp_path)
    server = serve(config_path)
    monitor = Monitor(address)
    wait_for(lambda: monitor.samples, timeout_s=30)
    yield server, address, monitor, config_path
    monitor.close()
    _stop_process(server)


def test_a_session_through_the_bridge_records_what_the_simulator_records(tmp_path):
    """Collector -> bridge (spawned by the collector) -> the free-running simulated arm: three
    episodes, planned resets home between them, the data verified, the same fields as a session
    with the simulator in process."""
    config_path, address = bridge_config(tmp_path)
    session = session_config(
        tmp_path,
        address,
        robot={"backend": "bridge", "options": {"server": address, "spawn": config_path}},
        episode_steps=20,
        stop={"episodes": 3},
    )
    done = subprocess.run(
        [sys.executable, "-m", "pandalab", "collect", "--config", session],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    folder = tmp_path / "data" / "bridge"
    assert verify_session(folder).clean
    manifest = read_manifest(folder)
    assert [(e.outcome, e.steps) for e in manifest] == [("complete", 20)] * 3
    import h5py

    with h5py.File(folder / manifest[0].file) as episode:
        keys = set()
        episode.visititems(lambda name, item: keys.add(name) if isinstance(item, h5py.Dataset) else None)
    assert {"obs/q", "obs/dq", "obs/tip_pos", "action", "command", "time", "privileged/cube_pos"} <= keys, keys
    assert "driven by a new client" in done.stderr + done.stdout


def test_killing_the_collector_mid_motion_lets_the_watchdog_stop_the_arm(tmp_path, bridge):
    server, address, monitor, _ = bridge
    collector = pandalab("collect", "--config", session_config(tmp_path, address))
    try:
        wait_for(monitor.moving, timeout_s=60)
        time.sleep(0.3)
        killed_at = time.monotonic()
        collector.kill()
        rest = _check_stopped_by_watchdog(monitor, killed_at, horizon_s=0.8)
    finally:
        collector.kill()
        collector.wait()
    log = _stop_process(server)
    assert "watchdog: no valid command" in log, log
    print(f"at rest {rest:.3f} s after the kill")


def test_a_collector_stalled_for_a_second_is_stopped_by_the_watchdog_and_re_paces(tmp_path, bridge):
    server, address, monitor, _ = bridge
    collector = pandalab("collect", "--config", session_config(tmp_path, address))
    try:
        wait_for(monitor.moving, timeout_s=60)
        time.sleep(0.3)
        stalled_at = time.monotonic()
        collector.send_signal(signal.SIGSTOP)
        _check_stopped_by_watchdog(monitor, stalled_at, horizon_s=1.0)
        before = _status(address)["counters"]["commands"]
        collector.send_signal(signal.SIGCONT)
        time.sleep(1.0)
        after = _status(address)["counters"]["commands"]
        # 20 Hz: about 20 commands in the second after the stall, never a burst of the missed 20.
        assert after - before <= 26, after - before
    finally:
        collector.send_signal(signal.SIGCONT)
        collector.kill()
        collector.wait()
    assert "watchdog: no valid command" in _stop_process(server)


def _status(address: str) -> dict:
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    try:
        sock.send_multipart(protocol.encode({"op": "status", "id": 1}))
        assert sock.poll(2000), "the bridge did not answer status"
        return protocol.decode_reply(sock.recv_multipart())[0]
    finally:
        sock.close(0)


def test_killing_the_bridge_mid_episode_holds_the_collector_until_it_is_back(tmp_path, bridge):
    server, address, _monitor, config_path = bridge
    session = session_config(tmp_path, address)
    collector = pandalab("collect", "--config", session)
    control = f"ipc://{tmp_path}/control"
    try:
        wait_until_answering(control, collector)
        wait_for(lambda: (s := send_request(control, "status")) and s["episodes"] >= 1 and s["episode_step"] > 5)
        server.kill()
        server.wait()
        held = wait_for(
            lambda: (s := send_request(control, "status"))["state"] == "held" and s, timeout_s=30, interval_s=0.1
        )
        assert held["hold_reason"].startswith("link: the robot does not answer"), held
        episodes = held["episodes"]
        restarted = serve(config_path)
        try:
            wait_for(lambda: send_request(control, "status")["episodes"] >= episodes + 2, timeout_s=90)
            send_request(control, "stop")
            assert collector.wait(timeout=60) == 0
        finally:
            _stop_process(restarted)
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
    folder = tmp_path / "data" / "bridge"
    assert verify_session(folder).clean
    outcomes = [entry.outcome for entry in read_manifest(folder)]
    assert "fault" in outcomes and outcomes.count("complete") >= 3, outcomes
    kinds = [(e["kind"], e.get("reason")) for e in read_events(folder)]
    assert ("driver_fault", "timeout") in kinds and ("link_back", None) in kinds, kinds


def test_an_address_that_accepts_and_never_answers_fails_within_the_timeout(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections (the kernel does), never says a word
    port = listener.getsockname()[1]
    try:
        driver = BridgeDriver({"server": f"tcp://127.0.0.1:{port}", "connect_timeout_s": 1.0})
        started = time.monotonic()
        with pytest.raises(DriverFault) as raised:
            driver.connect()
        assert time.monotonic() - started < 2.5
        assert raised.value.reason is FaultReason.timeout
        assert f"tcp://127.0.0.1:{port}" in raised.value.message and "within 1 s" in raised.value.message
        session = session_config(
            tmp_path,
            "",
            robot={"backend": "bridge", "options": {"server": f"tcp://127.0.0.1:{port}", "connect_timeout_s": 1.0}},
        )
        done = subprocess.run(
            [sys.executable, "-m", "pandalab", "collect", "--config", session],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 3, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "no answer from the bridge server" in lines[0], done.stderr
        assert not (tmp_path / "data" / "bridge").exists()
    finally:
        listener.close()


def test_a_bad_bridge_config_is_refused_naming_every_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        json.dumps({"address": "http://x", "arm": "sim", "watchdog_ms": 5, "options": {"backend": "gazebo"}, "x": 1})
    )
    done = subprocess.run(
        [sys.executable, "-m", "pandalab", "bridge", "serve", "--config", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    for field in ("address", "watchdog_ms", "x"):
        assert any(line.startswith(f"{path}: {field}") for line in lines), done.stderr
    assert "Traceback" not in done.stderr


def test_a_camera_of_the_cell_is_recorded_and_its_loss_faults_the_episode_and_holds(tmp_path):
    """`pandalab bridge serve` with the simulated arm and an OpenCV camera reading a video file
    (written here with cv2.VideoWriter, played in real time through cv2.VideoCapture), `pandalab
    collect` through `bridge` recording it.  Mid-episode the file is truncated: the camera's reads
    start failing, the bridge stops the arm, the episode ends as ``fault`` (``camera_error``) and
    the collector holds, answering.  The file written again (the camera "reconnected"), the bridge
    reopens it, and after ``resume`` collection goes on."""
    import cv2
    import h5py

    video = tmp_path / "wrist.avi"

    def write_video(path) -> None:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
        for i in range(30 * 240):  # four minutes: longer than the test, until it is truncated
            frame = np.zeros((120, 160, 3), np.uint8)
            frame[:, :, 1] = i % 200
            writer.write(frame)
        writer.release()

    write_video(video)
    camera = {
        "name": "wrist",
        "source": "opencv",
        "device": str(video),
        "fps": 30,
        "record_width": 32,
        "record_height": 32,
        "max_failed_reads": 30,
        "reopen_after_s": 0.5,
    }
    config_path, address = bridge_config(
        tmp_path, options={"backend": "pybullet", "cameras": []}, cameras=[camera], control_rate_hz=20
    )
    server = serve(config_path)
    session = session_config(
        tmp_path,
        address,
        robot={
            "backend": "bridge",
            "options": {
                "server": address,
                "connect_timeout_s": 30,
                "cameras": [{"name": "wrist", "width": 32, "height": 32}],
            },
        },
        episode_steps=100,
    )
    control = f"ipc://{tmp_path}/control"
    collector = pandalab("collect", "--config", session)
    try:
        wait_until_answering(control, collector)
        wait_for(lambda: (s := send_request(control, "status"))["episodes"] >= 1 and s["episode_step"] > 5, 120)
        running = send_request(control, "status")
        assert running["camera_drops"].keys() == {"wrist"} and 0 <= running["camera_age_s"]["wrist"] < 0.1, running
        os.truncate(video, 0)  # the camera's reads start failing; reopening it fails while it is empty
        held = wait_for(
            lambda: (s := send_request(control, "status"))["state"] == "held" and s, timeout_s=30, interval_s=0.1
        )
        assert held["hold_reason"].startswith("camera: bridge: camera 'wrist' (opencv "), held
        time.sleep(2.0)
        still = send_request(control, "status")  # the daemon holds and answers; it did not die
        assert still["state"] == "held" and still["episodes"] == held["episodes"] and collector.poll() is None
        write_video(tmp_path / "again.avi")
        os.replace(tmp_path / "again.avi", video)  # reconnected: the bridge reopens it by itself
        time.sleep(2.0)
        send_request(control, "resume")
        wait_for(lambda: send_request(control, "status")["episodes"] >= held["episodes"] + 1, timeout_s=120)
        send_request(control, "stop")
        assert collector.wait(timeout=60) == 0
    finally:
        if collector.poll() is None:
            collector.kill()
            collector.wait()
        log = _stop_process(server)
    assert "camera_error: camera 'wrist'" in log and "camera 'wrist' delivers frames again" in log, log
    folder = tmp_path / "data" / "bridge"
    assert verify_session(folder).clean
    manifest = read_manifest(folder)
    outcomes = [entry.outcome for entry in manifest]
    assert outcomes.count("fault") == 1 and outcomes[-1] == "complete", outcomes
    assert outcomes.index("fault") >= 1, outcomes  # complete episodes before the loss, and after
    for entry in manifest:
        with h5py.File(folder / entry.file) as episode:
            images = episode["obs/images/wrist"]
            assert images.shape == (entry.steps, 32, 32, 3) and images.dtype == np.uint8
            frames = json.loads(episode.attrs["metadata"])["camera_frames"]["wrist"]
        assert frames["steps"] == entry.steps and frames["drop_after_s"] == 0.1
        if entry.outcome == "complete":
            assert frames["age_mean_s"] < 0.1, frames
        else:  # the frames aged while the reads failed, before the camera was declared lost
            assert frames["drops"] >= 1 and frames["age_max_s"] > 0.1, frames
    kinds = [(e["kind"], e.get("reason")) for e in read_events(folder)]
    assert ("driver_fault", "camera_error") in kinds, kinds
