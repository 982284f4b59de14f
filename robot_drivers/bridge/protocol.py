"""The bridge's wire protocol: the collector's `BridgeDriver` (a ZMQ DEALER) talks to the bridge
server (a ROUTER) that owns the arm.

Every message is multipart: one frame of JSON (a header), then zero or more raw array frames that
the header describes (camera images).  Requests carry ``op`` and a request ``id`` the reply echoes;
a client discards replies to requests it has given up on.  A request is at most
`MAX_REQUEST_BYTES` (ZMQ drops larger ones before they are read).

Requests (client -> server):

- ``hello``: ``protocol``, ``control_rate_hz`` (the client's command rate, Hz), ``client_time``
  (the client's wall clock, s).  Makes the sender the arm's driver (refused while another client
  has commanded it within the watchdog period).  Reply: the server's description (`hello_reply`).
- ``state``: ``images`` (bool).  Reply: the latest measured state (`encode_state`); with images, each
  one's age (``image_ages_s``: s from its frame's capture to the read; a real cell's cameras run on
  their own), or an error with reason ``camera_error`` naming a camera that stopped delivering.
- ``command``: ``seq`` (int, increasing), ``sent`` (the client's wall clock when sent, s), ``dq``
  (7 joint velocities, rad/s).  Reply: ``applied`` (what the robot-side filter passed on).
- ``stop``: bring the arm to rest (recovering from a reflex first), reply when at rest.
- ``reset``: ``home`` (7 angles, rad).  Simulated arm: put it and the cube back; a real arm:
  confirm it stands at home.  Reply: the state.
- ``status``: counters of what the server dropped, refused and did; ``cameras``: each of the cell's
  cameras' frames, measured frame rate, newest frame's age and loss.
- ``bye``: the driving client lets go of the arm (its target becomes zero); another may say hello.

Replies: ``{"ok": true, "id": ..., ...}`` or ``{"ok": false, "id": ..., "error": "one line",
"reason": FaultReason}``.  `parse_request` validates any bytes: it never raises anything but
`ProtocolError`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from robot_drivers.types import NUM_JOINTS, RobotState

PROTOCOL = "pandalab-bridge/1"
MAX_REQUEST_BYTES = 16 * 1024
"""Largest request a server reads, bytes (ZMQ_MAXMSGSIZE): a command is about 200."""
OPS = ("hello", "state", "command", "stop", "reset", "status", "bye")
_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "hello": {"protocol": str, "control_rate_hz": (int, float), "client_time": (int, float)},
    "state": {"images": bool},
    "command": {"seq": int, "sent": (int, float), "dq": list},
    "stop": {},
    "reset": {"home": list},
    "status": {},
    "bye": {},
}
"""Per op, its fields besides ``op`` and ``id`` (all required) and their JSON types."""
MAX_ID = 2**53
"""Largest request id and command sequence number (exact in a JSON double)."""
IMAGE_DTYPE = "uint8"


class ProtocolError(ValueError):
    """A message that does not follow the protocol; the text says what is wrong, in one line."""


def parse_request(frames: list[bytes]) -> dict[str, Any]:
    """Decode and validate one request (its frames, without the ROUTER's identity frame).

    Returns the request with ``dq`` / ``home`` as float arrays; raises only `ProtocolError`,
    whatever the bytes.  Values are checked for type and shape here; finiteness of joint values is
    the server's business (a non-finite command stops the arm, so it must be recognised as one)."""
    if len(frames) != 1:
        raise ProtocolError(f"a request is one frame, got {len(frames)}")
    raw = bytes(frames[0])
    if not raw:
        raise ProtocolError("empty request")
    if raw[:1] != b"{":
        raise ProtocolError("a request is a JSON object")
    try:
        text = raw.decode("utf-8")
        # NaN and Infinity are read as the floats they name: a command holding one must be recognised
        # as a command with a non-finite value (the server stops the arm), not as garbage.
        request = json.loads(text, parse_constant=float)
    except UnicodeDecodeError:
        raise ProtocolError("the request is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ProtocolError(f"the request is not valid JSON: {error.msg} at position {error.pos}") from None
    except (ValueError, RecursionError) as error:  # e.g. an integer of thousands of digits
        raise ProtocolError(f"the request is not usable JSON: {str(error).splitlines()[0][:120]}") from None
    if not isinstance(request, dict):
        raise ProtocolError("a request is a JSON object")
    op = request.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise ProtocolError(f"unknown op {ascii(op)[:40]}; known: {', '.join(OPS)}")
    request_id = request.get("id")
    if not isinstance(request_id, int) or isinstance(request_id, bool) or not 0 <= request_id <= MAX_ID:
        raise ProtocolError(f"{op}: 'id' must be an integer 0..2**53")
    fields = _FIELDS[op]
    unknown = set(request) - set(fields) - {"op", "id"}
    if unknown:
        raise ProtocolError(f"{op}: unknown fields {ascii(sorted(unknown))[:120]}")
    for name, kind in fields.items():
        if name not in request:
            raise ProtocolError(f"{op}: missing field {name!r}")
        value = request[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ProtocolError(f"{op}: {name!r} has the wrong type ({type(value).__name__})")
    if op == "command":
        if not 0 <= request["seq"] <= MAX_ID:
            raise ProtocolError("command: 'seq' must be 0..2**53")
        request["dq"] = _joint_vector(request["dq"], "command: 'dq'")
        request["sent"] = _finite(request["sent"], "command: 'sent'")
    elif op == "reset":
        request["home"] = _joint_vector(request["home"], "reset: 'home'")
    elif op == "hello":
        request["client_time"] = _finite(request["client_time"], "hello: 'client_time'")
        rate = _finite(request["control_rate_hz"], "hello: 'control_rate_hz'")
        if not 0 < rate <= 1000:
            raise ProtocolError("hello: 'control_rate_hz' must be in (0, 1000]")
        request["control_rate_hz"] = rate
    return request


def _finite(value: int | float, what: str) -> float:
    """A JSON number as a finite float; an integer beyond a double's range, NaN or infinity refused."""
    try:
        number = float(value)
    except OverflowError:
        raise ProtocolError(f"{what} is out of range") from None
    if not math.isfinite(number):
        raise ProtocolError(f"{what} must be finite")
    return number


def _joint_vector(values: list, what: str) -> np.ndarray:
    """Seven numbers as floats; NaN and infinity are kept (for the server to stop on), anything
    else that is not a number is refused."""
    if len(values) != NUM_JOINTS:
        raise ProtocolError(f"{what} needs {NUM_JOINTS} numbers, got {len(values)}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ProtocolError(f"{what} holds something that is not a number")
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except OverflowError:  # an integer beyond a double's range
        return np.full(NUM_JOINTS, np.inf)


def encode(header: dict[str, Any], frames: list[bytes] | None = None) -> list[bytes]:
    """A message: the JSON header, then raw frames.  Non-finite floats are written as null."""
    return [json.dumps(_json_safe(header), allow_nan=False).encode(), *(frames or [])]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def command_request(request_id: int, seq: int, sent: float, dq: np.ndarray) -> list[bytes]:
    """A ``command`` request (the client's encoder; JSON floats round-trip exactly)."""
    return encode({"op": "command", "id": request_id, "seq": seq, "sent": sent, "dq": [float(v) for v in dq]})


def encode_state(request_id: int, state: RobotState) -> list[bytes]:
    """A ``state`` reply: the joint state in the header, each camera image as a raw frame."""
    images = []
    frames = []
    for name, image in state.images.items():
        array = np.ascontiguousarray(image, dtype=np.uint8)
        images.append({"name": name, "shape": list(array.shape)})
        frames.append(array.tobytes())
    header = {
        "ok": True,
        "id": request_id,
        "state": {
            "time": float(state.time),
            "q": state.q.tolist(),
            "dq": state.dq.tolist(),
            "tip_pos": state.tip_pos.tolist(),
            "gripper_width": float(state.gripper_width),
            "privileged": {
                k: {"value": np.asarray(v).tolist(), "dtype": str(np.asarray(v).dtype)}
                for k, v in state.privileged.items()
            },
        },
        "images": images,
    }
    if state.image_ages_s:  # absent from an older server's replies: read as {} (no ages known)
        header["state"]["image_ages_s"] = {name: float(age) for name, age in state.image_ages_s.items()}
    return encode(header, frames)


def decode_state(header: dict[str, Any], frames: list[bytes]) -> RobotState:
    """The `RobotState` in a ``state`` reply (the client trusts its own server; shapes are checked)."""
    body = header["state"]
    images = {}
    if len(frames) != len(header.get("images", [])):
        raise ProtocolError(f"a state reply announced {len(header.get('images', []))} images and carried {len(frames)}")
    for spec, frame in zip(header.get("images", []), frames, strict=True):
        shape = tuple(int(n) for n in spec["shape"])
        if int(np.prod(shape)) != len(frame):
            raise ProtocolError(f"image {spec['name']!r}: {len(frame)} bytes for shape {shape}")
        images[spec["name"]] = np.frombuffer(frame, dtype=np.uint8).reshape(shape).copy()
    privileged = {
        key: np.asarray(entry["value"], dtype=entry["dtype"]) for key, entry in body.get("privileged", {}).items()
    }
    ages = body.get("image_ages_s", {})
    if not isinstance(ages, dict) or not set(ages) <= set(images):
        raise ProtocolError("a state reply's image_ages_s is not a mapping of its images' names to ages")
    for name, age in ages.items():
        if not isinstance(age, int | float) or isinstance(age, bool) or not 0.0 <= age < math.inf:
            raise ProtocolError(f"image {name!r}: an age that is not a number of seconds >= 0 ({ascii(age)[:40]})")
    return RobotState(
        time=float(body["time"]),
        q=_floats(body["q"], NUM_JOINTS),
        dq=_floats(body["dq"], NUM_JOINTS),
        tip_pos=_floats(body["tip_pos"], 3),
        gripper_width=float(body["gripper_width"]) if body["gripper_width"] is not None else float("nan"),
        images=images,
        image_ages_s={name: float(age) for name, age in ages.items()},
        privileged=privileged,
    )


def _floats(values: list, size: int) -> np.ndarray:
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if array.shape != (size,):
        raise ProtocolError(f"expected {size} numbers, got {array.shape}")
    return array


def decode_reply(frames: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    """A reply's header and its raw frames; `ProtocolError` if the header is not a JSON object."""
    if not frames:
        raise ProtocolError("an empty reply")
    try:
        header = json.loads(bytes(frames[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"a reply that is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise ProtocolError("a reply that is not a JSON object")
    return header, [bytes(f) for f in frames[1:]]
