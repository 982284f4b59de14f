"""`pandalab data info|verify|video|coverage` on real session files written by the store."""

import av
import numpy as np
import pytest

from pandalab.cli import main
from pandalab.data import DataToolError, coverage, info, verify, video
from store import SessionStore


def _write_session(root, name="s1", episodes=2, steps=30, camera=True, cube=True):
    rng = np.random.default_rng(0)
    with SessionStore.open(
        root, name, session_yaml_text="robot: {backend: pybullet}\naction_space: joint_velocity\n"
    ) as store:
        for _ in range(episodes):
            recorder = store.begin_episode({"explorer": "random"})
            for t in range(steps):
                step = {
                    "time": np.float64(t * 0.05),
                    "obs/q": rng.normal(size=7),
                    "obs/dq": rng.normal(size=7),
                    "obs/tip_pos": np.array([0.302 + 0.01 * t, 0.0, 0.1]),
                    "action": rng.normal(size=7),
                    "command": rng.normal(size=7),
                }
                if camera:
                    step["obs/images/front"] = np.full((16, 20, 3), 8 * t, dtype=np.uint8)
                if cube:
                    step["privileged/cube_pos"] = np.array([0.5, -0.1 + 0.02 * (t % 5), -0.087])
                    step["privileged/cube_top_face"] = np.int64(4 if t < 20 else 0)
                recorder.append(step)
            recorder.finish("complete")
    return root / name


def test_info_counts_episodes_steps_and_outcomes(tmp_path):
    _write_session(tmp_path / "data")
    _write_session(tmp_path / "data", "s2", episodes=1, steps=10)
    rows = info([tmp_path / "data"])
    assert [(r["episodes"], r["steps"], r["outcomes"]) for r in rows] == [
        (2, 60, {"complete": 2}),
        (1, 10, {"complete": 1}),
    ]
    assert rows[0]["backend"] == "pybullet" and rows[0]["bytes"] > 0


def test_verify_reports_a_damaged_file_and_the_cli_exits_1(tmp_path, capsys):
    session = _write_session(tmp_path)
    assert verify([session])
    assert main(["data", "verify", str(session)]) == 0
    episode = session / "episodes" / "episode_000001.h5"
    data = bytearray(episode.read_bytes())
    data[len(data) // 2] ^= 0xFF
    episode.write_bytes(bytes(data))
    assert not verify([session])
    assert main(["data", "verify", str(session)]) == 1
    assert "episode_000001.h5" in capsys.readouterr().out


def test_video_writes_every_frame_of_the_camera(tmp_path):
    session = _write_session(tmp_path)
    out = video(session, 1, tmp_path / "ep1.mp4", None, 20.0)
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 30 and frames[0].shape == (16, 20, 3)
    assert frames[-1].mean() > frames[0].mean() + 100  # the synthetic frames brighten over time


def test_video_errors_name_the_problem(tmp_path):
    session = _write_session(tmp_path, camera=False)
    with pytest.raises(DataToolError, match="no finished episode 7"):
        video(session, 7, None, None, 20.0)
    with pytest.raises(DataToolError, match="without cameras"):
        video(session, 0, None, None, 20.0)
    assert main(["data", "video", str(session), "--episode", "0"]) == 1


def test_coverage_counts_grid_cells_and_top_faces(tmp_path):
    session = _write_session(tmp_path)
    result = coverage([session], tmp_path / "coverage.png")
    # tool tip x from 0.302 to 0.592 in 1 cm steps at fixed y, z: 6 cells of 5 cm (0.30-0.35 ... 0.55-0.60)
    assert result["tip_cells"] == 6
    assert result["cube_cells"] == 5  # five cube y positions, 2 cm apart, one x
    assert result["top_face_counts"]["yellow"] == 40 and result["top_face_counts"]["red"] == 20
    assert (tmp_path / "coverage.png").stat().st_size > 10_000


def test_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nowhere")]) == 1
    assert "no such data directory" in capsys.readouterr().err
