"""`BridgeDriver`: the collector's `RobotDriver` for an arm owned by a bridge server
(``robot.backend: bridge``).  Only the driver changes; the collector, explorers, store, reset and
evaluation are those of the simulators.

Every call is one request on a ZMQ DEALER socket, answered within ``request_timeout_s`` or a
`DriverFault` (``timeout``) naming the server: the driver never hangs, also not on an address that
accepts connections and never answers.  A reply to a request given up on is recognised by its id
and dropped.  The arm keeps moving between calls; the server's watchdog stops it when commands stop.

With ``spawn`` set, `connect` first starts ``pandalab bridge serve --config FILE`` as a child process
(a one-PC lab) and `close` stops it.  If the server restarted (it no longer knows this client),
`send` raises ``connection_lost`` and the next `stop` or `reset` says hello again.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import zmq

from robot_drivers.base import DriverFault, FaultReason, RobotDriver
from robot_drivers.bridge import protocol
from robot_drivers.bridge.config import BridgeOptions
from robot_drivers.types import NUM_JOINTS, ActionSpace, Command, RobotState

STOP_REPLY_MARGIN_S = 2.0
"""Extra wait for a stop's answer beyond the server's own stop timeout, s."""
MAX_DROPPED_IN_A_ROW = 3
"""Commands in a row the server may drop (stale, out of order, too soon) before `send` faults: the
arm is not doing what the collector records."""
SPAWN_GRACE_S = 10.0
"""How long a spawned server gets to stop the arm and exit after SIGTERM, s."""


class BridgeDriver(RobotDriver):
    """The arm behind a bridge server (options: `BridgeOptions`)."""

    config_class = BridgeOptions
    free_running = True

    def __init__(self, config: BridgeOptions | dict[str, Any] | None = None) -> None:
        if config is None:
            config = BridgeOptions()
        elif isinstance(config, dict):
            config = BridgeOptions(**config)
        self.config = config
        self.action_space = ActionSpace(config.action_space)
        self.control_rate_hz = config.control_rate_hz
        self.server_info: dict[str, Any] = {}
        """The server's ``hello`` reply: robot model, versions, cameras, limits."""
        self.dropped_commands = 0
        """Commands the server dropped as stale or out of order (the arm kept its previous target)."""
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._ids = itertools.count(1)
        self._seq = itertools.count(0)
        self._child: subprocess.Popen | None = None
        self._greeted = False
        self._dropped_in_a_row = 0

    # ---- connection -----------------------------------------------------------------------------
    def connect(self) -> None:
        if self._socket is not None:
            return
        if self.config.spawn is not None:
            self._spawn_server()
        self._context = zmq.Context()
        self._open_socket()
        try:
            self._hello(self.config.connect_timeout_s)
        except BaseException:
            self.close()
            raise

    def _open_socket(self) -> None:
        assert self._context is not None
        if self._socket is not None:
            self._socket.close(0)
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 10)
        self._socket.connect(self.config.server)

    def _spawn_server(self) -> None:
        command = [sys.executable, "-m", "pandalab", "bridge", "serve", "--config", str(self.config.spawn)]
        try:
            self._child = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            raise DriverFault(FaultReason.connection_lost, f"cannot start the bridge server: {error}") from None

    def _hello(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                reply = self._request(
                    {
                        "op": "hello",
                        "protocol": protocol.PROTOCOL,
                        "control_rate_hz": self.control_rate_hz,
                        "client_time": time.time(),
                    },
                    min(1.0, max(0.05, deadline - time.monotonic())),
                )[0]
                break
            except DriverFault as fault:
                if fault.reason is not FaultReason.timeout or time.monotonic() >= deadline:
                    if fault.reason is FaultReason.timeout:
                        raise DriverFault(
                            FaultReason.timeout,
                            f"no answer from the bridge server at {self.config.server} within {timeout_s:g} s "
                            "(is `pandalab bridge serve` running there?)",
                        ) from None
                    raise
                if self._child is not None and self._child.poll() is not None:
                    raise DriverFault(
                        FaultReason.connection_lost,
                        f"the bridge server started from {self.config.spawn} exited "
                        f"with status {self._child.returncode}",
                    ) from None
                self._open_socket()  # a fresh connection: no stale request queued behind a dead peer
        offered = {(c["name"], c["width"], c["height"]) for c in reply.get("cameras", [])}
        missing = [c.name for c in self.config.cameras if (c.name, c.width, c.height) not in offered]
        if missing:
            raise DriverFault(
                FaultReason.camera_error,
                f"the bridge at {self.config.server} offers no camera {missing[0]!r} of that size "
                f"(it offers {sorted(offered) or 'none'})",
            )
        self.server_info = reply
        self._greeted = True

    def _request(self, header: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], list[bytes]]:
        if self._socket is None:
            raise DriverFault(FaultReason.not_connected, "the bridge driver is not connected; call connect()")
        request_id = next(self._ids)
        header = {**header, "id": request_id}
        frames = (
            protocol.command_request(request_id, header["seq"], header["sent"], header["dq"])
            if header["op"] == "command"
            else protocol.encode(header)
        )
        try:
            self._socket.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            raise DriverFault(
                FaultReason.timeout, f"the bridge server at {self.config.server} is not taking requests"
            ) from None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = (deadline - time.monotonic()) * 1000.0
            if remaining_ms <= 0 or not self._socket.poll(remaining_ms):
                # The server may be gone (or a new one is there): greet again before the next stop or
                # reset, on a fresh connection with nothing stale queued.
                self._greeted = False
                self._open_socket()
                raise DriverFault(
                    FaultReason.timeout,
                    f"no answer from the bridge server at {self.config.server} to {header['op']} "
                    f"within {timeout_s:g} s",
                )
            try:
                reply, rest = protocol.decode_reply(self._socket.recv_multipart(zmq.NOBLOCK))
            except protocol.ProtocolError as error:
                raise DriverFault(FaultReason.connection_lost, f"bridge server: {error}") from None
            if reply.get("id") not in (request_id, None):
                continue  # the answer to a request given up on
            if not reply.get("ok"):
                reason = reply.get("reason") if reply.get("reason") in FaultReason.__members__ else "robot_error"
                if reason == FaultReason.connection_lost.value:
                    self._greeted = False
                raise DriverFault(reason, f"bridge: {reply.get('error', 'request refused')}")
            return reply, rest

    # ---- RobotDriver ----------------------------------------------------------------------------
    def read_state(self) -> RobotState:
        header, frames = self._request(
            {"op": "state", "images": bool(self.config.cameras)}, self.config.request_timeout_s
        )
        try:
            state = protocol.decode_state(header, frames)
        except (protocol.ProtocolError, KeyError, TypeError, ValueError) as error:
            raise DriverFault(FaultReason.connection_lost, f"bridge server sent a bad state: {error}") from None
        wanted = {camera.name for camera in self.config.cameras}
        return RobotState(
            time=state.time,
            q=state.q,
            dq=state.dq,
            tip_pos=state.tip_pos,
            gripper_width=state.gripper_width,
            images={name: image for name, image in state.images.items() if name in wanted},
            image_ages_s={name: age for name, age in state.image_ages_s.items() if name in wanted},
            privileged=state.privileged,
        )

    def send(self, command: Command) -> None:
        if not isinstance(command, Command) or command.kind is not ActionSpace.joint_velocity:
            raise DriverFault(FaultReason.invalid_command, "the bridge takes joint_velocity Commands")
        values = np.asarray(command.values, dtype=np.float64)
        if values.shape != (NUM_JOINTS,) or not np.all(np.isfinite(values)):
            raise DriverFault(FaultReason.invalid_command, f"not 7 finite joint velocities: {values}")
        reply, _ = self._request(
            {"op": "command", "seq": next(self._seq), "sent": time.time(), "dq": values}, self.config.request_timeout_s
        )
        if "dropped" in reply:
            self.dropped_commands += 1
            self._dropped_in_a_row += 1
            if self._dropped_in_a_row >= MAX_DROPPED_IN_A_ROW:
                raise DriverFault(
                    FaultReason.robot_error,
                    f"the bridge dropped {self._dropped_in_a_row} commands in a row ({reply['dropped']}): the arm "
                    "holds still; check the clocks of both machines and the command rate",
                )
        else:
            self._dropped_in_a_row = 0

    def stop(self) -> None:
        """Bring the arm to rest (the server recovers it from a reflex first); says hello again if
        the server no longer knows this client (failing within ``request_timeout_s`` when it does
        not answer)."""
        if not self._greeted:
            self._hello(self.config.request_timeout_s)
        timeout = float(self.server_info.get("stop_timeout_s", 5.0)) + STOP_REPLY_MARGIN_S
        self._request({"op": "stop"}, timeout)

    def reset(self, home: np.ndarray) -> RobotState:
        if not self._greeted:
            self._hello(self.config.request_timeout_s)
        home = np.asarray(home, dtype=np.float64)
        header, frames = self._request({"op": "reset", "home": home.tolist()}, max(self.config.request_timeout_s, 5.0))
        try:
            return protocol.decode_state(header, frames)
        except (protocol.ProtocolError, KeyError, TypeError, ValueError) as error:
            raise DriverFault(FaultReason.connection_lost, f"bridge server sent a bad state: {error}") from None

    def close(self) -> None:
        if self._socket is not None:
            if self._greeted:  # let go of the arm, so that the next collector may drive it at once
                with contextlib.suppress(DriverFault):
                    self._request({"op": "bye"}, min(self.config.request_timeout_s, 0.5))
            self._socket.close(0)
            self._socket = None
        if self._context is not None:
            self._context.term()
            self._context = None
        child, self._child = self._child, None
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=SPAWN_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self._greeted = False

    def server_status(self) -> dict[str, Any]:
        """The server's ``status`` reply: its counters and its cameras' frames, measured rates and
        newest frames' ages (``pandalab bridge check``)."""
        return self._request({"op": "status"}, self.config.request_timeout_s)[0]

    def reachable(self) -> bool:
        """Whether the server answers now (a quick ``status``) and its arm's own link is up (a ``ros2``
        arm's joint states arrive), for a collector waiting on a lost link.  A spawned server that
        died is started again first."""
        if self._child is not None and self._child.poll() is not None:
            self._spawn_server()
        try:
            reply, _ = self._request({"op": "status"}, min(self.config.request_timeout_s, 0.5))
        except DriverFault:
            if self._socket is not None:
                self._open_socket()  # a fresh connection: nothing stale queued for the next try
            return False
        return reply.get("arm_link", True) is not False
