"""Export a session as a ROS 2 bag (rosbag2: MCAP or SQLite 3 storage) of standard messages.

Written with the `rosbags` package (its ROS 2 Jazzy typestore; the messages used here are the same
in Humble), rosbag2 metadata version 8, CDR little-endian, one bag per session holding every
readable episode in order.  Topics (``<model>`` is the session's ``robot.model``: ``panda`` or
``fr3``, the joint names franka_ros2 publishes):

==================================== =============================== ==================================
topic                                type                            from the episode's
==================================== =============================== ==================================
/joint_states                        sensor_msgs/msg/JointState      obs/q (position), obs/dq (velocity);
                                                                     names <model>_joint1..7, no effort
/joint_velocity_controller/commands  std_msgs/msg/Float64MultiArray  command: the 7 joint velocities
                                                                     (rad/s) sent after the safety filter
                                                                     (a JointGroupVelocityController's
                                                                     input; empty layout)
/pandalab/action                     std_msgs/msg/Float64MultiArray  action (joint_velocity sessions: the
                                                                     explorer's rad/s before the filter)
/pandalab/tip_delta                  geometry_msgs/msg/Vector3Stamped action (tip_delta sessions: the
                                                                     explorer's tool-tip displacement for
                                                                     the step, m, frame <model>_link0)
/tool_tip                            geometry_msgs/msg/PointStamped  obs/tip_pos (m, frame <model>_link0)
/camera/<name>/image_raw             sensor_msgs/msg/Image           obs/images/<name>: rgb8, row-major,
                                                                     step = 3 * width, frame_id <name>
/pandalab/episode                    std_msgs/msg/String             one JSON document per episode, at its
                                                                     first stamp (below)
==================================== =============================== ==================================

Time stamps.  A step's header stamp and its bag (log and publish) time are the same: the wall-clock
time (UTC) the episode started (the episode file's ``started_at``, ms resolution, taken just before
its first step) plus the step's recorded ``time`` minus the episode's first ``time``, to the
nanosecond.  So within an episode the stamps are exactly the recorded step times (on hardware,
the driver's clock; in simulation, simulated time).  A simulator runs faster than real time, so an
episode's simulated duration can reach past the next episode's start: the next episode is then
moved later, to one control period after the last stamp before it, and the amount is recorded
(``shift_ns``), so the bag's stamps never go back across episodes.  An episode without
``started_at`` (a salvage that lost its header) is placed by ``finished_at`` instead, else one
period after the episode before it.

Episode boundaries.  ``/pandalab/episode`` carries, per episode: ``index``, ``outcome``, ``steps``,
``file`` (relative to the session), ``started_at``, ``finished_at``, ``time_origin_s`` (the
recorded ``time`` of its first step), ``first_stamp_ns``, ``last_stamp_ns``, ``shift_ns`` and,
for an episode salvaged with steps missing, ``missing_steps``.  The bag's metadata.yaml
``custom_data`` holds ``pandalab.session_id``, ``pandalab.robot_model``, ``pandalab.episodes``
(the same documents, a JSON list) and ``pandalab.skipped``.

Damage.  A damaged episode file (checksum, HDF5, schema, missing ``obs/q`` / ``obs/dq``, ``time``
not finite) is skipped with a one-line warning naming it, as every reader of the store does, and
listed in ``pandalab.skipped``; a session with no readable episode is an error.  The bag is
written into a temporary folder beside the output and renamed into place when complete: a
failure leaves nothing at the output path.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pandalab.exports import (
    ExportError,
    ExportResult,
    SkipEpisode,
    make_scratch,
    one_line,
    put_in_place,
    read_spec,
    readable_episodes,
    robot_model,
    skip,
    writing,
)

STORAGES = ("mcap", "sqlite3")
"""rosbag2 storage plugins: mcap (the default of ROS 2 Iron and later) and sqlite3."""
BAG_VERSION = 8
"""rosbag2 metadata version written (rosbags writes 8 or 9; 8 keeps QoS profiles as a YAML string,
the older readers' form)."""
JOINT_STATES = "/joint_states"
COMMANDS = "/joint_velocity_controller/commands"
ACTION = "/pandalab/action"
TIP_DELTA = "/pandalab/tip_delta"
TOOL_TIP = "/tool_tip"
EPISODE = "/pandalab/episode"
IMAGE_TOPIC = "/camera/{}/image_raw"
IMAGE_PREFIX = "obs/images/"
"""The arms whose joint names are known (``<model>_joint1..7``, as franka_ros2 names them)."""
BLOCK_BYTES = 64 << 20
"""Steps are read in blocks of about this many bytes (bounded memory for any camera size)."""

_TYPES = {
    JOINT_STATES: "sensor_msgs/msg/JointState",
    COMMANDS: "std_msgs/msg/Float64MultiArray",
    ACTION: "std_msgs/msg/Float64MultiArray",
    TIP_DELTA: "geometry_msgs/msg/Vector3Stamped",
    TOOL_TIP: "geometry_msgs/msg/PointStamped",
    EPISODE: "std_msgs/msg/String",
}
IMAGE_TYPE = "sensor_msgs/msg/Image"


def typestore():
    """The rosbags typestore the bag's message definitions come from."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def joint_names(model: str) -> list[str]:
    return [f"{model}_joint{i}" for i in range(1, 8)]


def iso_to_ns(text: str | None) -> int | None:
    """Nanoseconds since the Unix epoch of an ISO 8601 time (the store's ``...Z``), None if unreadable."""
    if not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return (moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)) // datetime.timedelta(microseconds=1) * 1000


class _Bag:
    """The rosbags writer with connections made on first use, and the message constructors."""

    def __init__(self, writer: Any, store: Any) -> None:
        self.writer = writer
        self.store = store
        self.types = store.types
        self.connections: dict[str, Any] = {}
        self.messages = 0

    def write(self, topic: str, msgtype: str, stamp_ns: int, message: Any) -> None:
        connection = self.connections.get(topic)
        if connection is None:
            connection = self.writer.add_connection(topic, msgtype, typestore=self.store)
            self.connections[topic] = connection
        self.writer.write(connection, stamp_ns, self.store.serialize_cdr(message, msgtype))
        self.messages += 1

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        time = self.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
        return self.types["std_msgs/msg/Header"](stamp=time, frame_id=frame_id)


def episode_stamps(
    time_s: np.ndarray, started_at: str | None, finished_at: str | None, previous_end_ns: int | None, period_ns: int
) -> tuple[np.ndarray, int]:
    """(stamps in ns since the epoch, shift_ns) of one episode's steps (the module docstring)."""
    relative = np.rint((time_s - time_s[0]) * 1e9).astype(np.int64)
    anchor = iso_to_ns(started_at)
    if anchor is None:
        finished = iso_to_ns(finished_at)
        if finished is not None:
            anchor = finished - int(relative.max())
        elif previous_end_ns is not None:
            anchor = previous_end_ns + period_ns
        else:
            anchor = 0
    shift = 0
    if previous_end_ns is not None and anchor < previous_end_ns + period_ns:
        shift = previous_end_ns + period_ns - anchor
    return anchor + shift + relative, shift


def export_rosbag2(
    session_dir: Path, out: Path, *, storage: str = "mcap", warn: Callable[[str], None] = lambda line: None
) -> ExportResult:
    """Write the session at ``session_dir`` as a rosbag2 at ``out`` (see the module docstring)."""
    if storage not in STORAGES:
        raise ExportError(f"unknown --storage {storage!r}; one of {', '.join(STORAGES)}")
    try:
        from rosbags.rosbag2 import StoragePlugin, Writer
    except ImportError as error:
        raise ExportError(f"the rosbag2 export needs the rosbags package: {one_line(error)}") from None
    spec = read_spec(session_dir)
    model = robot_model(session_dir, spec, "robot model {model!r} has no known ROS joint names ({known})")
    store = typestore()
    out.parent.mkdir(parents=True, exist_ok=True)  # outside make_scratch's refusal, as before
    scratch = make_scratch(out)
    writer = Writer(
        scratch / out.name,
        version=BAG_VERSION,
        storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3,
    )
    with writing(out, scratch, writer.abort):
        writer.open()
        bag = _Bag(writer, store)
        episodes, skipped = _write_session(bag, session_dir, spec, model, warn)
        if not episodes:
            raise ExportError(f"{session_dir}: no readable episode to export")
        writer.set_custom_data("pandalab.session_id", spec.session_id)
        writer.set_custom_data("pandalab.robot_model", model)
        writer.set_custom_data("pandalab.episodes", json.dumps(episodes, separators=(",", ":")))
        writer.set_custom_data("pandalab.skipped", json.dumps(skipped))
        writer.close()
        put_in_place(scratch / out.name, out)
    steps = sum(e["steps"] for e in episodes)
    return ExportResult(out, f"rosbag2/{storage}", len(episodes), steps, bag.messages, skipped)


def _write_session(
    bag: _Bag, session_dir: Path, spec: Any, model: str, warn: Callable[[str], None]
) -> tuple[list[dict], list[str]]:
    """Write every readable episode in order; (episode documents, skipped-file lines)."""
    period_ns = round(1e9 / spec.control_rate_hz)
    documents: list[dict] = []
    skipped: list[str] = []
    previous_end: int | None = None
    for episode in readable_episodes(session_dir, warn, skipped, ("obs/q", "obs/dq")):
        try:
            document = _write_episode(bag, session_dir, episode, spec, model, previous_end, period_ns)
        except SkipEpisode as reason:
            skip(episode, str(reason), warn, skipped)
            continue
        if document["steps"]:
            previous_end = document["last_stamp_ns"]
        documents.append(document)
    return documents, skipped


def _write_episode(
    bag: _Bag, session_dir: Path, episode: Any, spec: Any, model: str, previous_end: int | None, period_ns: int
) -> dict:
    fields = episode.fields
    for key in ("obs/q", "obs/dq"):
        if fields[key].shape != (7,):
            raise SkipEpisode(f"{key} holds {fields[key].shape} values per step, not 7")
    cameras = sorted(key.removeprefix(IMAGE_PREFIX) for key in fields if key.startswith(IMAGE_PREFIX))
    for name in cameras:
        shape = fields[IMAGE_PREFIX + name].shape
        if len(shape) != 3 or shape[2] != 3 or fields[IMAGE_PREFIX + name].dtype != np.uint8:
            raise SkipEpisode(f"{IMAGE_PREFIX}{name} is {shape} {fields[IMAGE_PREFIX + name].dtype}, not uint8 HxWx3")
    try:
        if "time" in fields:
            time_s = np.asarray(episode.load("time"), dtype=np.float64).reshape(-1)
        else:  # never written by the collector; then the control period stands in
            time_s = episode.step_index() / spec.control_rate_hz
    except Exception as error:  # h5py may raise anything on damaged data
        raise SkipEpisode(f"time cannot be read: {one_line(error)}") from None
    if not np.all(np.isfinite(time_s)):
        raise SkipEpisode("its time stamps are not all finite")
    try:
        relative_file = episode.path.relative_to(session_dir).as_posix()
    except ValueError:
        relative_file = episode.path.name
    document: dict[str, Any] = {
        "index": episode.index,
        "outcome": episode.outcome,
        "steps": episode.steps,
        "file": relative_file,
        "started_at": episode.started_at,
        "finished_at": episode.finished_at,
    }
    salvage = episode.metadata.get("salvage")
    if isinstance(salvage, dict) and salvage.get("missing_steps"):
        document["missing_steps"] = salvage["missing_steps"]
    if episode.steps == 0:
        return document
    stamps, shift = episode_stamps(time_s, episode.started_at, episode.finished_at, previous_end, period_ns)
    document.update(
        time_origin_s=float(time_s[0]),
        first_stamp_ns=int(stamps[0]),
        last_stamp_ns=int(stamps.max()),
        shift_ns=int(shift),
    )
    bag.write(EPISODE, _TYPES[EPISODE], int(stamps[0]), bag.types[_TYPES[EPISODE]](data=json.dumps(document)))

    tip_delta = spec.action_space == "tip_delta" and "action" in fields and fields["action"].shape == (3,)
    vector_keys = ["obs/q", "obs/dq"] + [k for k in ("command", "action", "obs/tip_pos") if k in fields]
    if "obs/tip_pos" in fields and fields["obs/tip_pos"].shape != (3,):
        vector_keys.remove("obs/tip_pos")
    image_keys = [IMAGE_PREFIX + name for name in cameras]
    step_bytes = sum(fields[k].step_nbytes for k in vector_keys + image_keys)
    block = max(1, min(episode.steps, BLOCK_BYTES // max(1, step_bytes)))
    t = bag.types
    JointState, Image = t["sensor_msgs/msg/JointState"], t[IMAGE_TYPE]
    MultiArray, Layout = t["std_msgs/msg/Float64MultiArray"], t["std_msgs/msg/MultiArrayLayout"]
    Vector3Stamped, Vector3 = t["geometry_msgs/msg/Vector3Stamped"], t["geometry_msgs/msg/Vector3"]
    PointStamped, Point = t["geometry_msgs/msg/PointStamped"], t["geometry_msgs/msg/Point"]
    names = joint_names(model)
    base = f"{model}_link0"
    no_effort = np.zeros(0, dtype=np.float64)
    empty_layout = Layout(dim=[], data_offset=0)
    for start in range(0, episode.steps, block):
        stop = min(episode.steps, start + block)
        try:
            arrays = {k: np.ascontiguousarray(episode[k][start:stop]) for k in vector_keys + image_keys}
        except Exception as error:  # the file changed or is damaged past its checksum: abort, write nothing
            raise ExportError(f"{episode.path}: cannot be read: {one_line(error)}") from None
        vectors = {k: arrays[k].astype(np.float64, copy=False) for k in vector_keys}
        for row in range(stop - start):
            ns = int(stamps[start + row])
            stamp_header = bag.header(ns, "")
            bag.write(
                JOINT_STATES,
                _TYPES[JOINT_STATES],
                ns,
                JointState(
                    header=stamp_header,
                    name=names,
                    position=vectors["obs/q"][row],
                    velocity=vectors["obs/dq"][row],
                    effort=no_effort,
                ),
            )
            if "command" in vectors:
                message = MultiArray(layout=empty_layout, data=vectors["command"][row].reshape(-1))
                bag.write(COMMANDS, _TYPES[COMMANDS], ns, message)
            if "action" in vectors:
                action = vectors["action"][row]
                if tip_delta:
                    vector = Vector3(x=float(action[0]), y=float(action[1]), z=float(action[2]))
                    message = Vector3Stamped(header=bag.header(ns, base), vector=vector)
                    bag.write(TIP_DELTA, _TYPES[TIP_DELTA], ns, message)
                else:
                    bag.write(ACTION, _TYPES[ACTION], ns, MultiArray(layout=empty_layout, data=action.reshape(-1)))
            if "obs/tip_pos" in vectors:
                tip = vectors["obs/tip_pos"][row]
                point = Point(x=float(tip[0]), y=float(tip[1]), z=float(tip[2]))
                bag.write(TOOL_TIP, _TYPES[TOOL_TIP], ns, PointStamped(header=bag.header(ns, base), point=point))
            for name, key in zip(cameras, image_keys, strict=True):
                frame = arrays[key][row]
                height, width = frame.shape[:2]
                message = Image(
                    header=bag.header(ns, name),
                    height=height,
                    width=width,
                    encoding="rgb8",
                    is_bigendian=0,
                    step=width * 3,
                    data=frame.reshape(-1),
                )
                bag.write(IMAGE_TOPIC.format(name), IMAGE_TYPE, ns, message)
    return document
