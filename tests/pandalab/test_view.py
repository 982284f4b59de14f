"""`pandalab data view` and `pandalab ctl watch --rerun`: recordings saved as .rrd files and read
back with Rerun's own dataframe API (`rr.dataframe.load_recording`), compared with the episode
arrays written through the store (and, for telemetry, with a real collector's status)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pandalab import view
from pandalab.cli import main
from store import SessionStore, iter_episodes, read_events

rr = pytest.importorskip("rerun")

STEP_S = 0.05
PACE_S = 0.03
"""Wall-clock pause between appended steps: events.jsonl is stamped on the wall clock."""
CAMERAS = {"front": (6, 10), "wrist": (4, 8)}
STEPS = (9, 7)
EVENT_AT = (1, 4)
"""(episode, step) after which the test logs a safety event."""


def _write_session(root: Path, name: str = "sim_view") -> Path:
    """Two episodes through the store's own writer: irregular step times away from 0, distinct random
    values everywhere, non-square frames of two cameras, a cube pose (w, x, y, z quaternions), a
    safety event in episode 1 and an operator event (no episode field) while episode 0 records."""
    rng = np.random.default_rng(17)
    text = "robot: {backend: pybullet, model: panda}\naction_space: joint_velocity\ncontrol_rate_hz: 20\n"
    with SessionStore.open(root, name, session_yaml_text=text) as store:
        store.log_event("operator", command="resume", reason="before any episode")
        for e, steps in enumerate(STEPS):
            recorder = store.begin_episode({"explorer": "random"})
            t0 = 3.0 + 100.0 * e
            for t in range(steps):
                quat = rng.normal(size=4)
                step = {
                    "time": np.float64(t0 + t * STEP_S + rng.uniform(0, 0.004)),
                    "obs/q": rng.normal(size=7),
                    "obs/dq": rng.normal(size=7),
                    "obs/tip_pos": rng.normal(size=3),
                    "action": rng.normal(size=7),
                    "command": rng.normal(size=7),
                    "privileged/cube_pos": rng.normal(size=3),
                    "privileged/cube_quat": quat / np.linalg.norm(quat),
                }
                for camera, (h, w) in CAMERAS.items():
                    step[f"obs/images/{camera}"] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                recorder.append(step)
                if (e, t) == EVENT_AT:
                    store.log_event("safety", episode=e, event="joint_limit", where=3, magnitude=0.02, detail="q4")
                if e == 0 and t == 2:
                    store.log_event("operator", command="pause", reason="look")
                if t < steps - 1:
                    time.sleep(PACE_S)
            recorder.finish("complete")
    return root / name


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return _write_session(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def saved(session, tmp_path_factory):
    out = tmp_path_factory.mktemp("rrd") / "all.rrd"
    assert main(["data", "view", str(session), "--save", str(out)]) == 0
    return rr.dataframe.load_recording(str(out))


@pytest.fixture(scope="module")
def recorded(session):
    return {e.index: e.arrays() for e in iter_episodes([session])}


def _rows(recording, entity: str, component: str, index: str = "step") -> tuple[list, list]:
    """(index values, component values) of the rows where ``entity`` logged ``component``."""
    table = recording.view(index=index, contents=entity).select().read_all()
    column = f"{entity}:{component}"
    assert column in table.column_names, (column, table.column_names)
    values = table.column(column).to_pylist()
    keep = [i for i, v in enumerate(values) if v is not None]
    index_values = table.column(index)
    if pa.types.is_timestamp(index_values.type):
        index_values = index_values.cast(pa.int64())
    index_values = index_values.to_pylist()
    return [index_values[i] for i in keep], [values[i] for i in keep]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _entities(recording) -> set[str]:
    return {c.entity_path for c in recording.schema().component_columns()}


def test_joint_series_are_the_recorded_arrays_on_the_recorded_time_line(saved, recorded):
    for e, arrays in recorded.items():
        steps = len(arrays["time"])
        for key in ("obs/q", "obs/dq", "command", "action"):
            for j in range(7):
                entity = f"/episode_{e:06d}/{key}/joint{j + 1}"
                step_index, values = _rows(saved, entity, "Scalar")
                assert step_index == list(range(steps)), entity
                np.testing.assert_array_equal(np.concatenate(values), arrays[key][:, j], err_msg=entity)
                stamps, _ = _rows(saved, entity, "Scalar", index="time")
                assert np.abs(np.array(stamps) - arrays["time"] * 1e9).max() <= 1, entity  # Rerun keeps ns


def test_every_camera_frame_is_there_byte_for_byte_at_its_step(saved, recorded):
    for e, arrays in recorded.items():
        for camera, (h, w) in CAMERAS.items():
            entity = f"/episode_{e:06d}/camera/{camera}"
            step_index, buffers = _rows(saved, entity, "ImageBuffer")
            assert step_index == list(range(len(arrays["time"]))), entity
            _, formats = _rows(saved, entity, "ImageFormat")
            assert all((f[0]["width"], f[0]["height"]) == (w, h) for f in formats), formats[0]
            frames = np.array([np.asarray(b[0], dtype=np.uint8).reshape(h, w, 3) for b in buffers])
            np.testing.assert_array_equal(frames, arrays[f"obs/images/{camera}"], err_msg=entity)


def test_tool_tip_path_and_cube_pose_in_3d(saved, recorded):
    for e, arrays in recorded.items():
        tip, steps = arrays["obs/tip_pos"], len(arrays["time"])
        step_index, points = _rows(saved, f"/world/episode_{e:06d}/tip", "Position3D")
        assert step_index == list(range(steps))
        np.testing.assert_allclose(np.array([p[0] for p in points]), tip, rtol=1e-6, atol=1e-6)
        at, strips = _rows(saved, f"/world/episode_{e:06d}/tip_path", "LineStrip3D")
        assert at == [0] and len(strips[0]) == 1  # one strip, the whole path, at the first step
        np.testing.assert_allclose(np.array(strips[0][0]), tip, rtol=1e-6, atol=1e-6)
        step_index, translations = _rows(saved, f"/world/episode_{e:06d}/cube", "Translation3D")
        assert step_index == list(range(steps))
        np.testing.assert_allclose(np.concatenate(translations), arrays["privileged/cube_pos"], rtol=1e-6, atol=1e-6)
        _, quats = _rows(saved, f"/world/episode_{e:06d}/cube", "RotationQuat")
        wxyz = arrays["privileged/cube_quat"]
        np.testing.assert_allclose(np.concatenate(quats), wxyz[:, [1, 2, 3, 0]], rtol=1e-6, atol=1e-6)


def test_events_are_markers_at_their_step_of_their_episode(saved, recorded):
    episode, step = EVENT_AT
    at, texts = _rows(saved, f"/episode_{episode:06d}/events", "Text")
    _, levels = _rows(saved, f"/episode_{episode:06d}/events", "TextLogLevel")
    assert len(texts) == 1 and texts[0][0].startswith("safety joint_limit at 3") and levels[0] == ["WARN"]
    assert abs(at[0] - step) <= 1, at  # placed by the wall clock between started_at and finished_at
    marker_at, positions = _rows(saved, f"/world/episode_{episode:06d}/events", "Position3D")
    assert marker_at == at
    np.testing.assert_allclose(positions[0][0], recorded[episode]["obs/tip_pos"][at[0]], rtol=1e-6, atol=1e-6)
    at, texts = _rows(saved, "/episode_000000/events", "Text")  # the pause while episode 0 recorded
    assert [t[0] for t in texts] == ["operator command=pause reason=look"] and abs(at[0] - 2) <= 1


def test_an_event_logged_just_before_an_episode_starts_is_not_placed_in_it(tmp_path):
    """started_at is stamped finely enough that an event logged the moment before begin_episode
    falls before it (a millisecond stamp truncated it to before such events, placing them in the
    episode that followed)."""
    text = "robot: {backend: pybullet, model: panda}\naction_space: joint_velocity\n"
    with SessionStore.open(tmp_path, "sim_order", session_yaml_text=text) as store:
        for _ in range(20):
            store.log_event("operator", command="resume", reason="before")
            recorder = store.begin_episode({"explorer": "random"})
            stamp = read_events(store.session_dir)[-1]["time"]
            assert view._epoch(recorder.started_at) >= stamp, (recorder.started_at, stamp)
            recorder.append({"time": np.float64(0.0), "obs/q": np.zeros(7), "action": np.zeros(7)})
            recorder.finish("complete")


def test_one_episode_only_and_bad_requests_are_one_line_errors(session, tmp_path, capsys):
    out = tmp_path / "deep" / "one.rrd"
    assert main(["data", "view", str(session), "--episode", "1", "--save", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}")
    entities = _entities(rr.dataframe.load_recording(str(out)))
    assert "/episode_000001/obs/q/joint1" in entities and not any("episode_000000" in p for p in entities)
    for argv in (
        [str(session), "--episode", "2"],  # out of range
        [str(session.parent)],  # a data root, not a session
        [str(tmp_path / "nothing")],
    ):
        assert main(["data", "view", *argv, "--save", str(tmp_path / "bad.rrd")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "bad.rrd").exists()


def test_without_a_display_spawning_the_viewer_fails_in_one_line_naming_save(session, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(view, "_spawn_viewer", lambda *a, **k: pytest.fail("spawned a viewer without a display"))
    assert main(["data", "view", str(session), "--episode", "0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--save" in err and "Traceback" not in err, err


def test_a_viewer_that_cannot_open_its_display_is_a_one_line_error(session, monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":97")  # no X server there: the real viewer starts and exits
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(view, "VIEWER_PORT", _free_port())
    assert main(["data", "view", str(session), "--episode", "0"]) == 1
    err = capsys.readouterr().err
    # it dies before listening ("did not start") or, under load, just after ("exited"): one line either way
    assert err.startswith(("error: the Rerun viewer did not start", "error: the Rerun viewer exited")), err
    assert "X server" in err and "--save" in err and err.count("\n") == 1, err


class RerunServer:
    """A headless Rerun server (the viewer binary with ``--save``): what it receives over TCP goes to
    a file, complete once `stop` has returned."""

    def __init__(self, out: Path) -> None:
        self.port, self.out = _free_port(), out
        self.process = subprocess.Popen(
            [view._viewer_executable(), "--port", str(self.port), "--save", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not view._port_taken(self.port):
            assert self.process.poll() is None and time.monotonic() < deadline, "the rerun server did not start"
            time.sleep(0.05)

    def stop(self):
        if self.process.poll() is None:
            time.sleep(0.3)  # what the SDK flushed is on its way in
            self.process.terminate()
            self.process.wait(timeout=20)
        return rr.dataframe.load_recording(str(self.out))


@pytest.fixture
def rerun_server(tmp_path):
    server = RerunServer(tmp_path / "received.rrd")
    try:
        yield server
    finally:
        server.stop()


def test_a_viewer_already_listening_gets_the_episodes(session, recorded, rerun_server, monkeypatch, capsys):
    port = rerun_server.port
    monkeypatch.setenv("DISPLAY", ":97")
    monkeypatch.setattr(view, "VIEWER_PORT", port)  # already taken: reused, nothing spawned
    popen, viewer = subprocess.Popen, view._viewer_executable()

    def no_second_viewer(argv, *args, **kwargs):
        assert argv[0] != viewer, "spawned a second viewer"
        return popen(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", no_second_viewer)
    assert main(["data", "view", str(session), "--episode", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"sent 1 episode, 7 steps, cameras: front, wrist to the Rerun viewer on port {port}")
    step_index, values = _rows(rerun_server.stop(), "/episode_000001/obs/q/joint2", "Scalar")
    assert step_index == list(range(7))
    np.testing.assert_array_equal(np.concatenate(values), recorded[1]["obs/q"][:, 1])


def test_a_damaged_episode_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    session = _write_session(tmp_path, "damaged")
    victim = session / "episodes" / "episode_000000.h5"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    out = tmp_path / "rest.rrd"
    assert main(["data", "view", str(session), "--save", str(out)]) == 0
    captured = capsys.readouterr()
    assert "1 episode, 7 steps" in captured.out
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and str(victim) in warnings[0] and "checksum" in warnings[0], captured.err
    assert not any("episode_000000" in p for p in _entities(rr.dataframe.load_recording(str(out))))
    assert main(["data", "view", str(session), "--episode", "0", "--save", str(out)]) == 1
    assert str(victim) in capsys.readouterr().err


def test_ctl_watch_rerun_saves_a_running_collectors_telemetry(tmp_path, capsys):
    from collector.control import send_request
    from tests.e2e.conftest import pandalab, wait_for, wait_until_answering, write_config

    config = write_config(tmp_path, episode_steps=30, explorer={"name": "random"})
    control, telemetry = f"ipc://{tmp_path}/control", f"ipc://{tmp_path}/telemetry"
    daemon = pandalab("collect", "--config", str(config))
    out = tmp_path / "watch.rrd"
    try:
        wait_until_answering(control, daemon)
        wait_for(lambda: send_request(control, "status")["state"] == "running")
        argv = ["ctl", "watch", "--address", telemetry, "--rerun", "--save", str(out), "--count", "4"]
        assert main(argv) == 0
        server = RerunServer(tmp_path / "live.rrd")  # a viewer already running, fed over TCP
        try:
            argv = ["ctl", "watch", "--address", telemetry, "--rerun", "--connect", f"127.0.0.1:{server.port}"]
            assert main([*argv, "--count", "2"]) == 0
        finally:
            live = server.stop()
        send_request(control, "stop")
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"telemetry from {telemetry} into {out}") and printed[1] == f"wrote {out} (4 messages)"
    assert printed[2].startswith(f"telemetry from {telemetry} into the Rerun viewer at 127.0.0.1:")
    assert _rows(live, "/telemetry/steps", "Scalar", index="message")[0] == [0, 1]
    recording = rr.dataframe.load_recording(str(out))
    number, episode_steps = _rows(recording, "/telemetry/episode_steps", "Scalar", index="message")
    assert number == [0, 1, 2, 3] and [v[0] for v in episode_steps] == [30.0] * 4
    _, progress = _rows(recording, "/telemetry/episode_step", "Scalar", index="message")
    _, recorded_steps = _rows(recording, "/telemetry/steps", "Scalar", index="message")
    total = [a[0] + b[0] for a, b in zip(progress, recorded_steps, strict=True)]
    assert total == sorted(total) and total[-1] > total[0] >= 0, total  # the collector moved on
    assert len(_rows(recording, "/telemetry/step_rate_hz", "Scalar", index="message")[0]) == 4
    _, states = _rows(recording, "/telemetry/state", "Text", index="message")
    assert states and all(s[0] in ("running", "resetting", "training", "starting") for s in states), states
    _, sessions = _rows(recording, "/telemetry/session", "Text", index="message")
    assert sessions == [["e2e"]]


def test_ctl_watch_rerun_without_a_collector_exits_1_and_keeps_the_file(tmp_path, capsys):
    out = tmp_path / "none.rrd"
    argv = ["ctl", "watch", "--address", f"ipc://{tmp_path}/nobody", "--timeout", "0.3", "--save", str(out)]
    assert main(argv) == 1
    assert "no telemetry" in capsys.readouterr().err
    assert out.exists()
    assert main(["ctl", "watch", "--address", f"ipc://{tmp_path}/nobody", "--rerun", "--connect", "nowhere"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --connect nowhere: expected HOST:PORT") and err.count("\n") == 1, err
