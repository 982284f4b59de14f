"""The collector daemon as a real subprocess on the PyBullet simulator, controlled over real ZMQ
sockets, killed with real signals, its episodes read back from real files."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import time

import numpy as np
import pytest
import zmq

from collector.control import MAX_REQUEST_BYTES, send_request
from store import iter_episodes, read_events, read_manifest, verify_session
from tests.e2e.conftest import pandalab, wait_for, wait_until_answering, write_config


def _session_dir(tmp_path):
    return tmp_path / "data" / "e2e"


def test_runs_to_its_stop_condition_and_a_restart_resumes_numbering_and_explorer(tmp_path):
    config = write_config(tmp_path, stop={"episodes": 2})
    first = pandalab("collect", "--config", str(config))
    assert first.wait(timeout=120) == 0, first.stdout.read()
    write_config(tmp_path, stop={"episodes": 4})
    second = pandalab("collect", "--config", str(config))
    assert second.wait(timeout=120) == 0, second.stdout.read()

    session = _session_dir(tmp_path)
    manifest = read_manifest(session)
    assert [e.index for e in manifest] == [0, 1, 2, 3]
    assert all(e.outcome == "complete" and e.steps == 40 for e in manifest)
    assert verify_session(session).clean
    kinds = [event["kind"] for event in read_events(session)]
    assert kinds.count("session_start") == 2 and "explorer_resumed" in kinds
    for episode in iter_episodes([session]):
        q, command, action = episode.load("obs/q"), episode.load("command"), episode.load("action")
        assert q.shape == (40, 7) and episode.load("obs/images/front").shape == (40, 24, 24, 3)
        assert np.all(np.abs(command) <= 0.5 + 1e-9), "a command above the velocity cap was sent"
        assert action.shape == (40, 7)
        assert episode.load("privileged/cube_top_face").shape == (40,)


def test_operator_commands_on_a_running_daemon(tmp_path):
    config = write_config(tmp_path)
    daemon = pandalab("collect", "--config", str(config))
    address = f"ipc://{tmp_path}/control"
    try:
        wait_until_answering(address, daemon)
        wait_for(
            lambda: send_request(address, "status")["steps"] > 0 or send_request(address, "status")["episode_step"] > 5
        )

        assert send_request(address, "pause", reason="adjusting the camera")["ok"]
        wait_for(lambda: send_request(address, "status")["state"] == "paused")
        frozen = send_request(address, "status")
        time.sleep(0.5)
        later = send_request(address, "status")
        assert (later["episode"], later["episode_step"]) == (frozen["episode"], frozen["episode_step"])

        send_request(address, "resume")
        wait_for(lambda: send_request(address, "status")["episode_step"] != later["episode_step"])

        estopped = send_request(address, "estop", reason="test")
        assert estopped["ok"] and estopped["paused"]
        wait_for(lambda: send_request(address, "status")["state"] == "held")
        wait_for(lambda: any(e.outcome == "operator_stop" for e in read_manifest(_session_dir(tmp_path))))

        send_request(address, "resume")
        wait_for(lambda: send_request(address, "status")["state"] == "running")
        assert send_request(address, "stop")["stop_requested"]
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    manifest = read_manifest(_session_dir(tmp_path))
    assert manifest[-1].outcome == "complete" and manifest[-1].steps == 40, "stop must finish the episode"
    operator = [e for e in read_events(_session_dir(tmp_path)) if e["kind"] == "operator"]
    assert [e["command"] for e in operator] == ["pause", "resume", "estop", "resume", "stop"]
    assert operator[0]["reason"] == "adjusting the camera"


def _malformed_requests(rng: random.Random, n: int):
    for i in range(n):
        kind = i % 6
        if kind == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        elif kind == 1:
            yield b'{"command": ' + str(rng.random()).encode() + b"}"
        elif kind == 2:
            yield json.dumps({"command": rng.choice(["launch", "STOP", "", "pause "]), "x": 1}).encode()
        elif kind == 3:
            yield json.dumps(rng.choice([[1, 2], "status", None, 3.5, {"cmd": "stop"}])).encode()
        elif kind == 4:
            yield json.dumps({"command": "status", "reason": rng.choice([1, [], {}, None])}).encode()
        else:
            yield b'{"command": "stop", "reason": "' + b"y" * rng.randint(70_000, 400_000) + b'"}'


def test_a_thousand_malformed_requests_leave_it_running_and_answering(tmp_path):
    config = write_config(tmp_path)
    daemon = pandalab("collect", "--config", str(config))
    address = f"ipc://{tmp_path}/control"
    try:
        wait_until_answering(address, daemon)
        context = zmq.Context.instance()
        errors = dropped = 0
        socket = None
        for raw in _malformed_requests(random.Random(0), 1000):
            if socket is None:
                socket = context.socket(zmq.REQ)
                socket.setsockopt(zmq.LINGER, 0)
                socket.connect(address)
            # an answer comes within milliseconds; an oversized request never gets one
            socket.setsockopt(zmq.RCVTIMEO, 2000 if len(raw) <= MAX_REQUEST_BYTES else 100)
            socket.send(raw)
            try:
                reply = json.loads(socket.recv())
                assert reply["ok"] is False and reply["error"], raw[:100]
                errors += 1
            except zmq.Again:  # over the size limit: dropped by ZMQ, the socket must be replaced
                dropped += 1
                socket.close(0)
                socket = None
        assert errors + dropped == 1000
        assert dropped == sum(len(raw) > MAX_REQUEST_BYTES for raw in _malformed_requests(random.Random(0), 1000))
        status = send_request(address, "status")
        assert status["state"] == "running" and not status["paused"] and not status["stop_requested"]
        assert daemon.poll() is None
        send_request(address, "stop")
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()


def test_sigterm_finishes_the_episode_and_a_second_sigint_is_an_estop(tmp_path):
    config = write_config(tmp_path, episode_steps=400)
    address = f"ipc://{tmp_path}/control"
    daemon = pandalab("collect", "--config", str(config))
    wait_until_answering(address, daemon)
    wait_for(lambda: send_request(address, "status")["episode_step"] > 5)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=120) == 0
    first = read_manifest(_session_dir(tmp_path))
    assert [(e.outcome, e.steps) for e in first] == [("complete", 400)]

    daemon = pandalab("collect", "--config", str(config))
    wait_until_answering(address, daemon)
    wait_for(lambda: send_request(address, "status")["episode_step"] > 5)
    daemon.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two signals sent at once can reach Python's handler as one
    daemon.send_signal(signal.SIGINT)
    assert daemon.wait(timeout=60) == 0
    last = read_manifest(_session_dir(tmp_path))[-1]
    assert last.outcome == "operator_stop" and last.steps < 400


def test_kill_minus_nine_ten_times_loses_no_finished_episode(tmp_path):
    """Kill -9 at random moments (during an episode, a write, a reset), restart each time."""
    config = write_config(tmp_path)
    session = _session_dir(tmp_path)
    rng = random.Random(1)
    finished_before: dict[int, str] = {}
    for _ in range(10):
        daemon = pandalab("collect", "--config", str(config))
        wait_until_answering(f"ipc://{tmp_path}/control", daemon)
        time.sleep(rng.uniform(0.2, 2.5))
        daemon.kill()
        daemon.wait()
        for info in read_manifest(session):
            finished_before.setdefault(info.index, info.sha256)
    final = pandalab("collect", "--config", str(write_config(tmp_path, stop={"episodes": len(finished_before) + 1})))
    assert final.wait(timeout=120) == 0, final.stdout.read()

    report = verify_session(session)
    assert report.clean, report.summary()
    manifest = read_manifest(session)
    indices = [e.index for e in manifest]
    assert len(indices) == len(set(indices)), "an episode index was used twice"
    listed = {e.index: e.sha256 for e in manifest}
    for index, sha in finished_before.items():
        assert listed.get(index) == sha, f"finished episode {index} was lost or changed"
    salvaged = [e for e in manifest if e.outcome == "crash_salvaged"]
    assert salvaged, "no interrupted episode was salvaged in ten kills"
    for info in salvaged:
        # whole flushed chunks only: every 10 steps, or after 1 s when the loop is slow (a loaded
        # machine); all 40 when the kill came while the finished episode was being written
        assert 0 < info.steps <= 40, "a salvaged episode holds the steps flushed before the kill"


@pytest.mark.parametrize(
    "override, named",
    [
        ({"episode_stpes": 10}, ["episode_stpes"]),
        ({"control_rate_hz": -20, "seed": "one"}, ["control_rate_hz", "seed"]),
        ({"safety": {"workspace_min": [0.9, 0.0, 0.0], "workspace_max": [0.2, 0.3, 0.4]}}, ["safety.workspace_max"]),
        ({"robot": {"backend": "gazebo"}}, ["robot.backend"]),
        ({"robot": {"backend": "pybullet", "options": {"cameras": [{"name": "wrist"}]}}}, ["robot.options.cameras"]),
        ({"explorer": {"name": "gep", "parameters": {"bootstrap": 3}}}, ["explorer.parameters.bootstrap"]),
    ],
)
def test_bad_configs_are_rejected_naming_every_field_and_nothing_is_created(tmp_path, override, named):
    config = write_config(tmp_path, **override)
    process = pandalab("collect", "--config", str(config))
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 2, output
    for field in named:
        assert field in output, output
    assert not (tmp_path / "data").exists()


def test_a_nearly_full_disk_stops_the_arm_and_holds_with_a_clear_message(tmp_path):
    config = write_config(tmp_path, store={"flush_every_steps": 10, "free_space_floor_mb": 1e9})
    address = f"ipc://{tmp_path}/control"
    daemon = pandalab("collect", "--config", str(config))
    try:
        wait_until_answering(address, daemon)
        status = wait_for(lambda: (s := send_request(address, "status"))["state"] == "held" and s)
        assert "disk nearly full" in status["hold_reason"]
        time.sleep(0.5)
        assert send_request(address, "status")["episode_step"] == status["episode_step"], "the arm kept going"
        send_request(address, "stop")
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert any(e["kind"] == "store_hold" for e in read_events(_session_dir(tmp_path)))
    assert verify_session(_session_dir(tmp_path)).clean, "data recorded before the hold must be kept"


def test_detach_starts_a_background_daemon_that_logs_and_answers(tmp_path):
    config = write_config(tmp_path)
    log = tmp_path / "collector.log"
    launcher = pandalab("collect", "--config", str(config), "--detach", "--log", str(log))
    output = launcher.communicate(timeout=60)[0]
    assert launcher.returncode == 0 and "collector started: pid" in output
    pid = int(output.split("pid ")[1].split(",")[0])
    address = f"ipc://{tmp_path}/control"
    try:
        wait_for(lambda: _answers(address), timeout_s=60)
        wait_for(lambda: send_request(address, "status")["steps"] > 0)
        send_request(address, "stop")
        wait_for(lambda: not pathlib.Path(f"/proc/{pid}").exists() or _is_zombie(pid), timeout_s=60)
    finally:
        if pathlib.Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    assert "stopped" in log.read_text()


def _answers(address):
    try:
        return send_request(address, "status", timeout_s=0.5)
    except TimeoutError:
        return None


def _is_zombie(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
