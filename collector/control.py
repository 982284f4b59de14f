"""Operator control and telemetry over ZMQ (DESIGN.md, "Operator surface").

- A REP socket takes JSON requests ``{"command": "status" | "pause" | "resume" | "stop" | "estop"}``
  and answers ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.  A malformed request
  gets an error reply and changes nothing; the collector keeps running.  Malformed means anything:
  several frames or an empty one, bytes that are not UTF-8, JSON that is invalid, nested deeper than
  `MAX_REQUEST_DEPTH`, holds a number of thousands of digits or a lone UTF-16 surrogate, is not an
  object, names an unknown command or field, or has a field of the wrong type.  Messages over
  `MAX_REQUEST_BYTES` are dropped by ZMQ itself before they are read (the sender's connection is
  closed), so a huge payload cannot exhaust memory.  Even a handler that fails is answered with an
  error: `ControlServer.poll` never raises.
- A PUB socket publishes telemetry as ``b"telemetry " + JSON`` (step rate, episode, recorded
  steps, safety events, disk).

`ControlServer.poll` never blocks and never raises on bad input: the collector calls it once per
control step.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket as socket_module
from collections.abc import Callable
from typing import Any

import zmq

COMMANDS = ("status", "pause", "resume", "stop", "estop")
MAX_REQUEST_BYTES = 64 * 1024
"""Largest request accepted, bytes; anything larger is dropped by ZMQ (ZMQ_MAXMSGSIZE)."""
MAX_REQUEST_DEPTH = 8
"""Deepest nesting of arrays and objects a request may have (a valid one has depth 1)."""
MAX_REASON_CHARS = 1000
"""Longest ``reason`` kept in the event log, characters."""
TELEMETRY_TOPIC = b"telemetry"


class AddressUnavailable(OSError):
    """A control or telemetry address that cannot be bound (taken, or not ours); one line."""


class RequestError(ValueError):
    """A request that cannot be carried out; the message is sent back to the operator."""


def _nesting_depth(text: str) -> int:
    """Deepest nesting of JSON arrays/objects in ``text``, counting brackets outside strings; a
    linear scan, so a request nested thousands deep is refused before the parser recurses."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str) -> None:
    raise RequestError(f"request holds {name}, which is not a JSON number")


def parse_request(raw: bytes | list[bytes]) -> dict[str, Any]:
    """Decode and validate one request (its frames as received); `RequestError` says what is wrong.

    Never raises anything else, whatever the bytes."""
    if isinstance(raw, list):
        if len(raw) != 1:
            raise RequestError(f"a request is one message frame, got {len(raw)}")
        raw = raw[0]
    if not raw:
        raise RequestError('empty request; send JSON such as {"command": "status"}')
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("request is not UTF-8 text") from None
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_REQUEST_DEPTH and _nesting_depth(text) > MAX_REQUEST_DEPTH:
        raise RequestError(f"request is nested deeper than {MAX_REQUEST_DEPTH} levels")
    try:
        request = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise RequestError(f"request is not valid JSON: {error.msg} at position {error.pos}") from None
    except (ValueError, RecursionError) as error:  # e.g. an integer of more than 4300 digits
        raise RequestError(f"request is not usable JSON: {str(error).splitlines()[0][:120]}") from None
    if not isinstance(request, dict):
        raise RequestError(f"request must be a JSON object, got {type(request).__name__}")
    command = request.get("command")
    if not isinstance(command, str):
        raise RequestError('request needs a "command" string, e.g. {"command": "status"}')
    if command not in COMMANDS:
        raise RequestError(f"unknown command {ascii(command)[:80]}; known: {', '.join(COMMANDS)}")
    unknown = set(request) - {"command", "reason"}
    if unknown:
        raise RequestError(f"unknown request fields: {ascii(sorted(unknown))[:200]}")
    if "reason" in request:
        reason = request["reason"]
        if not isinstance(reason, str):
            raise RequestError('"reason" must be a string')
        if len(reason) > MAX_REASON_CHARS:
            raise RequestError(f'"reason" is longer than {MAX_REASON_CHARS} characters')
        try:
            reason.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError('"reason" holds a lone UTF-16 surrogate, not text') from None
    return request


def _refuse_live_ipc_socket(address: str) -> None:
    """ZMQ binds an ``ipc://`` path by replacing whatever socket file is there, which would take
    the address from a collector that is still running: refuse when something answers on it
    (a stale file left by a killed process is replaced as usual)."""
    if not address.startswith("ipc://"):
        return
    path = address[len("ipc://") :]
    if not os.path.exists(path):
        return
    probe = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return  # nobody listening: a stale socket file
    finally:
        probe.close()
    raise zmq.ZMQError(zmq.EADDRINUSE)


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
        self.errors = 0
        """Requests the handler failed on, or that could not be answered (each answered with an error)."""
        self.last_error: str | None = None
        for field, socket, address in (
            ("control_address", self.rep, control_address),
            ("telemetry_address", self.pub, telemetry_address),
        ):
            try:
                _refuse_live_ipc_socket(address)
                socket.bind(address)
            except zmq.ZMQError as error:
                self.close()
                taken = " (another collector is using it?)" if error.errno == zmq.EADDRINUSE else ""
                raise AddressUnavailable(f"{field} {address} cannot be bound: {error}{taken}") from None

    def poll(self, handler: Callable[[dict[str, Any]], dict[str, Any]], max_requests: int = 10) -> int:
        """Answer the requests waiting now (at most ``max_requests``); returns how many.

        Never raises: a malformed request, and a handler that fails, are answered with
        ``{"ok": false, "error": ...}``."""
        answered = 0
        while answered < max_requests:
            try:
                frames = self.rep.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError as error:  # e.g. a message over the size limit mid-read
                self.errors += 1
                self.last_error = f"receiving a request failed: {error}"
                break
            try:
                reply = {"ok": True, **handler(parse_request(frames))}
            except RequestError as error:
                reply = {"ok": False, "error": str(error)}
            except Exception as error:  # the daemon never dies from a request
                self.errors += 1
                self.last_error = f"{type(error).__name__}: {error}"
                reply = {"ok": False, "error": f"the collector could not carry out the request: {self.last_error}"}
            try:
                self.rep.send(_encode_reply(reply))
            except zmq.ZMQError as error:
                self.errors += 1
                self.last_error = f"sending a reply failed: {error}"
            answered += 1
        return answered

    def publish(self, payload: dict[str, Any]) -> None:
        with contextlib.suppress(zmq.Again):  # no subscriber keeping up: telemetry is best effort
            self.pub.send(TELEMETRY_TOPIC + b" " + json.dumps(payload, default=str).encode(), zmq.NOBLOCK)

    def close(self) -> None:
        self.rep.close(0)
        self.pub.close(0)
        self.context.term()


def _encode_reply(reply: dict[str, Any]) -> bytes:
    """JSON, ASCII only (so any string, even one with a lone surrogate, encodes)."""
    try:
        return json.dumps(reply, default=str).encode()
    except (TypeError, ValueError) as error:
        return json.dumps({"ok": False, "error": f"reply could not be encoded: {error}"}).encode()


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
        raise TimeoutError(f"no collector answered at {address} within {timeout_s:g} s") from None
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
        raise TimeoutError(f"no telemetry from {address} within {timeout_s:g} s") from None
    finally:
        socket.close(0)
