"""`pandalab fleet` (pandalab/fleet.py): simulated collectors as Ray actors, and `ctl --fleet`.

The fast tests need no Ray: how worker configs are derived, the one-line refusals, and `ctl --fleet`
against stand-in collectors. The end-to-end test runs the real command on a local Ray with two
robosuite workers (one 84x84 camera each, rendered through EGL in each actor's own process), kills
one worker's process with SIGKILL after it finished episodes, and checks that the worker was
restarted, that its session resumed (no finished episode lost), that both sessions finished and
verify, that `ctl status --fleet` listed both, and that no Ray process is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest
import yaml

from collector.config import parse_session_config
from pandalab.cli import main
from pandalab.fleet import FleetError, fleet_request, worker_configs
from store import read_manifest, verify_session

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(**fields):
    data = {"session_id": "fl", "robot": {"backend": "pybullet", "options": {"cameras": []}}} | fields
    return parse_session_config(data)


# ------------------------------------------------------------------------------ worker configs


def test_workers_get_distinct_sessions_seeds_and_addresses():
    configs = worker_configs(_config(seed=7), 3)  # tcp://127.0.0.1:5555 / :5556
    assert [c.session_id for c in configs] == ["fl_w0", "fl_w1", "fl_w2"]
    assert [c.seed for c in configs] == [7, 8, 9]
    addresses = [a for c in configs for a in (c.control_address, c.telemetry_address)]
    assert len(set(addresses)) == 6, addresses
    assert configs[0].control_address == "tcp://127.0.0.1:5555"  # worker 0 keeps the config's own
    assert all(pathlib.Path(c.data_root).is_absolute() for c in configs)  # the actors' cwd may differ
    far = worker_configs(_config(control_address="tcp://*:6000", telemetry_address="tcp://*:6010"), 4)
    far_addresses = [a for c in far for a in (c.control_address, c.telemetry_address)]
    assert len(set(far_addresses)) == 8, far_addresses
    ipc = worker_configs(_config(control_address="ipc:///tmp/x-c", telemetry_address="ipc:///tmp/x-t"), 2)
    assert [c.control_address for c in ipc] == ["ipc:///tmp/x-c_w0", "ipc:///tmp/x-c_w1"]


def test_bad_fleets_are_one_line_errors():
    with pytest.raises(FleetError, match="not simulated"):
        worker_configs(_config(robot={"backend": "bridge"}), 2)
    with pytest.raises(FleetError, match="65535"):
        worker_configs(_config(control_address="tcp://127.0.0.1:65534", telemetry_address="tcp://127.0.0.1:65535"), 2)
    with pytest.raises(FleetError, match="exceeds"):
        worker_configs(_config(seed=2**32 - 1), 2)
    with pytest.raises(FleetError, match="at least 1"):
        worker_configs(_config(), 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["fleet", "--config", "configs/hardware_panda.yaml", "--workers", "2"],  # a real arm
        ["fleet", "--config", "configs/sim_bridge.yaml", "--workers", "2"],  # a bridge: not simulated here
        ["fleet", "--config", "configs/sim_reach_joint.yaml", "--workers", "0"],
        ["fleet", "--config", "no/such.yaml", "--workers", "2"],
        ["fleet", "--config", "configs/sim_reach_joint.yaml", "--workers", "2", "--max-restarts", "-1"],
        ["fleet", "--config", "configs/sim_reach_joint.yaml", "--workers", "2", "--address", "no-port"],
        ["ctl", "status", "--fleet", "no/such/folder"],
        ["ctl", "watch", "--fleet", "."],
    ],
)
def test_the_cli_refuses_bad_input_in_one_line_before_ray_starts(argv, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(sys.modules, "ray", None)  # importing Ray would fail: refused before Ray starts
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_an_unreachable_cluster_is_refused_at_once(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray would retry an unreachable head for minutes
    argv = ["fleet", "--config", "configs/sim_reach_joint.yaml", "--workers", "2", "--address", "127.0.0.1:1"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "no Ray head answers" in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------------------------- ctl --fleet


def test_ctl_fleet_asks_every_listed_worker_and_says_which_did_not_answer(tmp_path, capsys):
    from collector.control import ControlServer

    servers = [ControlServer(f"ipc://{tmp_path}/c{k}", f"ipc://{tmp_path}/t{k}") for k in range(2)]
    asked = []

    def handler(k):
        def handle(request):
            asked.append((k, request["command"]))
            return {"session": f"fl_w{k}", "state": "paused", "episodes": 2, "steps": 40, "step_rate_hz": 0.0}

        return handle

    done = threading.Event()

    def serve():
        while not done.is_set():
            for k, server in enumerate(servers):
                server.poll(handler(k))
            time.sleep(0.01)

    workers = [{"worker": k, "session": f"fl_w{k}", "control_address": f"ipc://{tmp_path}/c{k}"} for k in range(2)]
    state = tmp_path / "fl.fleet.json"
    state.write_text(json.dumps({"fleet": "fl", "state": "running", "started_at": 1.0, "workers": workers}))
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        reply = fleet_request(tmp_path, "pause", 2.0, reason="lunch")  # the data root finds the state file
        assert reply["ok"] and reply["answered"] == 2 and reply["steps"] == 80
        assert sorted(asked) == [(0, "pause"), (1, "pause")]
        assert [row["session"] for row in reply["workers"]] == ["fl_w0", "fl_w1"]
        # a third worker that does not answer: listed with its error, exit 1
        state.write_text(
            json.dumps({"fleet": "fl", "workers": [*workers, {"worker": 2, "control_address": f"ipc://{tmp_path}/c9"}]})
        )
        assert main(["ctl", "status", "--fleet", str(state), "--timeout", "0.5"]) == 1
        printed = json.loads(capsys.readouterr().out)
        assert [row["ok"] for row in printed["workers"]] == [True, True, False]
        assert "no collector answered" in printed["workers"][2]["error"]
        assert main(["ctl", "stop", "--fleet", str(state), "--timeout", "0.5"]) == 1
        assert (tmp_path / "fl.fleet.stop").is_file()  # the driver restarts nobody after a fleet stop
    finally:
        done.set()
        thread.join()
        for server in servers:
            server.close()


# ---------------------------------------------------------------------------- end to end on Ray


EPISODES = 8
EPISODE_STEPS = 20


def _ray_processes(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "environ"]):
        with contextlib.suppress(psutil.Error, TypeError):
            text = " ".join(process.info["cmdline"] or []) + " " + (process.info["environ"] or {}).get("RAY_TMPDIR", "")
            if marker in text and process.pid != os.getpid():
                found.append(process)
    return found


def _wait_for(what, condition, process, out_path, timeout):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"the fleet exited {process.returncode} before {what}:\n{out_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s:\n{out_path.read_text()[-3000:]}")
        time.sleep(0.2)


def _read_state(path: pathlib.Path) -> dict | None:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


@pytest.mark.slow
def test_a_fleet_of_two_survives_a_killed_worker_and_both_sessions_finish(tmp_path):
    pytest.importorskip("ray")
    short = pathlib.Path(tempfile.mkdtemp(prefix="plf", dir="/tmp"))  # ipc:// and Ray's sockets need short paths
    data = tmp_path / "data"
    config = {
        "session_id": "fl",
        "data_root": str(data),
        "robot": {"backend": "robosuite", "options": {"cameras": [{"name": "front", "width": 84, "height": 84}]}},
        "action_space": "joint_velocity",
        "episode_steps": EPISODE_STEPS,
        "explorer": {"name": "random_linear"},
        "stop": {"episodes": EPISODES},
        "store": {"flush_every_steps": 5},
        "control_address": f"ipc://{short}/c",
        "telemetry_address": f"ipc://{short}/t",
    }
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, RAY_TMPDIR=str(short), PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    out_path = tmp_path / "fleet.out"
    state_file = data / "fl.fleet.json"
    with open(out_path, "w") as out:
        fleet = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pandalab",
                "fleet",
                "--config",
                "fleet.yaml",
                "--workers",
                "2",
                "--report-every",
                "0",
            ],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        state = _wait_for(
            "both workers' pids",
            lambda: (s := _read_state(state_file)) and all(w.get("pid") for w in s["workers"]) and s,
            fleet,
            out_path,
            90,
        )
        assert len(_ray_processes(str(short))) >= 3  # the leftover check below sees this Ray's processes
        sessions = [pathlib.Path(w["session_dir"]) for w in state["workers"]]
        assert [p.name for p in sessions] == ["fl_w0", "fl_w1"]
        _wait_for("two finished episodes", lambda: len(read_manifest(sessions[1])) >= 2, fleet, out_path, 90)

        listed = fleet_request(state_file, "status", 5.0)  # what `pandalab ctl status --fleet` prints
        assert [row["session"] for row in listed["workers"]] == ["fl_w0", "fl_w1"], listed
        assert listed["answered"] == 2 and {row["reply"]["pid"] for row in listed["workers"]} == {
            w["pid"] for w in state["workers"]
        }

        before = {info.index: info.sha256 for info in read_manifest(sessions[1])}
        killed = state["workers"][1]["pid"]
        os.kill(killed, signal.SIGKILL)
        assert fleet.wait(timeout=150) == 0, out_path.read_text()[-3000:]
    finally:
        if fleet.poll() is None:
            fleet.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                fleet.wait(timeout=60)
        if fleet.poll() is None:
            fleet.kill()
            fleet.wait()
        deadline = time.monotonic() + 20
        while _ray_processes(str(short)) and time.monotonic() < deadline:
            time.sleep(0.5)
        leftover = _ray_processes(str(short))
        for process in leftover:  # only the processes of this test's Ray, by pid
            with contextlib.suppress(psutil.Error):
                process.kill()
        shutil.rmtree(short, ignore_errors=True)
    assert not leftover, f"Ray processes left behind: {[p.info['cmdline'] for p in leftover]}"

    output = out_path.read_text()
    assert "Traceback" not in output, output[-3000:]
    assert f"worker 1 died (pid {killed})" in output and "(restart 1)" in output, output[-3000:]
    final = json.loads(state_file.read_text())
    assert final["state"] == "finished"
    assert [w["restarts"] for w in final["workers"]] == [0, 1]
    assert final["workers"][1]["pid"] != killed
    for session in sessions:
        report = verify_session(session)
        assert report.clean, report.summary()
        assert len(read_manifest(session)) == EPISODES  # both finished their stop condition
    after = {info.index: info.sha256 for info in read_manifest(sessions[1])}
    assert all(after.get(index) == sha for index, sha in before.items())  # no finished episode lost
    starts = [
        json.loads(line)
        for line in (sessions[1] / "events.jsonl").read_text().splitlines()
        if '"session_start"' in line
    ]
    assert [s["resumed"] for s in starts] == [False, True], starts  # the same session, resumed by salvage
    assert starts[1]["episodes"] >= len(before)
