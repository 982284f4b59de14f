"""What the learned explorers replay from the store is what the collector showed them: the
session's observation fields, or the frames of the explorer's camera, both from the session's
description (`store.read_session_spec`), for sessions recorded before the spec existed too
(fixtures in tests/fixtures/sessions_before_spec/, see tests/store/test_spec.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from collector.explorers import ExplorerSpec, make_explorer
from collector.explorers.replay import EpisodeReplay, explorer_observation
from store import SessionSpec, SessionStore, SpecError, iter_episodes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sessions_before_spec"
SMALL_TD3 = {"actor_hidden": [8], "critic_hidden": [8], "rnd_hidden": [8], "rnd_output_dim": 4, "batch_size": 4}
SMALL_TD3 |= {"conv_layers": [[4, 4, 2]], "rnd_conv_layers": [[4, 4, 2]], "updates_per_episode": 1}
SMALL_SSE = {"hidden": [8], "batch_size": 4, "horizon": 2, "updates_per_episode": 1, "feature_dim": 4}
SMALL_DIAYN = {"num_skills": 2, "hidden": [8], "discriminator_hidden": [8], "batch_size": 4, "feature_dim": 4}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The explorers set the process's torch threads; other tests keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _spec(kind: str = "vector", *, size: int = 14, image_shape=None, action_dim: int = 3) -> ExplorerSpec:
    return ExplorerSpec(
        observation_low=-np.ones(size),
        observation_high=np.ones(size),
        action_limit=np.full(action_dim, 0.05),
        action_dim=action_dim,
        episode_steps=6,
        observation_kind=kind,
        image_shape=image_shape,
    )


def _session_spec(observation: str) -> SessionSpec:
    return SessionSpec(
        session_id="s",
        backend="pybullet",
        simulated=True,
        action_space="tip_delta",
        control_rate_hz=20.0,
        episode_steps=6,
        home_q=(0.0,) * 7,
        cameras=({"name": "wrist", "width": 8, "height": 8},),
        observation=observation,
        explorer="rnd",
    )


def test_the_observation_kind_is_the_sessions_own_or_the_one_of_the_explorers_size():
    assert explorer_observation(_session_spec("proprio"), _spec(size=14)) == "proprio"
    assert explorer_observation(_session_spec("proprio+object"), _spec(size=21)) == "proprio+object"
    # a session whose description leaves the observation at its default (proprio) and a 21-value explorer
    assert explorer_observation(_session_spec("proprio"), _spec(size=21)) == "proprio+object"
    assert explorer_observation(_session_spec("proprio"), _spec("image", image_shape=(8, 8, 3))) == "image"
    with pytest.raises(ValueError, match="cannot rebuild 10-value explorer observations from session s"):
        explorer_observation(_session_spec("image"), _spec(size=10))


@pytest.mark.parametrize(
    "name, shape, action_dim",
    [("recorded-before-spec", (12, 16, 3), 3), ("recorded-before-spec-defaults", (84, 84, 3), 7)],
    ids=["named-camera", "default-camera"],
)
def test_image_explorers_see_the_camera_of_sessions_recorded_before_the_spec(tmp_path, name, shape, action_dim):
    """The first camera session.yaml names, or, when it names none, the simulator's default front
    camera (the camera the old collector showed image explorers)."""
    session = tmp_path / name
    shutil.copytree(FIXTURES / name, session)
    spec = _spec("image", image_shape=shape, action_dim=action_dim)
    stored = np.concatenate([e.load("obs/images/front") for e in iter_episodes(session)])
    replay = EpisodeReplay(spec)
    new = replay.sync(session)
    assert replay.fields == ("obs/images/front",) and new == [e.index for e in iter_episodes(session)]
    episodes, steps = replay.sample_states(len(stored), np.random.default_rng(0))
    np.testing.assert_array_equal(replay.gather(episodes, steps), stored)
    if min(shape[:2]) >= 15:  # sse's image encoder takes 15 x 15 pixels at least
        sse = make_explorer("sse", spec, SMALL_SSE, seed=0)
        sse.train(session)
        assert sse.replay.reader.spec.explorer_camera == "front" and sse.transitions == len(stored) - len(new)


def _two_camera_session(root: Path) -> SessionStore:
    """A session whose description names the side camera first: the explorer's camera is side."""
    cameras = "[{name: side, width: 16, height: 16}, {name: front}]"
    store = SessionStore.open(root, "s", session_yaml_text=f"robot:\n  options:\n    cameras: {cameras}\n")
    rng = np.random.default_rng(0)
    for _ in range(2):
        recorder = store.begin_episode()
        for _ in range(6):
            recorder.append(
                {
                    "obs/q": rng.uniform(-1, 1, 7),
                    "obs/dq": rng.uniform(-1, 1, 7),
                    "obs/images/front": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                    "obs/images/side": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                    "action": rng.uniform(-0.05, 0.05, 3),
                }
            )
        recorder.finish("complete")
    return store


@pytest.mark.parametrize("name", ["rnd", "gcrnd", "sse"])
def test_the_explorers_camera_is_the_first_the_session_names(tmp_path, name):
    with _two_camera_session(tmp_path) as store:
        parameters = SMALL_SSE if name == "sse" else SMALL_TD3
        explorer = make_explorer(name, _spec("image", image_shape=(16, 16, 3)), parameters, 0)
        explorer.train(store)
        side = np.concatenate([e.load("obs/images/side") for e in iter_episodes(store.session_dir)])
        if name == "sse":
            np.testing.assert_array_equal(explorer.replay.arrays["all_x"], explorer.encode(side).numpy())
        else:
            assert explorer.replay.fields == ("obs/images/side",)
            np.testing.assert_array_equal(explorer.replay.gather(np.repeat([0, 1], 6), np.tile(np.arange(6), 2)), side)


@pytest.mark.parametrize("name", ["rnd", "sse", "diayn"])
def test_a_session_without_a_description_is_refused_by_name(tmp_path, name):
    with SessionStore.open(tmp_path, "s") as store:  # no session.yaml: not a session the collector wrote
        recorder = store.begin_episode()
        for _ in range(3):
            recorder.append({"obs/q": np.zeros(7), "obs/dq": np.zeros(7), "action": np.zeros(3)})
        recorder.finish("complete")
        explorer = make_explorer(name, _spec(), {"sse": SMALL_SSE, "diayn": SMALL_DIAYN}.get(name, SMALL_TD3), 0)
        with pytest.raises(SpecError, match=r"session\.yaml: missing"):
            explorer.train(store)
