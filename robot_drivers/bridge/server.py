"""The bridge server: the one process that owns the arm (DESIGN.md, "The bridge").

One thread does everything, in a loop paced by the arm's tick (`Arm.tick_s`: a physics step for the
simulated arm, a few milliseconds for a real one):

- it answers requests on a ZMQ ROUTER socket (`robot_drivers.bridge.protocol`); a request that does
  not follow the protocol gets an error reply and changes nothing, whatever its bytes;
- it runs the project's `SafetyFilter` again, with the server's own limits, on every command
  before the arm sees it; a command with a NaN or infinity stops the arm and is answered with an
  error, never forwarded;
- **watchdog**: with no valid command for ``watchdog_ms`` the arm's target becomes zero, so it
  brakes within its limits and holds; only a fresh command moves it again.  Commands carry a
  sequence number and a send time: an out-of-order or stale one is dropped and counted;
- one client drives the arm at a time (the one whose ``hello`` came last, once the previous one has
  been silent for a watchdog period); any client may read the state (monitors, ``bridge check``);
- ``stop`` and ``reset`` are answered when done, while the loop keeps ticking and answering others;
- **cameras** of a real cell (config ``cameras``, `robot_drivers.cameras.rig.CameraRig`) are opened
  before the arm is connected (a missing one stops the start, naming it) and read by their own
  threads; a state with images carries each one's newest frame and its age.  A camera that stops
  delivering stops the arm (target zero), and every command is then refused with ``camera_error``
  naming it, until a ``stop`` after it delivers again.

Everything the server does on its own (watchdog stops, reflexes, drops) is logged as one line on
stderr and counted in ``status``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from robot_drivers.base import DriverFault, FaultReason
from robot_drivers.bridge import protocol
from robot_drivers.bridge.arm import Arm, create_arm
from robot_drivers.bridge.config import BridgeServerConfig
from robot_drivers.cameras.rig import CameraRig, settings_text
from robot_drivers.types import NUM_JOINTS, RobotState
from safety import SafetyFilter

SERVER_VERSION = "1"
AT_REST_SPEED = 0.01
"""A stop is answered once every joint is slower than this, rad/s."""
DRIVER_LEASE_S = 5.0
"""Another client's hello takes the arm over only once the driving client has sent nothing for this
long, s, and the arm stands still (a collector training between episodes keeps it)."""
REST_WINDOW_S = 0.05
"""Window over which joint motion is measured from positions when the velocities are noisy, s."""
MAX_REQUESTS_PER_TICK = 20
"""Most requests answered between two ticks (the rest wait a tick: the arm is never starved)."""


class BridgeServer:
    """Serve ``arm`` (connected here) on ``config.address`` until `serve`'s ``should_stop`` is true."""

    def __init__(
        self,
        config: BridgeServerConfig,
        arm: Arm | None = None,
        log: Callable[[str], None] | None = None,
        rig: CameraRig | None = None,
    ):
        self.config = config
        self.arm = arm if arm is not None else create_arm(config)
        self.rig = rig if rig is not None else CameraRig(config.cameras)
        """The cell's cameras (none for a simulated arm, which renders its own)."""
        self.log = log or _stderr_log
        self.watchdog_s = config.watchdog_ms / 1000.0
        self.max_command_age_s = config.max_command_age_ms / 1000.0
        self.counters = {
            "commands": 0,
            "dropped_out_of_order": 0,
            "dropped_stale": 0,
            "dropped_too_soon": 0,
            "refused": 0,
            "malformed": 0,
            "watchdog_stops": 0,
            "faults": 0,
            "overruns": 0,
            "camera_losses": 0,
        }
        self._camera_fault: str | None = None
        """Why the arm was stopped for a camera (one line) until a stop after it delivers again."""
        self.driver: bytes | None = None
        """Identity of the client driving the arm."""
        self._filter: SafetyFilter | None = None
        self._clock_offset_s = 0.0
        self._last_seq = -1
        self._last_command_at = -np.inf
        self._driver_seen_at = -np.inf
        self._moving = False
        """Whether the arm's target is not zero."""
        self._pending: list[tuple[bytes, dict[str, Any], float]] = []
        """stop requests waiting for the arm to reach rest: (identity, request, deadline)."""
        self._fault_logged: str | None = None
        self._positions: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_REQUEST_BYTES)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)

    # ---- the loop ---------------------------------------------------------------------------------
    def serve(self, should_stop: Callable[[], bool] = lambda: False, ready: Callable[[], None] | None = None) -> int:
        """Open the cameras, connect the arm, bind, and run until ``should_stop()``; then stop the arm
        and close.  Returns 0; `DriverFault` if a camera cannot be opened (``camera_error``, naming it:
        the arm is then never connected) or the arm cannot be connected or the address is taken."""
        self.rig.open()
        try:
            self.arm.connect()
        except BaseException:
            self.rig.close()
            raise
        describe = self.arm.describe()
        clash = sorted({c.get("name") for c in describe.get("cameras", [])} & set(self.rig.names))
        try:
            if clash:
                raise DriverFault(FaultReason.camera_error, f"cameras {clash} are the arm's own cameras too")
            self.socket.bind(self.config.address)
        except (zmq.ZMQError, DriverFault) as error:
            self.arm.close()
            self.rig.close()
            if isinstance(error, DriverFault):
                raise
            raise DriverFault(FaultReason.connection_lost, f"cannot bind {self.config.address}: {error}") from None
        for source in self.rig.sources():
            self.log(f"camera {source['name']!r} ({source['source']} {source['device']}): {settings_text(source)}")
        self.log(f"serving {describe.get('arm', self.config.arm)} on {self.config.address}")
        if ready is not None:
            ready()
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        tick_s = self.arm.tick_s
        next_tick = time.monotonic()
        try:
            while not should_stop():
                wait_ms = max(0.0, (next_tick - time.monotonic()) * 1000.0)
                if poller.poll(wait_ms):
                    self._answer_requests()
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick += tick_s
                    if now - next_tick > 0.1:  # the loop fell far behind: re-pace, never burst
                        self.counters["overruns"] += 1
                        next_tick = now + tick_s
        finally:
            with contextlib.suppress(Exception):
                self.arm.set_velocity_target(np.zeros(NUM_JOINTS))
                self._positions.clear()
                stop_by = time.monotonic() + self.config.stop_timeout_s
                while time.monotonic() < stop_by and not self._at_rest():
                    self.arm.tick(time.monotonic())
                    time.sleep(tick_s)
            self.arm.close()
            self.rig.close()
            self.socket.close(0)
            self.log("stopped")
        return 0

    def _tick(self, now: float) -> None:
        try:
            self.arm.tick(now)
        except DriverFault as fault:  # the arm is gone or broken: nothing to drive any more
            self.counters["faults"] += 1
            self.log(f"arm fault: {fault}")
            raise
        fault = self.arm.fault()
        if fault is not None and fault != self._fault_logged:
            self.counters["faults"] += 1
            self.log(f"{self.arm.fault_reason()}: {fault}")
            self._moving = False
        self._fault_logged = fault
        if self.rig.cameras:
            self._check_cameras(now)
        if self._moving and now - self._last_command_at > self.watchdog_s:
            try:
                self._stop_arm()
            except Exception as error:  # nothing else can stop it: say so loudly, then fail
                self.log(f"watchdog: the arm refused the stop ({type(error).__name__}: {error})")
                raise
            self.counters["watchdog_stops"] += 1
            self.log(
                f"watchdog: no valid command for {1000 * (now - self._last_command_at):.0f} ms "
                f"(limit {self.config.watchdog_ms:g} ms): braking to rest, holding until a fresh command"
            )
        if self._pending:
            self._answer_pending(now)

    def _check_cameras(self, now: float) -> None:
        """A camera newly lost stops the arm and latches `_camera_fault` (commands refused)."""
        lost, back = self.rig.check(now)
        for line in lost:
            self.counters["camera_losses"] += 1
            self._camera_fault = line
            self._stop_arm()
            self.log(f"camera_error: {line}: the arm is stopped")
        for name in back:
            self.log(f"camera {name!r} delivers frames again (commands resume after a stop)")

    def _state(self, images: bool) -> RobotState:
        """The arm's state; with ``images``, the cameras' newest frames merged in with their ages
        (`DriverFault` ``camera_error`` naming a camera that stopped delivering)."""
        state = self.arm.state(images=images)
        if not images:
            return state
        ages = {name: state.image_ages_s.get(name, 0.0) for name in state.images}  # the arm's render on demand
        if not self.rig.cameras:
            return dataclasses.replace(state, image_ages_s=ages)
        frames, rig_ages = self.rig.images()
        return dataclasses.replace(state, images={**state.images, **frames}, image_ages_s={**ages, **rig_ages})

    def _stop_arm(self) -> None:
        self.arm.set_velocity_target(np.zeros(NUM_JOINTS))
        self._moving = False
        if self._filter is not None:
            self._filter.notify_stopped()

    def _at_rest(self) -> bool:
        """Every joint slower than `AT_REST_SPEED`, by its measured velocity or, where that is noisy
        (franky-sim's joint 7 chatters at +-0.08 rad/s standing still), by how far it moved over the
        last `REST_WINDOW_S`."""
        state = self.arm.state()
        now, q = time.monotonic(), state.q
        self._positions.append((now, q))
        while len(self._positions) > 2 and now - self._positions[1][0] >= REST_WINDOW_S:
            self._positions.popleft()
        if float(np.max(np.abs(state.dq))) < AT_REST_SPEED:
            return True
        then, q_then = self._positions[0]
        age = now - then  # only a sample of the last window or two: never one left from an earlier stop
        return REST_WINDOW_S <= age <= 2 * REST_WINDOW_S and float(np.max(np.abs(q - q_then))) < AT_REST_SPEED * age

    # ---- requests ---------------------------------------------------------------------------------
    def _answer_requests(self) -> None:
        for _ in range(MAX_REQUESTS_PER_TICK):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                self.counters["malformed"] += 1
                return
            if len(frames) < 2:
                self.counters["malformed"] += 1
                continue
            identity, body = frames[0], frames[1:]
            try:
                request = protocol.parse_request(body)
            except Exception as error:  # ProtocolError; anything else would be a parser bug: never fatal
                self.counters["malformed"] += 1
                if identity == self.driver and self._moving:  # the arm's own driver sent garbage: stop
                    self._stop_arm()
                    self.log(f"a malformed request from the driving client: the arm is stopped ({error})")
                self._reply(identity, {"ok": False, "id": None, "error": str(error), "reason": "invalid_command"})
                continue
            if identity == self.driver:
                self._driver_seen_at = time.monotonic()
            try:
                self._handle(identity, request)
            except DriverFault as fault:
                self._reply(identity, _error(request, fault.message, fault.reason.value))
            except Exception as error:  # the server never dies from a request
                self.log(f"request {request['op']} failed: {type(error).__name__}: {error}")
                self._reply(identity, _error(request, f"the bridge could not carry out {request['op']}: {error}"))

    def _reply(self, identity: bytes, header: dict[str, Any], frames: list[bytes] | None = None) -> None:
        message = [identity, *(protocol.encode(header, frames) if frames is None else frames)]
        with contextlib.suppress(zmq.ZMQError):
            self.socket.send_multipart(message, zmq.NOBLOCK)

    def _handle(self, identity: bytes, request: dict[str, Any]) -> None:
        op = request["op"]
        if op == "state":
            state = self._state(images=request["images"])
            self._reply(identity, {}, protocol.encode_state(request["id"], state))
        elif op == "command":
            self._command(identity, request)
        elif op == "hello":
            self._hello(identity, request)
        elif op == "stop":
            self._require_driver(identity, request)
            self._stop_arm()
            if self.arm.fault() is not None:
                message, reason = self.arm.fault(), self.arm.fault_reason()
                self.arm.recover()
                self.log(f"recovered from {reason} ({message})")
            if self._camera_fault is not None and self.rig.lost() is None:
                self.log(f"cameras deliver again: commands are taken again (after {self._camera_fault})")
                self._camera_fault = None
            self._positions.clear()
            self._pending.append((identity, request, time.monotonic() + self.config.stop_timeout_s))
        elif op == "reset":
            self._require_driver(identity, request)
            if not np.all(np.isfinite(request["home"])):
                raise DriverFault(FaultReason.invalid_command, "reset: 'home' holds a non-finite angle")
            self._stop_arm()
            self.arm.reset(request["home"])
            if self._filter is not None:
                self._filter.reset()
            self._reply(identity, {}, protocol.encode_state(request["id"], self._state(images=True)))
        elif op == "bye":
            if identity == self.driver:
                self._stop_arm()
                self.driver = None
                self.log("the driving client let go")
            self._reply(identity, {"ok": True, "id": request["id"]})
        elif op == "status":
            self._reply(
                identity,
                {
                    "ok": True,
                    "id": request["id"],
                    "counters": dict(self.counters),
                    "cameras": self.rig.status(),
                    "arm_link": self.arm.link_alive(),
                },
            )

    def _hello(self, identity: bytes, request: dict[str, Any]) -> None:
        if request["protocol"] != protocol.PROTOCOL:
            raise DriverFault(
                FaultReason.connection_lost,
                f"protocol {ascii(request['protocol'])[:40]} not spoken here (this bridge: {protocol.PROTOCOL})",
            )
        now = time.monotonic()
        if self.driver not in (None, identity) and (now - self._driver_seen_at < DRIVER_LEASE_S or self._moving):
            raise DriverFault(
                FaultReason.robot_error,
                f"another client is driving this arm (it is taken over once silent for {DRIVER_LEASE_S:g} s)",
            )
        rate = float(request["control_rate_hz"])
        if abs(rate - self.config.control_rate_hz) > 1e-6 * self.config.control_rate_hz:
            raise DriverFault(
                FaultReason.invalid_command,
                f"this bridge takes commands at {self.config.control_rate_hz:g} Hz (its config's control_rate_hz), "
                f"not {rate:g} Hz",
            )
        if self.driver != identity:
            self._stop_arm()
        self.driver = identity
        self._driver_seen_at = now
        self._filter = SafetyFilter(self.config.safety, self.config.control_rate_hz, "joint_velocity")
        self._last_seq = -1
        self._last_command_at = -np.inf
        self._clock_offset_s = time.time() - float(request["client_time"])
        describe = self.arm.describe()
        self.log(f"driven by a new client at {request['control_rate_hz']:g} Hz")
        self._reply(
            identity,
            {
                "ok": True,
                "id": request["id"],
                "protocol": protocol.PROTOCOL,
                "server_version": SERVER_VERSION,
                "arm": self.config.arm,
                **describe,
                "cameras": [*describe.get("cameras", []), *self.rig.describe()],
                "camera_sources": self.rig.sources(),
                "robot_model": self.config.robot_model,
                "limits": self.config.safety.model_dump(mode="json"),
                "watchdog_ms": self.config.watchdog_ms,
                "max_command_age_ms": self.config.max_command_age_ms,
                "stop_timeout_s": self.config.stop_timeout_s,
                "simulated": self.arm.simulated,
            },
        )

    def _require_driver(self, identity: bytes, request: dict[str, Any]) -> None:
        if self.driver != identity:
            self.counters["refused"] += 1
            raise DriverFault(
                FaultReason.connection_lost,
                f"{request['op']}: this client does not drive the arm (the bridge restarted, or another took over); "
                "send hello",
            )

    def _command(self, identity: bytes, request: dict[str, Any]) -> None:
        self._require_driver(identity, request)
        request_id, dq = request["id"], request["dq"]
        if not np.all(np.isfinite(dq)):
            self._stop_arm()
            self.counters["refused"] += 1
            self.log("a command with a non-finite value: the arm is stopped, the command refused")
            raise DriverFault(FaultReason.invalid_command, "a non-finite joint velocity: the arm is stopped")
        if request["seq"] <= self._last_seq:
            self.counters["dropped_out_of_order"] += 1
            self._reply(identity, {"ok": True, "id": request_id, "dropped": "out_of_order"})
            return
        self._last_seq = request["seq"]
        age = time.time() - (request["sent"] + self._clock_offset_s)
        if age > self.max_command_age_s:
            self.counters["dropped_stale"] += 1
            self._reply(identity, {"ok": True, "id": request_id, "dropped": "stale", "age_s": age})
            return
        if time.monotonic() - self._last_command_at < 0.5 / self.config.control_rate_hz:
            # faster than the filter's period allows: each command may change the velocity by one
            # period's acceleration, so a command stream at a higher rate would accelerate faster
            self.counters["dropped_too_soon"] += 1
            self._reply(identity, {"ok": True, "id": request_id, "dropped": "too_soon"})
            return
        fault = self.arm.fault()
        if fault is not None:
            self.counters["refused"] += 1
            raise DriverFault(self.arm.fault_reason(), f"{fault}; the arm is stopped until a stop recovers it")
        if self._camera_fault is not None:
            self.counters["refused"] += 1
            raise DriverFault(
                FaultReason.camera_error,
                f"{self._camera_fault}; the arm is stopped until a stop once the camera delivers again",
            )
        assert self._filter is not None  # set at hello
        safe, events = self._filter.filter(self.arm.state(), dq)
        self.arm.set_velocity_target(safe.values)
        self._moving = bool(np.any(safe.values))
        self._last_command_at = time.monotonic()
        self.counters["commands"] += 1
        self._reply(
            identity,
            {"ok": True, "id": request_id, "applied": safe.values.tolist(), "events": [e.kind for e in events]},
        )

    def _answer_pending(self, now: float) -> None:
        at_rest = self._at_rest()
        waiting = []
        for identity, request, deadline in self._pending:
            if at_rest:
                self._reply(identity, {"ok": True, "id": request["id"]})
            elif now > deadline:
                self._reply(
                    identity,
                    _error(request, f"the arm did not come to rest within {self.config.stop_timeout_s:g} s"),
                )
            else:
                waiting.append((identity, request, deadline))
        self._pending = waiting


def _error(request: dict[str, Any], message: str, reason: str = "robot_error") -> dict[str, Any]:
    return {"ok": False, "id": request.get("id"), "error": message, "reason": reason}


def _stderr_log(line: str) -> None:
    print(f"[bridge {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)
