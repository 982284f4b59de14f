"""The collector daemon attacked as an operator's network would: arbitrary frames and JSON on its
real control socket, a second collector on a session or an address already taken.  The daemon is a
real subprocess on the PyBullet simulator; every check reads its real socket and real files."""

from __future__ import annotations

import json
import shutil

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.control import COMMANDS, MAX_REQUEST_BYTES, send_request
from tests.e2e.conftest import pandalab, wait_for, wait_until_answering, write_config


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One running collector for the module (episodes long enough that it is always collecting)."""
    tmp_path = tmp_path_factory.mktemp("hardening")
    config = write_config(tmp_path, episode_steps=200, explorer={"name": "random"})
    process = pandalab("collect", "--config", str(config))
    address = f"ipc://{tmp_path}/control"
    try:
        wait_until_answering(address, process)
        yield process, address, tmp_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _progress(address: str) -> int:
    status = send_request(address, "status", timeout_s=5)
    return status["steps"] + status["episode_step"]


def _ask(address: str, frames: list[bytes]) -> dict:
    """Send these frames as one request on a fresh REQ socket and return the parsed reply."""
    socket = zmq.Context.instance().socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, 5000)
    socket.connect(address)
    try:
        socket.send_multipart(frames)
        return json.loads(socket.recv())
    finally:
        socket.close(0)


def _is_a_real_command(frames: list[bytes]) -> bool:
    """Whether these frames happen to form a valid request (which would pause or stop the daemon);
    decided here independently of the parser under test."""
    if len(frames) != 1:
        return False
    try:
        value = json.loads(frames[0])
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("command") in COMMANDS


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**60), max_value=10**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
request_like = st.fixed_dictionaries(
    {"command": st.one_of(st.sampled_from([*COMMANDS, "", "STOP", "status "]), json_like)},
    optional={"reason": json_like, "force": json_like},
)


def _encoded(value) -> bytes:
    return json.dumps(value).encode()


lone_surrogate = st.sampled_from([b'"\\ud800"', b'"\\udfff x"', b'"a\\ud83d"'])
huge_number = st.integers(min_value=4400, max_value=20_000).map(lambda n: b"9" * n)
deep_nesting = st.integers(min_value=20, max_value=20_000).map(lambda n: b"[" * n + b"]" * n)
frame = st.one_of(
    st.binary(max_size=64),
    st.just(b""),
    json_like.map(_encoded),
    request_like.map(_encoded),
    lone_surrogate.map(lambda s: b'{"command": "pause", "reason": ' + s + b"}"),
    lone_surrogate.map(lambda s: b'{"command": ' + s + b"}"),
    huge_number.map(lambda digits: b'{"command": "stop", "reason": ' + digits + b"}"),
    deep_nesting,
    deep_nesting.map(lambda nested: b'{"command": "estop", "reason": ' + nested + b"}"),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(frame, min_size=1, max_size=4))
def test_any_frames_get_an_error_reply_and_collection_goes_on(daemon, frames):
    process, address, _ = daemon
    if _is_a_real_command(frames) or sum(len(f) for f in frames) > MAX_REQUEST_BYTES // 2:
        return
    reply = _ask(address, frames)
    assert reply["ok"] is False and isinstance(reply["error"], str) and reply["error"], frames
    assert process.poll() is None, "the daemon died from a request"


def test_after_the_attack_it_is_still_collecting(daemon):
    process, address, _ = daemon
    before = _progress(address)
    wait_for(lambda: _progress(address) > before + 5, timeout_s=60)
    status = send_request(address, "status")
    assert status["state"] in ("running", "training", "resetting") and not status["paused"]
    assert process.poll() is None


@pytest.mark.parametrize(
    "raw",
    [
        [b'{"command": "status"}', b"second frame"],
        [b"", b'{"command": "status"}'],
        [b""],
        [b"[" * 30_000 + b"]" * 30_000],
        [b'{"command": "pause", "reason": ' + b"1" * 5000 + b"}"],
        [b'{"command": "pause", "reason": "\\ud800"}'],
        [b'{"command": "pause", "reason": NaN}'],
    ],
    ids=["multipart", "empty-first-frame", "empty", "deep", "huge-number", "lone-surrogate", "nan"],
)
def test_the_requests_that_used_to_kill_it(daemon, raw):
    process, address, _ = daemon
    reply = _ask(address, raw)
    assert reply["ok"] is False and reply["error"]
    assert process.poll() is None
    assert not send_request(address, "status")["paused"], "a malformed request changed the state"


def _refused(output: str, code: int) -> None:
    assert code == 3, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output


def _names(root):
    """What lies under a data root, less the files a running collector creates as it goes."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if "episode_" not in p.name and not p.name.endswith(".tmp")
    )


def test_a_second_collector_on_an_open_session_is_refused_and_creates_nothing(daemon):
    _, address, tmp_path = daemon
    session = tmp_path / "data" / "e2e"
    # after the first episode the running collector has made every folder it makes (explorer/)
    wait_for(lambda: send_request(address, "status")["episodes"] >= 1, timeout_s=120)
    before = _names(tmp_path / "data")
    other = tmp_path / "second"
    other.mkdir(exist_ok=True)
    config = write_config(
        other,
        data_root=str(tmp_path / "data"),
        control_address=f"ipc://{other}/control",
        telemetry_address=f"ipc://{other}/telemetry",
    )
    second = pandalab("collect", "--config", str(config))
    output = second.communicate(timeout=120)[0]
    _refused(output, second.returncode)
    assert "session e2e is already open" in output and str(session) in output
    after = _names(tmp_path / "data")
    assert after == before, "a refused start changed the data root"
    assert send_request(address, "status")["state"] != "stopped"


def test_a_second_collector_on_a_taken_address_is_refused_before_creating_its_session(daemon, tmp_path):
    _, address, _ = daemon
    config = write_config(
        tmp_path, session_id=None, control_address=address, telemetry_address=f"ipc://{tmp_path}/telemetry"
    )
    second = pandalab("collect", "--config", str(config))
    try:
        output = second.communicate(timeout=120)[0]
    finally:
        if second.poll() is None:
            second.kill()
    _refused(output, second.returncode)
    assert f"control_address {address}" in output
    assert not (tmp_path / "data").exists(), "the session folder was created before the bind failed"
    assert send_request(address, "status")["state"] != "stopped", "the first collector was disturbed"


def test_a_tcp_port_already_bound_is_refused_naming_it(tmp_path):
    blocker = zmq.Context.instance().socket(zmq.REP)
    port = blocker.bind_to_random_port("tcp://127.0.0.1")
    try:
        config = write_config(
            tmp_path,
            control_address=f"ipc://{tmp_path}/control",
            telemetry_address=f"tcp://127.0.0.1:{port}",
        )
        process = pandalab("collect", "--config", str(config))
        output = process.communicate(timeout=120)[0]
    finally:
        blocker.close(0)
    _refused(output, process.returncode)
    assert f"telemetry_address tcp://127.0.0.1:{port}" in output
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "override, field",
    [
        ({"safety": {"table_height": float("nan")}}, "safety.table_height"),
        ({"safety": {"workspace_max": [0.7, 0.3, float("inf")]}}, "safety.workspace_max[2]"),
        ({"home_q": [0.0, -0.3, 0.0, -2.2, 0.0, 2.0, float("nan")]}, "home_q[6]"),
        ({"store": {"free_space_floor_mb": float("nan")}}, "store.free_space_floor_mb"),
        ({"seed": 2**70}, "seed"),
        ({"store": {"flush_every_steps": 2_000_000}}, "store.flush_every_steps"),
        ({"control_address": "tcp://127.0.0.1"}, "control_address"),
        ({"control_address": "not an address"}, "control_address"),
        ({"telemetry_address": "SAME"}, "telemetry_address"),
        ({"session_id": ".."}, "session_id"),
        ({"robot": {"backend": "pybullet", "options": {"cameras": [{"name": "front", "width": ".nan"}]}}}, "width"),
    ],
)
def test_configs_that_used_to_be_accepted_are_refused_before_anything_exists(tmp_path, override, field):
    if override.get("telemetry_address") == "SAME":
        override = {"telemetry_address": f"ipc://{tmp_path}/control"}
    config = write_config(tmp_path, **override)
    process = pandalab("collect", "--config", str(config))
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 2, output
    assert field in output and "Traceback" not in output, output
    assert all(line.startswith(str(config)) for line in output.splitlines() if line.strip()), output
    assert not (tmp_path / "data").exists()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)


def test_detach_reports_a_daemon_that_failed_to_start_with_its_reason_and_code(daemon):
    _, _, tmp_path = daemon
    other = tmp_path / "detached"
    other.mkdir(exist_ok=True)
    config = write_config(
        other,
        data_root=str(tmp_path / "data"),
        control_address=f"ipc://{other}/control",
        telemetry_address=f"ipc://{other}/telemetry",
    )
    launcher = pandalab("collect", "--config", str(config), "--detach", "--log", str(other / "collector.log"))
    output = launcher.communicate(timeout=120)[0]
    assert launcher.returncode == 3, output
    assert "collector failed to start (exit 3)" in output and "session e2e is already open" in output
    assert "collector started" not in output
