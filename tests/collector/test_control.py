"""Operator control over real ZMQ sockets on loopback: good requests are answered, malformed ones
get an error reply and change nothing."""

import contextlib
import json
import threading

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.control import ControlServer, RequestError, parse_request, send_request, subscribe_telemetry


def test_parse_accepts_known_commands():
    assert parse_request(b'{"command": "pause"}') == {"command": "pause"}
    assert parse_request(b'{"command": "estop", "reason": "cable"}')["reason"] == "cable"


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\xff\xfe", "UTF-8"),
        (b"{not json", "valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"cmd": "stop"}', '"command"'),
        (b'{"command": 3}', '"command"'),
        (b'{"command": "selfdestruct"}', "unknown command"),
        (b'{"command": "stop", "force": true}', "unknown request fields"),
        (b'{"command": "stop", "reason": 5}', "reason"),
    ],
)
def test_parse_rejects_malformed_requests_saying_why(raw, message):
    with pytest.raises(RequestError, match=message):
        parse_request(raw)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_parse_never_raises_anything_but_request_error(raw):
    with contextlib.suppress(RequestError):  # any other exception fails the test
        parse_request(raw)


@pytest.fixture
def server(tmp_path):
    control = f"ipc://{tmp_path}/control"
    telemetry = f"ipc://{tmp_path}/telemetry"
    server = ControlServer(control, telemetry)
    server.addresses = (control, telemetry)
    yield server
    server.close()


def _serve_in_background(server, handler, stop):
    def loop():
        while not stop.is_set():
            server.poll(handler)
            stop.wait(0.001)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_requests_round_trip_and_malformed_ones_change_nothing(server):
    seen = []

    def handler(request):
        seen.append(request["command"])
        return {"state": "running"}

    stop = threading.Event()
    thread = _serve_in_background(server, handler, stop)
    try:
        assert send_request(server.addresses[0], "status") == {"ok": True, "state": "running"}
        context = zmq.Context.instance()
        socket = context.socket(zmq.REQ)
        socket.setsockopt(zmq.RCVTIMEO, 3000)
        socket.connect(server.addresses[0])
        for raw in (b"garbage", b'{"command": "launch"}', b"[]", json.dumps({"command": None}).encode()):
            socket.send(raw)
            reply = json.loads(socket.recv())
            assert reply["ok"] is False and reply["error"]
        socket.close(0)
        assert seen == ["status"], "a malformed request reached the collector"
        assert send_request(server.addresses[0], "pause")["ok"] is True
    finally:
        stop.set()
        thread.join()


def test_oversized_request_is_dropped_and_the_server_keeps_answering(server):
    stop = threading.Event()
    thread = _serve_in_background(server, lambda request: {}, stop)
    try:
        context = zmq.Context.instance()
        socket = context.socket(zmq.REQ)
        socket.setsockopt(zmq.RCVTIMEO, 500)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(server.addresses[0])
        socket.send(b'{"command": "status", "reason": "' + b"x" * 5_000_000 + b'"}')
        with pytest.raises(zmq.Again):
            socket.recv()
        socket.close(0)
        assert send_request(server.addresses[0], "status")["ok"] is True
    finally:
        stop.set()
        thread.join()


def test_client_times_out_when_nobody_answers(tmp_path):
    with pytest.raises(TimeoutError, match="no collector answered"):
        send_request(f"ipc://{tmp_path}/nobody", "status", timeout_s=0.2)


def test_telemetry_reaches_a_subscriber(server):
    stop = threading.Event()

    def publish():
        while not stop.is_set():
            server.publish({"episode": 3, "steps": 1200})
            stop.wait(0.02)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        assert subscribe_telemetry(server.addresses[1]) == {"episode": 3, "steps": 1200}
    finally:
        stop.set()
        thread.join()


@pytest.mark.parametrize("command", ["status", "watch", "pause", "resume", "stop", "estop"])
def test_every_ctl_command_has_its_own_help_saying_what_it_does(command, capsys):
    from pandalab.cli import CTL_COMMANDS, build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["ctl", command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"usage: pandalab ctl {command}" in text and "--config" in text and "--address" in text
    assert "".join(CTL_COMMANDS[command][1].split()) in "".join(text.split())  # argparse wraps lines
    assert ("--reason" in text) == (command not in ("status", "watch"))
