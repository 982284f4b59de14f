"""``sse``, self-supervised exploration (seed 001, section 3.1, eqs. 5-6): disagreement, the actor
gradient through the imagined rollout, model learning, exact resume, and the real daemon in both
simulators with and without images."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from collector.explorers import ExplorerSpec, make_explorer
from collector.explorers.sse import SelfSupervisedExploration, disagreement
from store import SessionStore, read_events, read_manifest
from tests.e2e.conftest import pandalab, write_config

TINY = {"hidden": [32, 32], "batch_size": 16, "horizon": 4, "updates_per_episode": 5}
VECTOR_SPEC = ExplorerSpec(
    observation_low=np.concatenate([np.full(7, -2.9), np.full(7, -0.5)]),
    observation_high=np.concatenate([np.full(7, 2.9), np.full(7, 0.5)]),
    action_limit=np.full(7, 0.5),
    action_dim=7,
    episode_steps=30,
)
IMAGE_SPEC = ExplorerSpec(
    VECTOR_SPEC.observation_low,
    VECTOR_SPEC.observation_high,
    VECTOR_SPEC.action_limit,
    7,
    30,
    observation_kind="image",
    image_shape=(24, 24, 3),
)


def _record(store: SessionStore, rng: np.random.Generator, steps: int = 30, outcome: str = "complete") -> None:
    """An episode of a noisy linear system q' = q + 0.05 dq, dq' = 0.9 dq + 0.1 a (and a frame)."""
    recorder = store.begin_episode({"explorer": "sse"})
    q, dq = rng.uniform(-1, 1, 7), np.zeros(7)
    for _ in range(steps):
        action = rng.uniform(-0.5, 0.5, 7)
        frame = np.full((24, 24, 3), int(128 + 100 * np.tanh(q[0])), dtype=np.uint8)
        frame[:, : 12 + int(10 * np.tanh(q[1]))] = 30
        step = {"obs/q": q.copy(), "obs/dq": dq.copy(), "action": action, "command": action}
        recorder.append(step | {"obs/images/front": frame})
        q, dq = q + 0.05 * dq, 0.9 * dq + 0.1 * action
    recorder.finish(outcome)


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The explorer sets the process's torch threads (its `torch_threads`); other tests keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


SESSION_YAML = "robot:\n  options:\n    cameras: [{name: front, width: 24, height: 24}]\n"
"""The session's description (the collector always writes one): the explorer's camera is front."""


@pytest.fixture
def store(tmp_path):
    with SessionStore.open(tmp_path, "s", session_yaml_text=SESSION_YAML) as opened:
        rng = np.random.default_rng(0)
        for i in range(4):
            _record(opened, rng, outcome="safety_stop" if i == 1 else "complete")
        yield opened


def _explorer(spec=VECTOR_SPEC, seed=0, **overrides) -> SelfSupervisedExploration:
    return make_explorer("sse", spec, TINY | overrides, seed=seed)


def test_disagreement_is_zero_for_identical_models_and_positive_otherwise():
    explorer = _explorer()
    x, a = torch.rand(8, 14) * 2 - 1, torch.rand(8, 7) * 2 - 1
    first, second = explorer.models
    assert torch.all(disagreement(first(x, a), second(x, a)) > 0)
    second.load_state_dict(first.state_dict())
    np.testing.assert_array_equal(disagreement(first(x, a), second(x, a)).detach().numpy(), np.zeros(8))
    value, parts = explorer.imagined_return(x, prime=0)
    assert float(parts["disagreement"]) == 0.0
    (-value.mean()).backward()  # ||0|| has no derivative: the gradient must still be finite (0), never NaN
    assert all(torch.all(torch.isfinite(p.grad)) for p in explorer.policy.parameters())


def test_the_actor_gradient_through_the_imagined_rollout_is_finite_and_nonzero():
    explorer = _explorer()
    value, parts = explorer.imagined_return(torch.rand(16, 14) * 2 - 1, prime=1)
    (-value.mean()).backward()
    grads = [p.grad for p in explorer.policy.parameters()]
    assert all(g is not None and torch.all(torch.isfinite(g)) for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert float(parts["disagreement"]) > 0


def test_training_lowers_the_model_loss_on_a_linear_system(store):
    explorer = _explorer(updates_per_episode=0, model_lr=2e-3)
    explorer.train(store)
    assert explorer.transitions == 4 * 29
    assert explorer.replay.arrays["all_done"].sum() == 1, "only the last step of the safety_stop episode is done"
    before = [explorer.update()["model1_loss"] for _ in range(5)]
    for _ in range(150):
        stats = explorer.update()
    assert stats["model1_loss"] < 0.5 * np.mean(before) and stats["model2_loss"] < 0.5 * np.mean(before)
    assert np.isfinite(stats["policy_loss"]) and stats["disagreement"] > 0


def test_actions_inside_the_box_and_image_observations_run(store):
    for spec in (VECTOR_SPEC, IMAGE_SPEC):
        explorer = _explorer(spec)
        explorer.begin_episode()
        rng = np.random.default_rng(1)
        for _ in range(5):
            if spec.observation_kind == "image":
                observation = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            else:
                observation = rng.normal(0, 100, 14)
            action = explorer.act(observation)
            assert action.shape == (7,) and np.all(np.abs(action) <= 0.5)
        stats = explorer.train(store)
        assert stats["sse_updates"] == 5 and np.isfinite(stats["sse_policy_loss"])
        assert explorer.replay.arrays["x"].shape[1] == (50 if spec.observation_kind == "image" else 14)


@pytest.mark.parametrize("spec", [VECTOR_SPEC, IMAGE_SPEC], ids=["vector", "image"])
def test_save_load_round_trip_gives_identical_actions_and_training_and_continues_counters(store, spec):
    explorer = _explorer(spec, seed=3)
    explorer.begin_episode()
    explorer.train(store)
    saved = pickle.loads(pickle.dumps(explorer.state_dict()))
    restored = _explorer(spec, seed=99)
    restored.load_state_dict(saved)
    assert (restored.updates, restored.episodes_started, restored.train_calls) == (5, 1, 1)

    observation = np.zeros((24, 24, 3), np.uint8) if spec.observation_kind == "image" else np.full(14, 0.1)
    for _ in range(3):
        np.testing.assert_array_equal(explorer.act(observation), restored.act(observation))
    _record(store, np.random.default_rng(7))  # a new episode arrives; the restored one rebuilds its cache
    first, second = explorer.train(store), restored.train(store)
    assert first == second and first["sse_updates_total"] == 10
    for a, b in zip(explorer.policy.parameters(), restored.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_updates_default_to_one_per_new_transition_and_wait_for_warmup(tmp_path):
    with SessionStore.open(tmp_path, "s", session_yaml_text=SESSION_YAML) as store:
        explorer = _explorer(updates_per_episode=None, batch_size=32)
        _record(store, np.random.default_rng(0), steps=20)
        assert explorer.train(store)["sse_updates"] == 0, "19 transitions < batch 32"
        _record(store, np.random.default_rng(1), steps=20)
        assert explorer.train(store)["sse_updates"] == 19
        restored = _explorer(updates_per_episode=None, batch_size=32)
        restored.load_state_dict(explorer.state_dict())
        assert restored.train(store)["sse_updates"] == 0, "no new data: the restart must not retrain on old data"


def _run_daemon(tmp_path, backend: str, observation: str, episodes: int) -> None:
    camera = {"name": "front", "width": 24, "height": 24} if backend == "pybullet" else {"name": "front"}
    if backend == "robosuite":
        camera |= {"width": 32, "height": 32}
    config = write_config(
        tmp_path,
        robot={"backend": backend, "options": {"cameras": [camera]}},
        episode_steps=20,
        explorer={"name": "sse", "observation": observation, "parameters": TINY | {"feature_dim": 16}},
        stop={"episodes": episodes},
    )
    process = pandalab("collect", "--config", str(config))
    assert process.wait(timeout=180) == 0, process.stdout.read()


@pytest.mark.parametrize(
    "backend, observation",
    [("pybullet", "proprio"), ("pybullet", "image"), ("robosuite", "proprio"), ("robosuite", "image")],
)
def test_sse_runs_in_the_daemon_in_both_simulators(tmp_path, backend, observation):
    restart = backend == "pybullet" and observation == "proprio"
    _run_daemon(tmp_path, backend, observation, episodes=2)
    if restart:
        _run_daemon(tmp_path, backend, observation, episodes=3)  # a restart continues the same explorer
    session = tmp_path / "data" / "e2e"
    manifest = read_manifest(session)
    assert len(manifest) == (3 if restart else 2) and all(e.steps > 0 for e in manifest)
    ends = [e for e in read_events(session) if e["kind"] == "episode_end"]
    assert all("train_s" in e and "sse_updates_total" in e for e in ends)
    totals = [e["sse_updates_total"] for e in ends]
    assert totals == sorted(totals) and totals[-1] > 0, totals
    assert any(np.isfinite(e.get("sse_policy_loss", np.nan)) for e in ends)
    if restart:
        kinds = [e["kind"] for e in read_events(session)]
        assert "explorer_resumed" in kinds
        assert totals[-1] == totals[-2] + TINY["updates_per_episode"], "counters continue after the restart"
