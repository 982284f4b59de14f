"""`pandalab data export SESSION --to rosbag2`: sessions written by the store, exported, read back
with rosbags' reader (and the `mcap` package's for MCAP) and compared, message by message, with
the episode arrays; the stamps recomputed here from the episode files' own attributes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pandalab.cli import main
from pandalab.exports import EXPORTS, ExportError, export_session
from store import SessionStore, iter_episodes

STEP_S = 0.05
TYPES = {
    "/joint_states": "sensor_msgs/msg/JointState",
    "/joint_velocity_controller/commands": "std_msgs/msg/Float64MultiArray",
    "/tool_tip": "geometry_msgs/msg/PointStamped",
    "/pandalab/episode": "std_msgs/msg/String",
}


@pytest.fixture(scope="module")
def ts():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def _write_session(root, name, *, action_space="joint_velocity", model="fr3", episodes=3, steps=9, cameras=None):
    """A session through the store's own writer: irregular step times starting away from 0,
    distinct random values everywhere, non-square frames (a transpose or a swapped axis shows)."""
    cameras = {"front": (6, 10), "wrist": (4, 8)} if cameras is None else cameras
    rng = np.random.default_rng(len(name))
    text = f"robot: {{backend: bridge, model: {model}}}\naction_space: {action_space}\ncontrol_rate_hz: 20\n"
    with SessionStore.open(root, name, session_yaml_text=text) as store:
        for e in range(episodes):
            recorder = store.begin_episode({"explorer": "random"})
            t0 = 3.0 + 100.0 * e
            for t in range(steps):
                step = {
                    "time": np.float64(t0 + t * STEP_S + rng.uniform(0, 0.004)),
                    "obs/q": rng.normal(size=7),
                    "obs/dq": rng.normal(size=7),
                    "obs/tip_pos": rng.normal(size=3),
                    "action": rng.normal(size=3 if action_space == "tip_delta" else 7),
                    "command": rng.normal(size=7),
                }
                for camera, (h, w) in cameras.items():
                    step[f"obs/images/{camera}"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                recorder.append(step)
            recorder.finish("complete")
    return Path(root) / name


def _expected_stamps(session, period_ns=50_000_000):
    """Per episode (index, arrays, stamps): started_at + recorded time - first time, moved to one
    control period after the previous episode's last stamp where it would overlap it."""
    out, previous = [], None
    for episode in iter_episodes([session]):
        arrays = episode.arrays()
        time = arrays["time"]
        anchor = int(np.datetime64(episode.started_at.removesuffix("Z"), "ns").astype(np.int64))
        if previous is not None:
            anchor = max(anchor, previous + period_ns)
        stamps = anchor + np.rint((time - time[0]) * 1e9).astype(np.int64)
        previous = int(stamps[-1])
        out.append((episode.index, arrays, stamps))
    return out


def _read_bag(bag, ts):
    """topic -> [(bag time, message, raw CDR)], and topic -> msgtype, via rosbags' AnyReader."""
    from rosbags.highlevel import AnyReader

    by_topic, types = {}, {}
    with AnyReader([bag], default_typestore=ts) as reader:
        for connection in reader.connections:
            types[connection.topic] = connection.msgtype
        for connection, stamp, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            by_topic.setdefault(connection.topic, []).append((stamp, message, bytes(raw)))
    return by_topic, types


def _ns(header):
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _check_against_source(session, bag, ts, *, model, tip_delta):
    expected = _expected_stamps(session)
    by_topic, types = _read_bag(bag, ts)
    cameras = sorted(k.removeprefix("obs/images/") for k in expected[0][1] if k.startswith("obs/images/"))
    want_types = dict(TYPES)
    want_types.update({f"/camera/{c}/image_raw": "sensor_msgs/msg/Image" for c in cameras})
    if tip_delta:
        want_types["/pandalab/tip_delta"] = "geometry_msgs/msg/Vector3Stamped"
    else:
        want_types["/pandalab/action"] = "std_msgs/msg/Float64MultiArray"
    assert types == want_types
    steps = sum(len(stamps) for _, _, stamps in expected)
    for topic in want_types:
        assert len(by_topic[topic]) == (len(expected) if topic == "/pandalab/episode" else steps), topic
    names = [f"{model}_joint{i}" for i in range(1, 8)]
    row = 0
    for e, (index, arrays, stamps) in enumerate(expected):
        stamp, doc_msg, _ = by_topic["/pandalab/episode"][e]
        doc = json.loads(doc_msg.data)
        assert (doc["index"], doc["steps"], doc["first_stamp_ns"], stamp) == (index, len(stamps), stamps[0], stamps[0])
        for t in range(len(stamps)):
            ns = int(stamps[t])
            stamp, js, raw = by_topic["/joint_states"][row]
            assert stamp == ns and _ns(js.header) == ns
            assert list(js.name) == names and len(js.effort) == 0
            np.testing.assert_array_equal(js.position, arrays["obs/q"][t])
            np.testing.assert_array_equal(js.velocity, arrays["obs/dq"][t])
            stamp, command, _ = by_topic["/joint_velocity_controller/commands"][row]
            assert stamp == ns
            np.testing.assert_array_equal(command.data, arrays["command"][t])
            if tip_delta:
                stamp, delta, _ = by_topic["/pandalab/tip_delta"][row]
                assert stamp == ns and _ns(delta.header) == ns and delta.header.frame_id == f"{model}_link0"
                assert [delta.vector.x, delta.vector.y, delta.vector.z] == arrays["action"][t].tolist()
            else:
                stamp, action, _ = by_topic["/pandalab/action"][row]
                assert stamp == ns
                np.testing.assert_array_equal(action.data, arrays["action"][t])
            stamp, tip, _ = by_topic["/tool_tip"][row]
            assert stamp == ns and _ns(tip.header) == ns and tip.header.frame_id == f"{model}_link0"
            assert [tip.point.x, tip.point.y, tip.point.z] == arrays["obs/tip_pos"][t].tolist()
            for camera in cameras:
                frame = arrays[f"obs/images/{camera}"][t]
                stamp, image, _ = by_topic[f"/camera/{camera}/image_raw"][row]
                assert stamp == ns and _ns(image.header) == ns and image.header.frame_id == camera
                height, width = frame.shape[:2]
                assert (image.height, image.width, image.step, image.encoding) == (height, width, 3 * width, "rgb8")
                np.testing.assert_array_equal(image.data.reshape(frame.shape), frame)
            row += 1
    # standard ROS 2 CDR: the bytes are rosbags' own serialisation of the message built here
    index, arrays, stamps = expected[-1]
    T = ts.types
    header = T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=int(stamps[-1]) // 10**9, nanosec=int(stamps[-1]) % 10**9),
        frame_id="",
    )
    joint_state = T["sensor_msgs/msg/JointState"](
        header=header,
        name=names,
        position=arrays["obs/q"][-1],
        velocity=arrays["obs/dq"][-1],
        effort=np.zeros(0),
    )
    assert by_topic["/joint_states"][-1][2] == bytes(ts.serialize_cdr(joint_state, "sensor_msgs/msg/JointState"))
    frame = arrays[f"obs/images/{cameras[0]}"][-1]
    image = T["sensor_msgs/msg/Image"](
        header=T["std_msgs/msg/Header"](stamp=header.stamp, frame_id=cameras[0]),
        height=frame.shape[0],
        width=frame.shape[1],
        encoding="rgb8",
        is_bigendian=0,
        step=3 * frame.shape[1],
        data=frame.reshape(-1),
    )
    raw = by_topic[f"/camera/{cameras[0]}/image_raw"][-1][2]
    assert raw == bytes(ts.serialize_cdr(image, "sensor_msgs/msg/Image"))
    return expected, by_topic


def test_mcap_bag_holds_every_step_with_its_recorded_stamp(tmp_path, ts, capsys):
    session = _write_session(tmp_path / "data", "cell", model="fr3")
    assert main(["data", "export", str(session), "--to", "rosbag2"]) == 0
    bag = tmp_path / "data" / "cell.rosbag2"  # the default: beside the session
    assert str(bag) in capsys.readouterr().out
    expected, by_topic = _check_against_source(session, bag, ts, model="fr3", tip_delta=False)

    # the stamps: recorded step times within an episode; across episodes never back in time (the
    # test's episodes last longer in recorded time than they took to write, so later ones move)
    stamps = np.concatenate([s for _, _, s in expected])
    assert np.all(np.diff(stamps) > 0)
    docs = [json.loads(m.data) for _, m, _ in by_topic["/pandalab/episode"]]
    assert docs[0]["shift_ns"] == 0 and docs[1]["shift_ns"] > 0
    assert docs[0]["time_origin_s"] == expected[0][1]["time"][0]

    metadata = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == "mcap" and metadata["version"] == 8
    assert json.loads(metadata["custom_data"]["pandalab.episodes"]) == docs
    assert metadata["custom_data"]["pandalab.robot_model"] == "fr3"

    # the mcap package's reader: the ROS 2 profile, self-describing schemas, the same messages
    from mcap.reader import make_reader

    (mcap_file,) = bag.glob("*.mcap")
    with open(mcap_file, "rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        seen = {}
        for schema, channel, message in reader.iter_messages(log_time_order=False):
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            assert schema.name == {**TYPES}.get(channel.topic, schema.name)
            assert message.log_time == message.publish_time
            seen.setdefault(channel.topic, []).append((message.log_time, bytes(message.data)))
        schemas = {s.name: s.data.decode() for s in reader.get_summary().schemas.values()}
    assert "float64[] position" in schemas["sensor_msgs/msg/JointState"]
    assert seen == {topic: [(stamp, raw) for stamp, _, raw in rows] for topic, rows in by_topic.items()}
    deserialised = ts.deserialize_cdr(seen["/joint_states"][0][1], "sensor_msgs/msg/JointState")
    np.testing.assert_array_equal(deserialised.position, expected[0][1]["obs/q"][0])


def test_sqlite3_bag_of_a_tip_delta_panda_session(tmp_path, ts):
    session = _write_session(
        tmp_path, "reach", action_space="tip_delta", model="panda", episodes=2, cameras={"front": (5, 7)}
    )
    out = tmp_path / "exports" / "reach_bag"
    result = export_session(session, "rosbag2", out, storage="sqlite3")
    assert (result.episodes, result.steps, result.skipped) == (2, 18, [])
    assert [p.suffix for p in out.iterdir() if p.name != "metadata.yaml"] == [".db3"]
    metadata = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["storage_identifier"] == "sqlite3"
    _check_against_source(session, out, ts, model="panda", tip_delta=True)


def test_a_damaged_episode_is_skipped_with_a_warning_naming_it(tmp_path, ts, capsys):
    session = _write_session(tmp_path, "s", episodes=3, cameras={})
    episode = session / "episodes" / "episode_000001.h5"
    data = bytearray(episode.read_bytes())
    data[len(data) // 2] ^= 0xFF
    episode.write_bytes(bytes(data))
    assert main(["data", "export", str(session), "--to", "rosbag2", "--out", str(tmp_path / "bag")]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "episode_000001.h5" in warning[0] and "checksum" in warning[0]
    assert "1 damaged episode(s) skipped" in captured.out
    by_topic, _ = _read_bag(tmp_path / "bag", ts)
    assert [json.loads(m.data)["index"] for _, m, _ in by_topic["/pandalab/episode"]] == [0, 2]
    assert len(by_topic["/joint_states"]) == 18
    metadata = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert "episode_000001.h5" in json.loads(metadata["custom_data"]["pandalab.skipped"])[0]


def _error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: skipping damaged episode ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err  # after a warning per damaged episode
    return lines[0]


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("missing", ["{root}/nowhere", "--to", "rosbag2"], "no such session directory"),
        ("not a session", ["{root}/empty", "--to", "rosbag2"], "is not a pandalab session"),
        ("data root", ["{root}/data", "--to", "rosbag2"], "it holds the sessions s: name one"),
        ("output exists", ["{root}/data/s", "--to", "rosbag2", "--out", "{root}/taken"], "exists already"),
        (
            "unknown format",
            ["{root}/data/s", "--to", "rosbag3"],
            "unknown export --to 'rosbag3'; one of lerobot, minari, rosbag2",
        ),
        ("unknown storage", ["{root}/data/s", "--to", "rosbag2", "--storage", "zip"], "unknown --storage 'zip'"),
        ("all damaged", ["{root}/data/bad", "--to", "rosbag2"], "no readable episode"),
    ],
)
def test_refusals_are_one_line_and_leave_nothing(tmp_path, capsys, case, args, message):
    _write_session(tmp_path / "data", "s", episodes=1, steps=2, cameras={})
    (tmp_path / "empty").mkdir()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep").write_text("mine")
    if case == "all damaged":
        bad = _write_session(tmp_path / "data", "bad", episodes=1, steps=2, cameras={})
        (bad / "episodes" / "episode_000000.h5").write_bytes(b"not hdf5")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["data", "export", *(a.format(root=tmp_path) for a in args)]) == 1
    assert message in _error_line(capsys)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written, nothing left
    assert (tmp_path / "taken" / "keep").read_text() == "mine"


def test_a_failure_while_writing_leaves_no_output(tmp_path, monkeypatch):
    from pandalab.exports import rosbag2

    session = _write_session(tmp_path, "s", episodes=2, steps=3, cameras={})
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(*args, **kwargs)

    original = rosbag2._write_episode
    monkeypatch.setattr(rosbag2, "_write_episode", fail_on_second)
    with pytest.raises(ExportError, match="No space left on device"):
        export_session(session, "rosbag2", tmp_path / "bag")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no bag, no scratch folder


def test_the_registry_loads_an_export_only_when_it_runs():
    assert EXPORTS["rosbag2"] == "pandalab.exports.rosbag2:export_rosbag2"
    code = (
        "import sys, pandalab.exports, pandalab.cli; "
        "print('rosbags' in sys.modules, 'pandalab.exports.rosbag2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
