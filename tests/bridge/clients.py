"""Clients of a bridge server for tests: `Client` sends requests (any bytes too), `Monitor` reads the
arm's state as often as the server answers, in a thread (any client may read the state)."""

from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from robot_drivers.bridge import protocol


class Client:
    def __init__(self, address: str) -> None:
        self.context = zmq.Context.instance()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)
        self.next_id = 0
        self._last_command = -1.0

    def raw(self, frames: list[bytes], timeout_ms: int = 2000) -> dict | None:
        self.sock.send_multipart(frames)
        if not self.sock.poll(timeout_ms):
            return None
        return protocol.decode_reply(self.sock.recv_multipart())[0]

    def request(self, **fields) -> dict:
        self.next_id += 1
        reply = self.raw(protocol.encode({"id": self.next_id, **fields}))
        assert reply is not None, f"no reply to {fields}"
        return reply

    def hello(self) -> dict:
        return self.request(op="hello", protocol=protocol.PROTOCOL, control_rate_hz=20.0, client_time=time.time())

    def command(self, seq: int, dq, sent: float | None = None, paced: bool = True) -> dict:
        """A command; ``paced``: at least 30 ms after the previous one (the server drops commands
        arriving sooner than half a 20 Hz period after the last)."""
        if paced:
            time.sleep(max(0.0, self._last_command + 0.03 - time.monotonic()))
        self._last_command = time.monotonic()
        return self.request(op="command", seq=seq, sent=time.time() if sent is None else sent, dq=list(dq))

    def close(self) -> None:
        self.sock.close(0)


class Monitor:
    """Reads the arm's state from the bridge as often as it answers (any client may read it), in a
    thread: (wall time, q, dq) samples."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.samples: list[tuple[float, np.ndarray, np.ndarray]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.address)
        request_id = 0
        while not self._stop.is_set():
            request_id += 1
            sock.send_multipart(protocol.encode({"op": "state", "id": request_id, "images": False}))
            if sock.poll(200):
                header, frames = protocol.decode_reply(sock.recv_multipart())
                if header.get("id") == request_id and header.get("ok"):
                    state = protocol.decode_state(header, frames)
                    self.samples.append((time.monotonic(), state.q, state.dq))
            else:  # the server is gone: a fresh socket for when it is back
                sock.close(0)
                sock = context.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(self.address)
            time.sleep(0.002)
        sock.close(0)
        context.term()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def moving(self) -> bool:
        return bool(self.samples) and float(np.max(np.abs(self.samples[-1][2]))) > 0.1

    def after(self, t0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = [s for s in self.samples if s[0] >= t0]
        return np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), np.array([r[2] for r in rows])

    def last_before(self, t0: float) -> tuple[np.ndarray, np.ndarray]:
        rows = [s for s in self.samples if s[0] < t0]
        return rows[-1][1], rows[-1][2]
