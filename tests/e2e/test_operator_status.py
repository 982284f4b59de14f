"""Status tells the truth: one state, reported the same way by `ctl` replies, `ctl status`,
telemetry and the daemon's log, against a real daemon on the PyBullet simulator."""

from __future__ import annotations

import signal
import time

from collector.control import send_request, subscribe_telemetry
from store import read_manifest
from tests.e2e.conftest import pandalab, wait_for, wait_until_answering, write_config


def test_pause_and_resume_are_reported_at_once_and_the_rate_falls_to_zero_while_paused(tmp_path):
    config = write_config(tmp_path, episode_steps=400, explorer={"name": "random"})
    address = f"ipc://{tmp_path}/control"
    daemon = pandalab("collect", "--config", str(config))
    try:
        wait_until_answering(address, daemon)
        wait_for(lambda: send_request(address, "status")["step_rate_hz"] > 0)
        paused = send_request(address, "pause")
        assert paused["state"] == "paused" and paused["paused"], paused
        time.sleep(2.5)
        status = send_request(address, "status")
        assert status["state"] == "paused" and status["step_rate_hz"] == 0.0, status
        telemetry = subscribe_telemetry(f"ipc://{tmp_path}/telemetry")
        assert telemetry["state"] == "paused" and telemetry["step_rate_hz"] == 0.0
        resumed = send_request(address, "resume")
        assert resumed["state"] not in ("paused", "held") and not resumed["paused"], resumed
        step = resumed["episode_step"]
        running = wait_for(lambda: (s := send_request(address, "status"))["episode_step"] > step + 5 and s)
        assert running["state"] == "running" and running["step_rate_hz"] > 0, running
        assert running["last_incident"] is None and running["interventions"] >= 0
        stopping = send_request(address, "stop")
        assert stopping["state"] == "stopping" and stopping["stop_requested"]
        assert daemon.wait(timeout=120) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log = daemon.stdout.read()
    assert "paused" in log and "stopped" in log.splitlines()[-1], log


def test_a_second_ctrl_c_stops_the_arm_now_and_exits_and_says_so(tmp_path):
    config = write_config(tmp_path, episode_steps=400, explorer={"name": "random"})
    address = f"ipc://{tmp_path}/control"
    daemon = pandalab("collect", "--config", str(config))
    try:
        wait_until_answering(address, daemon)
        wait_for(lambda: send_request(address, "status")["episode_step"] > 5)
        daemon.send_signal(signal.SIGINT)
        wait_for(lambda: send_request(address, "status")["state"] == "stopping")
        daemon.send_signal(signal.SIGINT)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    last_line = daemon.stdout.read().strip().splitlines()[-1]
    assert "stopped" in last_line and "send resume" not in last_line, last_line
    last = read_manifest(tmp_path / "data" / "e2e")[-1]
    assert last.outcome == "operator_stop" and last.steps < 400
