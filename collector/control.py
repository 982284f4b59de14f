"""Operator control and telemetry over ZMQ (DESIGN.md, "Operator surface").

- A REP socket takes JSON requests ``{"command": "status" | "pause" | "resume" | "stop" | "estop"}``
  and answers ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.  A malformed request
  (not UTF-8, not JSON, not an object, unknown command, extra fields of the wrong type, too large)
  gets an error reply and changes nothing; the collector keeps running.  Messages over
  `MAX_REQUEST_BYTES` are dropped by ZMQ itself before they are read (the sender's connection is
  closed), so a huge payload cannot exhaust memory.
- A PUB socket publishes telemetry as ``b"telemetry " + JSON`` (step rate, episode, transitions,
  safety events, disk).

`ControlServer.poll` never blocks and never raises on bad input: the collector calls it once per
control step.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import zmq

COMMANDS = ("status", "pause", "resume", "stop", "estop")
MAX_REQUEST_BYTES = 64 * 1024
"""Largest request accepted, bytes; anything larger is dropped by ZMQ (ZMQ_MAXMSGSIZE)."""
TELEMETRY_TOPIC = b"telemetry"


class RequestError(ValueError):
    """A request that cannot be carried out; the message is sent back to the operator."""


def parse_request(raw: bytes) -> dict[str, Any]:
    """Decode and validate one request; `RequestError` says what is wrong."""
    try:
        request = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("request is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise RequestError(f"request is not valid JSON: {error.msg} at position {error.pos}") from None
    if not isinstance(request, dict):
        raise RequestError(f"request must be a JSON object, got {type(request).__name__}")
    command = request.get("command")
    if not isinstance(command, str):
        raise RequestError('request needs a "command" string, e.g. {"command": "status"}')
    if command not in COMMANDS:
        raise RequestError(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    unknown = set(request) - {"command", "reason"}
    if unknown:
        raise RequestError(f"unknown request fields: {sorted(unknown)}")
    if "reason" in request and not isinstance(request["reason"], str):
        raise RequestError('"reason" must be a string')
    return request


class ControlServer:
    """The collector's end: a REP socket for commands and a PUB socket for telemetry."""

    def __init__(self, control_address: str, telemetry_address: str) -> None:
        self.context = zmq.Context()
        self.rep = self.context.socket(zmq.REP)
        self.rep.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        self.rep.setsockopt(zmq.LINGER, 0)
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100)
        try:
            self.rep.bind(control_address)
            self.pub.bind(telemetry_address)
        except zmq.ZMQError as error:
            self.close()
            raise OSError(f"cannot bind control {control_address} / telemetry {telemetry_address}: {error}") from None

    def poll(self, handler: Callable[[dict[str, Any]], dict[str, Any]], max_requests: int = 10) -> int:
        """Answer the requests waiting now (at most ``max_requests``); returns how many."""
        answered = 0
        while answered < max_requests:
            try:
                raw = self.rep.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                reply = {"ok": True, **handler(parse_request(raw))}
            except RequestError as error:
                reply = {"ok": False, "error": str(error)}
            self.rep.send(json.dumps(reply, default=str).encode())
            answered += 1
        return answered

    def publish(self, payload: dict[str, Any]) -> None:
        with contextlib.suppress(zmq.Again):  # no subscriber keeping up: telemetry is best effort
            self.pub.send(TELEMETRY_TOPIC + b" " + json.dumps(payload, default=str).encode(), zmq.NOBLOCK)

    def close(self) -> None:
        self.rep.close(0)
        self.pub.close(0)
        self.context.term()


def send_request(address: str, command: str, timeout_s: float = 3.0, **fields: Any) -> dict[str, Any]:
    """Client side (``pandalab ctl``): send one request and wait for the reply.

    Raises `TimeoutError` when no collector answers within ``timeout_s``.
    """
    context = zmq.Context.instance()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    socket.connect(address)
    try:
        socket.send(json.dumps({"command": command, **fields}).encode())
        return json.loads(socket.recv())
    except zmq.Again:
        raise TimeoutError(f"no collector answered at {address} within {timeout_s:.0f} s") from None
    finally:
        socket.close(0)


def subscribe_telemetry(address: str, timeout_s: float = 3.0) -> dict[str, Any]:
    """Wait for one telemetry message (``pandalab ctl watch``)."""
    context = zmq.Context.instance()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, int(timeout_s * 1000))
    socket.setsockopt(zmq.SUBSCRIBE, TELEMETRY_TOPIC)
    socket.connect(address)
    try:
        message = socket.recv()
        return json.loads(message[len(TELEMETRY_TOPIC) + 1 :])
    except zmq.Again:
        raise TimeoutError(f"no telemetry from {address} within {timeout_s:.0f} s") from None
    finally:
        socket.close(0)
