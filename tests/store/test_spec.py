"""What a session records (store/spec.py): written resolved by the collector, read by everything
else, and derived for sessions recorded before it existed.

The fixtures in tests/fixtures/sessions_before_spec/ were recorded by the collector of the commit
before the spec (7c009e1, PyBullet): ``recorded-before-spec`` with tip_delta actions and one
16x12 camera, ``recorded-before-spec-defaults`` with every default left implicit (no cameras
option: the simulator's default 84x84 front camera; joint_velocity)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from collector.config import parse_session_config
from learning.dataset import DamagedSessionError, OfflineDataset, read_session_info
from store import SPEC_FILE, SessionReader, SessionSpec, SpecError, iter_episodes, read_session_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sessions_before_spec"


@pytest.fixture
def old_sessions(tmp_path) -> Path:
    """A copy of the sessions recorded before the spec (readers may write caches beside them)."""
    root = tmp_path / "data"
    shutil.copytree(FIXTURES, root)
    return root


def _episodes(session: Path) -> list:
    return list(iter_episodes(session))


def test_an_old_session_with_defaults_left_out_gets_the_defaults_of_its_time(old_sessions):
    session = old_sessions / "recorded-before-spec-defaults"
    assert not (session / SPEC_FILE).exists()
    spec = read_session_spec(session)
    assert (spec.backend, spec.simulated, spec.action_space) == ("pybullet", True, "joint_velocity")
    assert (spec.control_rate_hz, spec.episode_steps, spec.observation, spec.explorer) == (
        20.0,
        4,
        "proprio",
        "random_linear",
    )
    assert [(c.name, c.width, c.height) for c in spec.cameras] == [("front", 84, 84)]
    assert SessionReader(session).spec == spec and spec.explorer_camera == "front"
    # The derived defaults are what the old collector actually recorded.
    (episode,) = _episodes(session)
    with episode:
        assert tuple(episode.fields["obs/images/front"].shape) == (84, 84, 3)
        assert tuple(episode.fields["action"].shape) == (spec.action_dim,) == (7,)
        assert episode.steps == spec.episode_steps


def test_an_old_session_with_its_own_settings_is_described_by_them(old_sessions):
    session = old_sessions / "recorded-before-spec"
    spec = read_session_spec(session)
    assert (spec.action_space, spec.action_dim, spec.episode_steps) == ("tip_delta", 3, 6)
    assert [(c.name, c.width, c.height) for c in spec.cameras] == [("front", 16, 12)]
    assert spec.explorer_camera == "front"
    assert spec.observation_shape("image") == (12, 16, 3)
    for episode in _episodes(session):
        with episode:
            assert tuple(episode.fields["obs/images/front"].shape) == spec.observation_shape("image")
            assert tuple(episode.fields["action"].shape) == (3,)


def test_observations_rebuilt_from_stored_arrays_are_q_then_dq_then_the_cube(old_sessions):
    spec = read_session_spec(old_sessions / "recorded-before-spec")
    episode = _episodes(old_sessions / "recorded-before-spec")[0]
    with episode:
        arrays = {k: episode.load(k) for k in ("obs/q", "obs/dq", "privileged/cube_pos", "privileged/cube_quat")}
    proprio = spec.observation_from(arrays, "proprio")
    assert proprio.shape == (episode.steps, 14) and spec.observation_shape("proprio") == (14,)
    np.testing.assert_array_equal(proprio[:, :7], arrays["obs/q"])
    np.testing.assert_array_equal(proprio[:, 7:], arrays["obs/dq"])
    full = spec.observation_from(arrays, "proprio+object")
    assert full.shape == (episode.steps, 21) == (episode.steps, *spec.observation_shape("proprio+object"))
    np.testing.assert_array_equal(full[:, 14:17], arrays["privileged/cube_pos"])
    np.testing.assert_array_equal(full[:, 17:], arrays["privileged/cube_quat"])
    one_step = {k: v[2] for k, v in arrays.items()}
    np.testing.assert_array_equal(spec.observation_from(one_step, "proprio+object"), full[2])


def test_the_dataset_reads_old_sessions(old_sessions):
    dataset = OfflineDataset(old_sessions / "recorded-before-spec", "reach:0")
    assert dataset.num_transitions == 2 * (6 - 1)
    assert dataset.env_spec["cameras"] == [{"name": "front", "width": 16, "height": 12}]
    assert dataset.env_spec["backend"] == "pybullet"


def _collect(tmp_path, **overrides) -> Path:
    from pandalab.cli import main

    config = {
        "data_root": str(tmp_path / "data"),
        "session_id": "with-spec",
        "robot": {"backend": "pybullet"},
        "episode_steps": 5,
        "seed": 2,
        "stop": {"episodes": 1},
        "control_address": f"ipc://{tmp_path}/c",
        "telemetry_address": f"ipc://{tmp_path}/t",
        **overrides,
    }
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["collect", "--config", str(path)]) == 0
    return tmp_path / "data" / "with-spec"


def test_the_collector_writes_the_resolved_spec_and_session_yaml(tmp_path):
    session = _collect(tmp_path, explorer={"name": "random", "observation": "proprio+object"})
    spec = read_session_spec(session)
    assert json.loads((session / SPEC_FILE).read_text())["format"] == "pandalab-session-spec"
    # The options are resolved (the simulator's default camera and collision reflex thresholds
    # written out), in both files.
    assert [c.model_dump() for c in spec.cameras] == [{"name": "front", "width": 84, "height": 84}]
    recorded = yaml.safe_load((session / "session.yaml").read_text())
    assert recorded["robot"]["options"] == {
        "cameras": [{"name": "front", "width": 84, "height": 84}],
        "collision_reflex": {
            "joint_torque_thresholds_nm": [20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0],
            "tool_wrench_thresholds": [20.0, 20.0, 20.0, 25.0, 25.0, 25.0],
        },
    }
    assert spec == parse_session_config(recorded).session_spec()
    assert (spec.observation, spec.explorer, spec.simulated) == ("proprio+object", "random", True)
    assert spec.episode_steps == 5
    (episode,) = _episodes(session)
    with episode:
        assert tuple(episode.fields["obs/images/front"].shape) == spec.observation_shape("image")
        assert episode.steps == 5


def test_a_damaged_spec_is_one_line_naming_the_file(tmp_path):
    session = _collect(tmp_path)
    (session / SPEC_FILE).write_text('{"format": "pandalab-session-spec", "episode_steps": "many"}')
    with pytest.raises(SpecError) as caught:
        read_session_spec(session)
    assert str(caught.value).startswith(f"{session / SPEC_FILE}: damaged {SPEC_FILE}: ")
    assert "\n" not in str(caught.value)
    with pytest.raises(DamagedSessionError, match=SPEC_FILE):
        read_session_info(session)


def test_an_image_observation_without_a_camera_is_refused_in_one_line():
    spec = SessionSpec(
        session_id="s",
        backend="pybullet",
        simulated=True,
        action_space="joint_velocity",
        control_rate_hz=20.0,
        episode_steps=10,
        home_q=(0.0,) * 7,
        observation="image",
        explorer="rnd",
    )
    with pytest.raises(SpecError, match="needs a camera"):
        spec.observation_shape()
    with pytest.raises(SpecError, match="unknown observation kind"):
        spec.observation_fields("pixels")


def test_resuming_an_old_session_with_its_own_config_records_no_config_change(old_sessions):
    """Its session.yaml left the backend's defaults out; resolved, it says the same as ours."""
    from pandalab.cli import main

    session = old_sessions / "recorded-before-spec-defaults"
    recorded = yaml.safe_load((session / "session.yaml").read_text())
    recorded["data_root"] = str(old_sessions)  # as if recorded here
    recorded["control_address"] = f"ipc://{old_sessions}/c"
    recorded["telemetry_address"] = f"ipc://{old_sessions}/t"
    text = yaml.safe_dump(recorded, sort_keys=False)
    (session / "session.yaml").write_text(text)
    config = old_sessions / "config.yaml"
    config.write_text(text)
    assert main(["collect", "--config", str(config)]) == 0  # its stop condition is already met
    assert sorted(p.name for p in session.glob("session*")) == ["session.yaml"]
    assert (session / "session.yaml").read_text() == text
    assert read_session_spec(session).cameras[0].width == 84  # still derived from its session.yaml


def test_a_damaged_spec_refuses_the_start_and_fails_verify(tmp_path, capsys):
    from pandalab.cli import main

    session = _collect(tmp_path)
    (session / SPEC_FILE).write_text("{not json")
    assert main(["collect", "--config", str(tmp_path / "session.yaml")]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{session / SPEC_FILE}: damaged {SPEC_FILE}" in err[0]
    assert main(["data", "verify", str(session)]) == 1
    assert f"DAMAGED  {session / SPEC_FILE}" in capsys.readouterr().out
