"""`pandalab data export SESSION --to lerobot`: sessions written by the store, exported, and read
back with LeRobot 0.4's own `LeRobotDataset` (PyAV video backend) in the tool virtualenv
``.venv-lerobot`` (the Makefile builds it: LeRobot pins an older torch, so it lives apart from
ours), and with pyarrow and PyAV here; frames, states, actions, time stamps and indices are compared
with the episode arrays, images within the codec's error (H.264 4:4:4 at CRF 0: only the RGB <->
YUV rounding; bound: mean |error| < 1 and max <= 3 of 255, measured ~0.4 and 2)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pandalab.cli import main
from pandalab.exports import EXPORTS, ExportError, export_session
from store import SessionStore, iter_episodes, scan_partial

REPO = Path(__file__).resolve().parents[2]
LEROBOT_PYTHON = REPO / ".venv-lerobot" / "bin" / "python"
STEP_S = 0.05
MAE_BOUND, MAX_BOUND = 1.0, 3


def _frame(h: int, w: int, e: int, t: int, rng: np.random.Generator) -> np.ndarray:
    """A render-like frame: colour gradients, a square that moves with t, a little noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.stack(
        [xx * 255 // max(1, w - 1), yy * 255 // max(1, h - 1), np.full((h, w), (60 * e + 9 * t) % 256)], -1
    )
    y, x = t % h, (2 * t) % w
    frame[y : y + 2, x : x + 2] = [250, 30, 20]
    return np.clip(frame + rng.integers(-6, 7, frame.shape), 0, 255).astype(np.uint8)


def write_session(
    root,
    name,
    *,
    episodes=2,
    steps=9,
    cameras=None,
    backend="pybullet",
    model="panda",
    privileged=True,
    salvaged=False,
    seed=0,
):
    """A session through the store's own writer: irregular step times starting away from 0,
    distinct values everywhere, non-square frames of odd and even sizes, the collector's extra
    fields; episode 1 ends with a safety stop; with ``salvaged``, a last episode of 40 steps
    whose steps 10..19 are lost to a damaged chunk and salvaged (two runs of steps)."""
    cameras = {"front": (6, 10), "wrist": (5, 7)} if cameras is None else cameras
    config = {
        "session_id": name,
        "robot": {
            "backend": backend,
            "model": model,
            "options": {"cameras": [{"name": c, "height": h, "width": w} for c, (h, w) in cameras.items()]},
        },
        "action_space": "joint_velocity",
        "control_rate_hz": 20.0,
        "episode_steps": 40,
        "explorer": {"name": "random"},
        "safety": {"velocity_cap": 0.5},
    }
    rng = np.random.default_rng(seed)
    options = {"flush_every_steps": 10, "flush_interval_s": 3600.0, "free_space_floor_bytes": 0}
    with SessionStore.open(root, name, session_yaml_text=yaml.safe_dump(config), **options) as store:
        for e in range(episodes + bool(salvaged)):
            recorder = store.begin_episode({"explorer": "random"})
            last = salvaged and e == episodes
            for t in range(40 if last else steps):
                step = {
                    "time": np.float64(3.0 + 100.0 * e + t * STEP_S + rng.uniform(0, 0.004)),
                    "obs/q": rng.normal(size=7),
                    "obs/dq": rng.normal(size=7),
                    "obs/tip_pos": np.array([0.5, 0.2 * rng.uniform(-1, 1), 0.1]) + 0.01 * t,
                    "obs/gripper_width": np.float64(rng.uniform(0, 0.08)),
                    "action": rng.normal(size=7),
                    "command": rng.uniform(-0.5, 0.5, size=7),
                    "safety/interventions": np.int16(t % 3),
                }
                if privileged:
                    step["privileged/cube_pos"] = np.array([0.55, -0.1 + 0.02 * t, 0.02]) + rng.normal(0, 0.01, 3)
                    quat = rng.normal(size=4)
                    step["privileged/cube_quat"] = quat / np.linalg.norm(quat)
                    step["privileged/cube_top_face"] = np.int64(rng.integers(0, 6))
                for camera, (h, w) in cameras.items():
                    step[f"obs/images/{camera}"] = _frame(h, w, e, t, rng)
                recorder.append(step)
            if last:
                recorder.abandon()
            else:
                recorder.finish("safety_stop" if e == 1 else "complete")
    if salvaged:
        data = bytearray(recorder.path.read_bytes())
        data[scan_partial(recorder.path).chunks[1][2] + 3] ^= 0xFF  # an array byte of steps 10..19
        recorder.path.write_bytes(bytes(data))
        SessionStore.open(root, name, free_space_floor_bytes=0).close()  # salvages it
    return Path(root) / name


def source_episodes(session):
    """The expected LeRobot episodes: (episode, arrays of one run of consecutive steps, first row)."""
    out = []
    for episode in iter_episodes([session]):
        arrays = episode.arrays()
        for a, b in episode.segments():
            out.append((episode, {k: v[a:b] for k, v in arrays.items()}, a))
    return out


def _expected_columns(source):
    """Per-step expected values of the data columns, all exported episodes concatenated."""
    columns = {
        "observation.state": [],
        "action": [],
        "explorer_action": [],
        "observation.tip_pos": [],
        "timestamp": [],
        "recorded_time_ns": [],
        "frame_index": [],
        "episode_index": [],
    }
    for k, (_, arrays, _) in enumerate(source):
        rows = len(arrays["time"])
        columns["observation.state"].append(np.concatenate([arrays["obs/q"], arrays["obs/dq"]], 1).astype(np.float32))
        columns["action"].append(arrays["command"].astype(np.float32))
        columns["explorer_action"].append(arrays["action"].astype(np.float32))
        columns["observation.tip_pos"].append(arrays["obs/tip_pos"].astype(np.float32))
        columns["timestamp"].append((arrays["time"] - arrays["time"][0]).astype(np.float32))
        columns["recorded_time_ns"].append(np.rint(arrays["time"] * 1e9).astype(np.int64))
        columns["frame_index"].append(np.arange(rows))
        columns["episode_index"].append(np.full(rows, k))
    return {key: np.concatenate(value) for key, value in columns.items()}


def _frames(source, camera):
    return np.concatenate([arrays[f"obs/images/{camera}"] for _, arrays, _ in source])


def _image_error(got, want):
    error = np.abs(got.astype(np.int64) - want.astype(np.int64))
    return float(error.mean()), int(error.max())


READER = r'''
"""Runs in .venv-lerobot: load exported datasets with LeRobot's own LeRobotDataset, save what it returns."""
import json, sys
import numpy as np
import torch

# PyPI's torchvision wheels are CUDA builds whose compiled ops cannot load on the CPU torch this
# venv keeps; torchvision's Python side then stops at one unguarded registration for
# torchvision::nms. Declaring that op's schema lets torchvision import; LeRobot's dataset code uses
# only its transforms and VideoReader (PyAV backend), never the compiled ops.
_torchvision_ops = torch.library.Library("torchvision", "DEF")
_torchvision_ops.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import lerobot
from lerobot.datasets.lerobot_dataset import LeRobotDataset

for root, out in zip(sys.argv[1::2], sys.argv[2::2]):
    ds = LeRobotDataset("pandalab/export", root=root, video_backend="pyav")
    items = [ds[i] for i in range(len(ds))]
    saved = {}
    for key in items[0]:
        if key == "task":
            continue
        values = torch.stack([item[key] for item in items])
        if key in ds.meta.video_keys:
            values = torch.round(values * 255).to(torch.uint8).permute(0, 2, 3, 1)
        saved[key] = values.numpy()
    key = ds.meta.video_keys[0]
    lagged = LeRobotDataset(
        "pandalab/export", root=root, video_backend="pyav",
        delta_timestamps={key: [-1 / ds.fps, 0.0], "observation.state": [-1 / ds.fps, 0.0]},
    )
    pairs = [lagged[i] for i in range(len(lagged))]
    lagged_frames = torch.round(torch.stack([p[key] for p in pairs]) * 255).to(torch.uint8)
    saved["lagged_frames"] = lagged_frames.permute(0, 1, 3, 4, 2).numpy()
    saved["lagged_state"] = torch.stack([p["observation.state"] for p in pairs]).numpy()
    saved["lagged_pad"] = torch.stack([p[key + "_is_pad"] for p in pairs]).numpy()
    np.savez(out + ".npz", **saved)
    episodes = [dict(row) for row in ds.meta.episodes]
    meta = {
        "lerobot": lerobot.__version__, "torch": torch.__version__, "fps": ds.fps, "frames": len(ds),
        "episodes": ds.num_episodes, "video_keys": ds.meta.video_keys, "tasks": [item["task"] for item in items],
        "rows": [{k: v for k, v in row.items() if not k.startswith("stats/")} for row in episodes],
        "features": {k: v["dtype"] for k, v in ds.features.items()}, "stats": sorted(ds.meta.stats),
        "lagged_key": key,
    }
    with open(out + ".json", "w") as f:
        json.dump(meta, f, default=str)
'''


def _read_with_lerobot(tmp_path, roots):
    if not LEROBOT_PYTHON.exists():
        pytest.skip(".venv-lerobot is missing (`make test` builds it: make .venv-lerobot/.installed)")
    script = tmp_path / "read_with_lerobot.py"
    script.write_text(READER)
    outs = [tmp_path / f"lerobot_{i}" for i in range(len(roots))]
    argv = [str(p) for pair in zip(roots, outs, strict=True) for p in pair]
    run = subprocess.run(
        [str(LEROBOT_PYTHON), str(script), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return [(dict(np.load(f"{out}.npz")), json.loads(Path(f"{out}.json").read_text())) for out in outs]


def _check_lerobot_read(source, arrays, meta, cameras):
    expected = _expected_columns(source)
    assert meta["lerobot"].startswith("0.4.") and meta["torch"].startswith("2.13.0")
    assert (meta["frames"], meta["episodes"], meta["fps"]) == (len(expected["timestamp"]), len(source), 20)
    assert meta["video_keys"] == [f"observation.images.{c}" for c in sorted(cameras)]
    assert set(meta["tasks"]) == {"task-agnostic exploration (random explorer)"}
    for key, want in expected.items():
        np.testing.assert_array_equal(arrays[key], want, err_msg=key)
    np.testing.assert_array_equal(arrays["index"], np.arange(len(expected["timestamp"])))
    rows = meta["rows"]
    assert [r["episode_index"] for r in rows] == list(range(len(source)))
    assert [r["outcome"] for r in rows] == [e.outcome for e, _, _ in source]
    assert [(r["pandalab/episode"], r["pandalab/first_step"]) for r in rows] == [
        (e.index, int(e.step_index()[a])) for e, _, a in source
    ]
    assert [r["length"] for r in rows] == [len(arrays_["time"]) for _, arrays_, _ in source]
    errors = []
    for camera in cameras:
        got, want = arrays[f"observation.images.{camera}"], _frames(source, camera)
        assert got.shape == want.shape
        errors.append(_image_error(got, want))
        mae, worst = errors[-1]
        assert mae < MAE_BOUND and worst <= MAX_BOUND, (camera, mae, worst)
        # every frame is nearer its own step's frame than any other step's: no frame is shifted
        distance = np.abs(got[:, None].astype(np.int16) - want[None].astype(np.int16)).mean(axis=(2, 3, 4))
        np.testing.assert_array_equal(distance.argmin(axis=1), np.arange(len(want)))
    # LeRobot's training-time access (delta_timestamps): each step with its predecessor, padded at starts
    key = meta["lagged_key"].removeprefix("observation.images.")
    want = _frames(source, key)
    starts = expected["frame_index"] == 0
    previous = np.where(starts, np.arange(len(want)), np.arange(len(want)) - 1)
    np.testing.assert_array_equal(arrays["lagged_pad"], np.stack([starts, np.zeros_like(starts)], 1))
    np.testing.assert_array_equal(arrays["lagged_state"][:, 0], expected["observation.state"][previous])
    assert _image_error(arrays["lagged_frames"][:, 0], want[previous])[0] < MAE_BOUND
    return errors


def test_lerobots_own_loader_reads_every_step_of_the_export(tmp_path, capsys, monkeypatch):
    from pandalab.exports import lerobot

    cameras = {"front": (6, 10), "wrist": (5, 7)}
    session = write_session(tmp_path / "data", "cell", episodes=2, cameras=cameras, salvaged=True)
    assert main(["data", "export", str(session), "--to", "lerobot"]) == 0
    out = tmp_path / "data" / "cell.lerobot"  # the default: beside the session
    assert str(out) in capsys.readouterr().out
    # the same session with one episode per data and video file and two files per chunk folder
    monkeypatch.setattr(lerobot, "DATA_FILE_MB", 0)
    monkeypatch.setattr(lerobot, "VIDEO_FILE_MB", 0)
    monkeypatch.setattr(lerobot, "CHUNKS_SIZE", 2)
    split = tmp_path / "split"
    export_session(session, "lerobot", split)
    assert (split / "data" / "chunk-001" / "file-000.parquet").is_file()
    assert (split / "videos" / "observation.images.wrist" / "chunk-001" / "file-000.mp4").is_file()

    source = source_episodes(session)
    assert len(source) == 4 and source[-1][0].outcome == "crash_salvaged"  # the salvaged episode: two runs
    read = _read_with_lerobot(tmp_path, [out, split])
    for arrays, meta in read:
        errors = _check_lerobot_read(source, arrays, meta, cameras)
    print(f"image error through LeRobot (mean, max of 255) per camera: {errors}")


def test_layout_metadata_and_video_time_stamps(tmp_path):
    """What LeRobot's loader relies on, checked with pyarrow and PyAV here (no LeRobot needed)."""
    import av
    import pyarrow.parquet as pq

    session = write_session(tmp_path, "s", episodes=3, steps=7, cameras={"front": (6, 10)}, model="fr3")
    out = tmp_path / "export"
    result = export_session(session, "lerobot", out)
    assert (result.episodes, result.steps, result.skipped) == (3, 21, [])
    source = source_episodes(session)
    expected = _expected_columns(source)

    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["robot_type"] == "franka_fr3"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 21, 1)
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 200)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    assert features["observation.state"]["names"][:2] == ["fr3_joint1.pos", "fr3_joint2.pos"]
    assert features["observation.state"]["names"][7] == "fr3_joint1.vel"
    assert features["action"] == {"dtype": "float32", "shape": [7], "names": [f"fr3_joint{i}.vel" for i in range(1, 8)]}
    assert features["observation.images.front"]["dtype"] == "video"
    assert features["observation.images.front"]["shape"] == [6, 10, 3]
    assert features["observation.images.front"]["info"]["video.pix_fmt"] == "yuv444p"
    assert features["privileged.cube_quat"]["names"] == ["w", "x", "y", "z"]
    assert features["safety.interventions"] == {"dtype": "int64", "shape": [1], "names": None}

    data = pq.read_table(out / "data" / "chunk-000" / "file-000.parquet")
    assert set(data.column_names) == {k for k, v in features.items() if v["dtype"] != "video"}
    for key, want in expected.items():
        got = np.array(data.column(key).to_pylist())
        np.testing.assert_array_equal(got, want, err_msg=key)
    np.testing.assert_array_equal(
        np.array(data.column("privileged.cube_top_face").to_pylist()),
        np.concatenate([a["privileged/cube_top_face"] for _, a, _ in source]),
    )
    episodes = pq.read_table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [e["outcome"] for e in episodes] == ["complete", "safety_stop", "complete"]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 7), (7, 14), (14, 21)]
    assert episodes[1]["stats/observation.state/min"] == expected["observation.state"][7:14].min(0).tolist()
    assert episodes[0]["stats/observation.images.front/mean"][0] == [
        [pytest.approx(_frames(source, "front")[:7, :, :, 0].mean() / 255)]
    ]
    tasks = pq.read_table(out / "meta" / "tasks.parquet")
    assert tasks.to_pylist() == [{"task_index": 0, "task": "task-agnostic exploration (random explorer)"}]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert set(stats) == set(features)
    assert stats["action"]["max"] == pytest.approx(expected["action"].max(0).tolist())
    assert stats["observation.state"]["mean"] == pytest.approx(
        expected["observation.state"].astype(np.float64).mean(0).tolist()
    )
    assert stats["index"]["count"] == [21]

    # video: each step's frame at the episode's from_timestamp + its recorded time since the episode's start
    with av.open(str(out / "videos" / "observation.images.front" / "chunk-000" / "file-000.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.pix_fmt) == ("h264", "yuv444p")
        decoded = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    starts = np.repeat([e["videos/observation.images.front/from_timestamp"] for e in episodes], 7)
    np.testing.assert_allclose([t for t, _ in decoded], starts + expected["timestamp"], atol=1e-5)
    for previous, following in itertools.pairwise(episodes):  # one control period between episodes
        gap = (
            following["videos/observation.images.front/from_timestamp"]
            - previous["videos/observation.images.front/to_timestamp"]
        )
        assert gap == 0.0
    mae, worst = _image_error(np.stack([f for _, f in decoded]), _frames(source, "front"))
    assert mae < MAE_BOUND and worst <= MAX_BOUND, (mae, worst)


def test_a_damaged_episode_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    import pyarrow.parquet as pq

    session = write_session(tmp_path, "s", episodes=3, cameras={"front": (4, 4)})
    episode = session / "episodes" / "episode_000001.h5"
    data = bytearray(episode.read_bytes())
    data[len(data) // 2] ^= 0xFF
    episode.write_bytes(bytes(data))
    assert main(["data", "export", str(session), "--to", "lerobot", "--out", str(tmp_path / "ds")]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "episode_000001.h5" in warning[0] and "checksum" in warning[0]
    assert "1 damaged episode(s) skipped" in captured.out
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert "episode_000001.h5" in info["pandalab"]["skipped"][0]
    episodes = pq.read_table(tmp_path / "ds" / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    assert [(e["episode_index"], e["pandalab/episode"]) for e in episodes] == [(0, 0), (1, 2)]


def test_an_episode_unlike_the_first_is_skipped(tmp_path, capsys):
    session = write_session(tmp_path, "s", episodes=1, cameras={"front": (4, 4)})
    with SessionStore.open(tmp_path, "s") as store:  # a second episode with a differently sized camera
        recorder = store.begin_episode({})
        for t in range(3):
            recorder.append(
                {
                    "time": np.float64(t),
                    **{k: np.zeros(7) for k in ("obs/q", "obs/dq", "action", "command")},
                    "obs/tip_pos": np.zeros(3),
                    "obs/gripper_width": np.float64(0),
                    "safety/interventions": np.int16(0),
                    "privileged/cube_pos": np.zeros(3),
                    "privileged/cube_quat": np.ones(4) / 2,
                    "privileged/cube_top_face": np.int64(0),
                    "obs/images/front": np.zeros((4, 6, 3), np.uint8),
                }
            )
        recorder.finish("complete")
    result = export_session(session, "lerobot", tmp_path / "ds", warn=print)
    assert result.episodes == 1 and "episode_000001.h5" in result.skipped[0]
    assert "obs/images/front frames are (4, 6, 3), the first exported episode's (4, 4, 3)" in capsys.readouterr().out


def _error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: skipping damaged episode ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("output exists", ["{root}/data/s", "--to", "lerobot", "--out", "{root}/taken"], "exists already"),
        ("all damaged", ["{root}/data/bad", "--to", "lerobot"], "no readable episode"),
        ("not a session", ["{root}/taken", "--to", "lerobot"], "is not a pandalab session"),
        ("option of minari", ["{root}/data/s", "--to", "lerobot", "--task", "reach:0"], "--task does not apply"),
        ("out under a file", ["{root}/data/s", "--to", "lerobot", "--out", "{root}/taken/keep/ds"], "cannot create"),
    ],
)
def test_refusals_are_one_line_and_leave_nothing(tmp_path, capsys, case, args, message):
    write_session(tmp_path / "data", "s", episodes=1, steps=2, cameras={})
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep").write_text("mine")
    if case == "all damaged":
        bad = write_session(tmp_path / "data", "bad", episodes=1, steps=2, cameras={})
        (bad / "episodes" / "episode_000000.h5").write_bytes(b"not hdf5")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["data", "export", *(a.format(root=tmp_path) for a in args)]) == 1
    assert message in _error_line(capsys)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written, nothing left


def test_a_failure_while_writing_leaves_no_output(tmp_path, monkeypatch):
    from pandalab.exports import lerobot

    session = write_session(tmp_path, "s", episodes=2, steps=3, cameras={"front": (4, 4)})
    calls = []
    original = lerobot._Writer._write_segment

    def fail_on_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(lerobot._Writer, "_write_segment", fail_on_second)
    with pytest.raises(ExportError, match="No space left on device"):
        export_session(session, "lerobot", tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no dataset, no scratch folder


def test_the_registry_loads_each_export_only_when_it_runs():
    assert EXPORTS["lerobot"] == "pandalab.exports.lerobot:export_lerobot"
    assert EXPORTS["minari"] == "pandalab.exports.minari:export_minari"
    code = (
        "import sys, pandalab.exports, pandalab.cli; "
        "print(*(m in sys.modules for m in ('pyarrow', 'av', 'minari', 'pandalab.exports.lerobot')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"] * 4
