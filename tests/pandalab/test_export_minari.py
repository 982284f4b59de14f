"""`pandalab data export SESSION --to minari --task T`: sessions written by the store, exported,
opened with `minari.load_dataset` and compared with the episode arrays and with the trainer's own
dataset (`learning.dataset.OfflineDataset`: relabelled rewards, truncations, no terminals); the
evaluation environment comes back with `recover_environment(eval_env=True)`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pandalab.cli import main
from pandalab.exports import ExportError, export_session
from store import iter_episodes

from .test_export_lerobot import write_session


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _source_runs(session):
    """(episode, arrays of one run of consecutive steps, first row) of every run of >= 2 steps."""
    out = []
    for episode in iter_episodes([session]):
        arrays = episode.arrays()
        out += [(episode, {k: v[a:b] for k, v in arrays.items()}, a) for a, b in episode.segments() if b - a >= 2]
    return out


def test_minari_loads_the_relabelled_dataset_and_recovers_the_eval_env(tmp_path, minari_root, capsys):
    import minari

    from learning.dataset import OfflineDataset
    from learning.relabel import relabel
    from sim.tasks import make_task

    session = write_session(tmp_path / "data", "cell", episodes=2, cameras={"front": (6, 10)}, salvaged=True)
    assert main(["data", "export", str(session), "--to", "minari", "--task", "push"]) == 0  # into $MINARI_DATASETS_PATH
    assert str(minari_root / "pandalab" / "cell-push-v0") in capsys.readouterr().out
    dataset = minari.load_dataset("pandalab/cell-push-v0")
    runs = _source_runs(session)
    assert len(runs) == 4 and runs[-1][0].outcome == "crash_salvaged"  # the salvaged episode: two runs
    transitions = sum(len(arrays["time"]) - 1 for _, arrays, _ in runs)
    assert (dataset.total_episodes, dataset.total_steps) == (4, transitions)

    # the trainer's view of the same data: rewards, and where transitions end (no terminals)
    trainer = OfflineDataset(session, "push", "proprio")
    assert trainer.num_transitions == transitions
    valid = trainer.valid_np
    reward_next = trainer.reward_next[valid]
    terminal_next = trainer.terminal_next[valid]
    last_of_run = ~np.isin(valid + 1, valid)  # the state after it starts no transition: its run's last

    task = make_task("push")
    row = 0
    for (_, arrays, _), minari_episode in zip(runs, dataset.iterate_episodes(), strict=True):
        n = len(arrays["time"])
        observations = minari_episode.observations
        assert sorted(observations) == sorted(["q", "dq", "tip_pos", "cube_pos", "cube_quat", "cube_top_face", "front"])
        np.testing.assert_array_equal(observations["q"], arrays["obs/q"])
        np.testing.assert_array_equal(observations["dq"], arrays["obs/dq"])
        np.testing.assert_array_equal(observations["tip_pos"], arrays["obs/tip_pos"])
        np.testing.assert_array_equal(observations["cube_pos"], arrays["privileged/cube_pos"])
        np.testing.assert_array_equal(observations["cube_quat"], arrays["privileged/cube_quat"])
        np.testing.assert_array_equal(observations["cube_top_face"], arrays["privileged/cube_top_face"])
        np.testing.assert_array_equal(observations["front"], arrays["obs/images/front"])  # stored raw: exact
        np.testing.assert_array_equal(minari_episode.actions, arrays["command"][:-1])
        reward, success = relabel(task, arrays)
        np.testing.assert_array_equal(minari_episode.rewards, reward[1:])
        np.testing.assert_array_equal(minari_episode.rewards, reward_next[row : row + n - 1])
        assert not minari_episode.terminations.any() and not terminal_next[row : row + n - 1].any()
        np.testing.assert_array_equal(minari_episode.truncations, np.arange(n - 1) == n - 2)
        np.testing.assert_array_equal(minari_episode.truncations, last_of_run[row : row + n - 1])
        np.testing.assert_array_equal(minari_episode.infos["success"], success)
        np.testing.assert_array_equal(minari_episode.infos["time"], arrays["time"])
        row += n - 1
    assert np.any(reward_next > 0) and np.any(reward_next < 1)  # the task's reward varies over this data
    metadata = list(dataset.storage.get_episode_metadata(range(4)))
    assert [(m["outcome"], m["pandalab_episode"]) for m in metadata] == [(e.outcome, e.index) for e, _, _ in runs]
    assert [m["pandalab_first_step"] for m in metadata][-2:] == [0, 20]  # steps 10..19 were lost
    assert dataset.storage.metadata["pandalab_task"] == "push"

    env = dataset.recover_environment(eval_env=True)
    try:
        assert env.observation_space == dataset.observation_space
        assert env.action_space == dataset.action_space
        spec = json.loads(dataset.storage.metadata["eval_env_spec"])
        assert spec["kwargs"]["task"] == "push" and spec["kwargs"]["env_spec"]["backend"] == "pybullet"
        observation, _ = env.reset(seed=0)
        assert observation["front"].shape == (6, 10, 3)
        _, reward, terminated, _, info = env.step(dataset[0].actions[0])
        assert not terminated and "success" in info and np.isfinite(reward)
    finally:
        env.close()


def test_reach_on_hardware_data_with_an_explicit_id_and_relative_root(tmp_path, monkeypatch):
    import minari

    session = write_session(tmp_path, "arm", episodes=2, steps=5, cameras={}, backend="bridge", privileged=False)
    out = tmp_path / "datasets"
    monkeypatch.chdir(tmp_path)
    args = ["data", "export", "arm", "--to", "minari", "--task", "reach:1", "--dataset-id", "lab/arm-v3"]
    assert main([*args, "--out", "datasets"]) == 0
    assert (out / "lab" / "namespace_metadata.json").is_file()
    dataset = minari.MinariDataset(out / "lab" / "arm-v3" / "data")
    assert dataset.spec.dataset_id == "lab/arm-v3" and dataset.spec.env_spec is None  # hardware: no sim collected it
    assert sorted(dataset.observation_space) == ["dq", "q", "tip_pos"]
    spec = json.loads(dataset.storage.metadata["eval_env_spec"])
    assert spec["entry_point"] == "learning.evaluate:make_env" and spec["kwargs"]["task"] == "reach:1"
    episode = next(dataset.iterate_episodes())
    from sim.tasks import make_task

    arrays = next(iter_episodes([session])).arrays()
    goal = make_task("reach:1").goal
    np.testing.assert_allclose(episode.rewards, -np.linalg.norm(arrays["obs/tip_pos"][1:] - goal, axis=1), rtol=1e-6)


def test_a_damaged_episode_is_skipped_with_a_warning_naming_it(tmp_path, minari_root, capsys):
    import minari

    session = write_session(tmp_path, "s", episodes=3, cameras={})
    episode = session / "episodes" / "episode_000001.h5"
    data = bytearray(episode.read_bytes())
    data[len(data) // 2] ^= 0xFF
    episode.write_bytes(bytes(data))
    assert main(["data", "export", str(session), "--to", "minari", "--task", "reach:0"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "episode_000001.h5" in warning[0] and "checksum" in warning[0]
    assert "1 damaged episode(s) skipped" in captured.out
    dataset = minari.load_dataset("pandalab/s-reach-0-v0")
    assert [m["pandalab_episode"] for m in dataset.storage.get_episode_metadata(range(2))] == [0, 2]
    assert "episode_000001.h5" in dataset.storage.metadata["pandalab_skipped"][0]


def _error_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("no task", ["{root}/data/s", "--to", "minari"], "--to minari needs --task"),
        ("unknown task", ["{root}/data/s", "--to", "minari", "--task", "dance"], "unknown task 'dance'"),
        ("bad goal", ["{root}/data/s", "--to", "minari", "--task", "reach:9"], "goal index must be in 0..3"),
        ("no cube", ["{root}/data/arm", "--to", "minari", "--task", "flip:red"], "needs privileged simulator state"),
        (
            "bad id",
            ["{root}/data/s", "--to", "minari", "--task", "push", "--dataset-id", "x"],
            "not a Minari dataset id",
        ),
        ("exists", ["{root}/data/s", "--to", "minari", "--task", "push", "--dataset-id", "taken-v0"], "exists already"),
        ("no transition", ["{root}/data/short", "--to", "minari", "--task", "push"], "no readable episode with a"),
        ("minari option", ["{root}/data/s", "--to", "rosbag2", "--dataset-id", "a-v0"], "--dataset-id does not apply"),
    ],
)
def test_refusals_are_one_line_and_leave_nothing(tmp_path, minari_root, capsys, case, args, message):
    write_session(tmp_path / "data", "s", episodes=1, steps=3, cameras={})
    write_session(tmp_path / "data", "arm", episodes=1, steps=3, cameras={}, backend="bridge", privileged=False)
    write_session(tmp_path / "data", "short", episodes=1, steps=1, cameras={})
    (minari_root / "taken-v0").mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["data", "export", *(a.format(root=tmp_path) for a in args)]) == 1
    assert message in _error_line(capsys)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written, nothing left


def test_a_failure_while_writing_leaves_no_dataset(tmp_path, monkeypatch):
    from learning import relabel as relabel_module

    session = write_session(tmp_path / "data", "s", episodes=2, steps=3, cameras={})
    calls = []
    original = relabel_module.relabel

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(relabel_module, "relabel", fail_on_second)
    with pytest.raises(ExportError, match="No space left on device"):
        export_session(session, "minari", tmp_path / "out" / "s-v0", task="reach:0", dataset_id="s-v0")
    assert list((tmp_path / "out").iterdir()) == []  # no dataset, no scratch folder
