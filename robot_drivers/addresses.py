"""ZMQ addresses in configs: the collector's control and telemetry sockets, the bridge server's."""

from __future__ import annotations

import re

__all__ = ["check_zmq_address"]

_TCP_ADDRESS = re.compile(r"^tcp://(\*|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$")
_IPC_PATH_MAX = 107
"""Longest path of a Unix socket (sun_path is 108 bytes with its terminating NUL)."""


def check_zmq_address(address: str) -> str:
    """A ZMQ address to bind or connect to: ``tcp://HOST:PORT`` (port 1..65535) or
    ``ipc:///PATH`` (an absolute or relative path of at most 107 bytes)."""
    if address.startswith("tcp://"):
        match = _TCP_ADDRESS.match(address)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ValueError(f"{address!r} is not tcp://HOST:PORT with a port 1..65535")
        return address
    if address.startswith("ipc://"):
        path = address[len("ipc://") :]
        if not path or "\0" in path or len(path.encode("utf-8", "surrogateescape")) > _IPC_PATH_MAX:
            raise ValueError(f"{address!r}: ipc:// needs a socket path of 1..{_IPC_PATH_MAX} bytes")
        return address
    raise ValueError(f"{address!r} is not a ZMQ address (tcp://HOST:PORT or ipc:///PATH)")
