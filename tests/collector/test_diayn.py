"""``diayn``, Diversity is All You Need (Eysenbach et al. 2018; seed 001's DIAYN column): the skill
reward, the discriminator, the per-episode skill, exact resume, the action bounds, the config, and
the real daemon (restarted) with proprio and image observations."""

from __future__ import annotations

import math
import pickle
import shutil

import numpy as np
import pytest
import torch

from collector.checkpoint import load_explorer_checkpoint
from collector.config import ConfigError, parse_session_config
from collector.explorers import ExplorerSpec, make_explorer
from collector.explorers.diayn import DIAYN, DIAYNConfig
from store import SessionStore, iter_episodes, read_events, read_manifest
from tests.e2e.conftest import pandalab, write_config

K = 4
TINY = {"num_skills": K, "hidden": [32, 32], "discriminator_hidden": [32, 32], "batch_size": 16}
TINY |= {"updates_per_episode": 5}
STEPS = 30
VECTOR_SPEC = ExplorerSpec(
    observation_low=np.concatenate([np.full(7, -2.9), np.full(7, -0.5)]),
    observation_high=np.concatenate([np.full(7, 2.9), np.full(7, 0.5)]),
    action_limit=np.full(7, 0.5),
    action_dim=7,
    episode_steps=STEPS,
)
IMAGE_SPEC = ExplorerSpec(
    VECTOR_SPEC.observation_low,
    VECTOR_SPEC.observation_high,
    VECTOR_SPEC.action_limit,
    7,
    STEPS,
    observation_kind="image",
    image_shape=(24, 24, 3),
)
SESSION_YAML = "robot:\n  options:\n    cameras: [{name: front, width: 24, height: 24}]\n"
CENTRES = np.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
"""Skill k's toy episodes keep (q0, q1) near CENTRES[k]: skills visit distinct states."""


def _toy_states(skill: int, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    q = rng.uniform(-1, 1, (steps, 7))
    q[:, :2] = CENTRES[skill] + rng.normal(0, 0.3, (steps, 2))
    q[:, 2] = np.arange(steps) / 100  # the step, to check transitions
    return q, rng.uniform(-0.5, 0.5, (steps, 7))


def _record(store: SessionStore, rng: np.random.Generator, skill: int | None, steps: int = STEPS) -> int:
    """An episode whose metadata holds ``skill`` (as the collector logs `begin_episode`'s info)."""
    metadata = {"explorer": "diayn"} | ({} if skill is None else {"skill": skill})
    recorder = store.begin_episode(metadata)
    q, dq = _toy_states(0 if skill is None else skill, steps, rng)
    for t in range(steps):
        action = rng.uniform(-0.5, 0.5, 7)
        frame = np.full((24, 24, 3), 40 * (skill or 0), dtype=np.uint8)
        frame[:, : 12 + int(5 * np.tanh(q[t, 0]))] = 200
        step = {"obs/q": q[t], "obs/dq": dq[t], "action": action, "command": action}
        recorder.append(step | {"obs/images/front": frame})
    recorder.finish("complete")
    return recorder.index


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The explorer sets the process's torch threads (its `torch_threads`); other tests keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store(tmp_path):
    with SessionStore.open(tmp_path, "s", session_yaml_text=SESSION_YAML) as opened:
        rng = np.random.default_rng(0)
        for i in range(2 * K):
            _record(opened, rng, skill=i % K)
        yield opened


def _explorer(spec=VECTOR_SPEC, seed=0, **overrides) -> DIAYN:
    return make_explorer("diayn", spec, TINY | overrides, seed=seed)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


# ------------------------------------------------------------------------------------- reward


def test_the_reward_is_log_q_of_the_skill_given_the_next_state_minus_log_p_z(store):
    """r(s, a, s', z) = log q_phi(z | s') - log p(z), p(z) = 1/K: computed here from the
    discriminator's logits on the state alone (it never sees the skill), for the reward function
    and for the batch the SAC update trains on."""
    explorer = _explorer(updates_per_episode=0)
    assert explorer.discriminator[0].in_features == 14, "the discriminator's input is the observation only"
    rng = np.random.default_rng(1)
    states = explorer.encode(rng.uniform(-1, 1, (32, 14)))
    skills = torch.from_numpy(rng.integers(0, K, 32))
    logits = explorer.discriminator(states).detach().numpy().astype(np.float64)
    expected = _log_softmax(logits)[np.arange(32), skills.numpy()] - math.log(1 / K)
    np.testing.assert_allclose(explorer.skill_reward(states, skills).detach().numpy(), expected, rtol=1e-5, atol=1e-5)

    explorer.train(store)
    data = explorer.replay.arrays
    replay = np.random.default_rng()  # the update's draw of rows, replayed from the explorer's generator
    replay.bit_generator.state = explorer.rng.bit_generator.state
    rows = replay.integers(0, len(data["x"]), size=TINY["batch_size"])
    logits = explorer.discriminator(torch.from_numpy(data["next_x"][rows])).detach().numpy().astype(np.float64)
    expected = _log_softmax(logits)[np.arange(len(rows)), data["z"][rows]] + math.log(K)
    assert explorer.update()["reward"] == pytest.approx(expected.mean(), rel=1e-5, abs=1e-5)


def test_the_discriminator_learns_to_tell_apart_skills_that_visit_distinct_states(store):
    explorer = _explorer(updates_per_episode=0, discriminator_lr=1e-3)
    explorer.train(store)
    rng = np.random.default_rng(7)
    held_out = [_toy_states(k, 50, rng) for k in range(K)]
    observations = np.concatenate([np.concatenate([q, dq], axis=1) for q, dq in held_out])
    labels = np.repeat(np.arange(K), 50)

    def accuracy() -> float:
        with torch.no_grad():
            return float((explorer.discriminator(explorer.encode(observations)).argmax(-1).numpy() == labels).mean())

    before = accuracy()
    for _ in range(150):
        stats = explorer.update()
    assert accuracy() > 0.9, f"accuracy {before:.2f} -> {accuracy():.2f} (chance: {1 / K})"
    assert stats["discriminator_accuracy"] > 0.9
    assert stats["reward"] > 0.5 * math.log(K), "a discriminable skill earns up to log K"


# ------------------------------------------------------------------------------------- skills


def test_the_skill_is_fixed_within_an_episode_and_conditions_every_action():
    explorer = _explorer()
    rng = np.random.default_rng(2)
    for _ in range(3):
        info = explorer.begin_episode()
        skill = info["skill"]
        assert isinstance(skill, int) and 0 <= skill < K and info["phase"] == "policy"
        for _ in range(20):
            observation = rng.uniform(-1, 1, 14)
            generator = torch.Generator().manual_seed(0)
            generator.set_state(explorer.generator.get_state())
            with torch.no_grad():
                x = explorer.conditioned(explorer.encode(observation[None]), torch.tensor([skill]))
                expected = 0.5 * np.clip(explorer.policy.sample(x, generator)[0][0].double().numpy(), -1, 1)
            np.testing.assert_array_equal(explorer.act(observation), expected)
            assert explorer.skill == skill


def test_skills_are_drawn_uniformly_across_episodes():
    explorer = _explorer(num_skills=5)
    draws = np.array([explorer.begin_episode()["skill"] for _ in range(2000)])
    counts = np.bincount(draws, minlength=5)
    chi2 = ((counts - 400) ** 2 / 400).sum()
    assert len(counts) == 5 and chi2 < 20, counts  # chi2(4) > 20 with probability 5e-4
    assert np.mean(draws[1:] == draws[:-1]) < 0.3, "consecutive episodes draw independently"


def test_train_reads_each_episodes_skill_from_its_metadata_and_skips_unlabelled_ones(store):
    unlabelled = _record(store, np.random.default_rng(3), skill=None)
    explorer = _explorer(updates_per_episode=1)
    stats = explorer.train(store)
    assert explorer.unlabelled_episodes == [unlabelled]
    episodes = [e for e in iter_episodes(store.session_dir) if e.index != unlabelled]
    skills = {e.index: e.metadata["skill"] for e in episodes}
    data = explorer.replay.arrays
    np.testing.assert_array_equal(data["z"], np.repeat([skills[i] for i in sorted(skills)], STEPS - 1))
    np.testing.assert_array_equal(data["all_z"], np.repeat([skills[i] for i in sorted(skills)], STEPS))
    assert stats["diayn_transitions"] == len(episodes) * (STEPS - 1) and stats["diayn_updates"] == 1
    # transitions are (s_t, s_t+1) of one episode: q2 holds the step, normalised by 2.9
    step = np.round(data["x"][:, 2] * 2.9 * 100)
    np.testing.assert_array_equal(np.round(data["next_x"][:, 2] * 2.9 * 100), step + 1)
    # the skill's toy region: the discriminator's labels are the episodes' own
    np.testing.assert_array_equal(np.sign(data["x"][:, :2] * 2.9), np.sign(CENTRES[data["z"]]))


# ------------------------------------------------------------------------------- acting, bounds


@pytest.mark.parametrize("heatup", [0, 1])
def test_actions_stay_inside_the_box_for_wild_observations_vector_and_image(heatup):
    rng = np.random.default_rng(4)
    for spec in (VECTOR_SPEC, IMAGE_SPEC):
        explorer = _explorer(spec, heatup_episodes=heatup)
        for _ in range(2):
            assert explorer.begin_episode()["phase"] == ("heatup" if heatup else "policy")
            for _ in range(50):
                if spec.observation_kind == "image":
                    observation = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                else:
                    observation = rng.normal(0, 1000, 14)
                    observation[0] = np.nan
                action = explorer.act(observation)
                assert action.shape == (7,) and np.all(np.isfinite(action)) and np.all(np.abs(action) <= 0.5)
            heatup = 0


def test_image_observations_train_on_latents(store):
    explorer = _explorer(IMAGE_SPEC, feature_dim=8)
    stats = explorer.train(store)
    assert stats["diayn_updates"] == 5 and np.isfinite(stats["diayn_critic_loss"])
    assert explorer.replay.arrays["x"].shape == (2 * K * (STEPS - 1), 8) and explorer.discriminator[0].in_features == 8


def test_the_image_explorer_reads_the_first_camera_the_session_names(tmp_path):
    cameras = "[{name: side, width: 24, height: 24}, {name: front, width: 24, height: 24}]"
    yaml_text = f"robot:\n  options:\n    cameras: {cameras}\n"
    with SessionStore.open(tmp_path, "s", session_yaml_text=yaml_text) as two_cameras:
        rng = np.random.default_rng(0)
        for skill in range(2):
            recorder = two_cameras.begin_episode({"skill": skill})
            for _ in range(5):
                front, side = (rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(2))
                step = {"obs/q": np.zeros(7), "obs/dq": np.zeros(7), "action": np.zeros(7)}
                recorder.append(step | {"obs/images/front": front, "obs/images/side": side})
            recorder.finish("complete")
        explorer = _explorer(IMAGE_SPEC)
        explorer.train(two_cameras)
        side = np.concatenate([e.load("obs/images/side") for e in iter_episodes(two_cameras.session_dir)])
        np.testing.assert_array_equal(explorer.replay.arrays["all_x"], explorer.encode(side).numpy())


# ------------------------------------------------------------------------------------ resume


@pytest.mark.parametrize("spec", [VECTOR_SPEC, IMAGE_SPEC], ids=["vector", "image"])
def test_resume_gives_the_same_actions_skills_and_training_as_an_uninterrupted_explorer(store, spec):
    explorer = _explorer(spec, seed=3)
    explorer.begin_episode()
    explorer.train(store)
    rng = np.random.default_rng(5)
    observations = [
        rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) if spec is IMAGE_SPEC else rng.uniform(-1, 1, 14)
        for _ in range(4)
    ]
    explorer.begin_episode()
    explorer.act(observations[0])  # mid-episode
    saved = pickle.loads(pickle.dumps(explorer.state_dict()))
    restored = _explorer(spec, seed=99)
    restored.load_state_dict(saved)
    assert (restored.updates, restored.episodes_started, restored.skill) == (5, 2, explorer.skill)
    for observation in observations:
        np.testing.assert_array_equal(explorer.act(observation), restored.act(observation))
    _record(store, np.random.default_rng(8), skill=1)  # a new episode; the restored one rebuilds its cache
    first, second = explorer.train(store), restored.train(store)
    assert first == second and first["diayn_updates_total"] == 10
    for name, module in explorer._modules().items():
        for a, b in zip(module.state_dict().values(), restored._modules()[name].state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert explorer.begin_episode() == restored.begin_episode()
    for observation in observations:
        np.testing.assert_array_equal(explorer.act(observation), restored.act(observation))


def test_a_checkpoint_of_another_explorer_is_refused():
    sse = make_explorer("sse", VECTOR_SPEC, {"hidden": [8]}, seed=0)
    with pytest.raises(ValueError, match="checkpoint of explorer None, not DIAYN"):
        _explorer().load_state_dict(sse.state_dict())


def test_updates_default_to_one_per_new_transition_after_warmup(tmp_path):
    with SessionStore.open(tmp_path, "s", session_yaml_text=SESSION_YAML) as opened:
        explorer = _explorer(updates_per_episode=None, batch_size=32)
        _record(opened, np.random.default_rng(0), skill=0, steps=20)
        assert explorer.train(opened)["diayn_updates"] == 0, "19 transitions < batch 32"
        _record(opened, np.random.default_rng(1), skill=1, steps=20)
        assert explorer.train(opened)["diayn_updates"] == 19
        restored = _explorer(updates_per_episode=None, batch_size=32)
        restored.load_state_dict(explorer.state_dict())
        assert restored.train(opened)["diayn_updates"] == 0, "no new data: a restart does not retrain old data"


# ------------------------------------------------------------------------------------ config


def test_defaults_are_diayns_and_bad_parameters_are_named_one_line_each():
    c = DIAYNConfig()
    assert (c.num_skills, c.hidden, c.discriminator_hidden, c.batch_size) == (50, (300, 300), (300, 300), 128)
    assert (c.lr, c.discriminator_lr, c.gamma, c.tau, c.alpha) == (3e-4, 3e-4, 0.99, 0.01, 0.1)
    assert c.updates_per_episode is None and c.heatup_episodes == 0
    for name, field in DIAYNConfig.model_fields.items():
        assert field.description, f"{name} has no description"
    config = {"explorer": {"name": "diayn", "parameters": {"num_skill": 8, "alpha": -1, "num_skills": 1}}}
    with pytest.raises(ConfigError) as info:
        parse_session_config(config)
    lines = str(info.value).splitlines()
    for field in ("explorer.parameters.num_skill", "explorer.parameters.alpha", "explorer.parameters.num_skills"):
        assert sum(f"{field}:" in line for line in lines) == 1, lines
    parse_session_config({"explorer": {"name": "diayn", "observation": "image"}})  # images are accepted


# ------------------------------------------------------------------------------------ daemon


def _run_daemon(tmp_path, observation: str, episodes: int) -> None:
    config = write_config(
        tmp_path,
        episode_steps=20,
        explorer={"name": "diayn", "observation": observation, "parameters": TINY | {"feature_dim": 16}},
        stop={"episodes": episodes},
    )
    process = pandalab("collect", "--config", str(config))
    assert process.wait(timeout=180) == 0, process.stdout.read()


@pytest.mark.parametrize("observation", ["proprio", "image"])
def test_diayn_runs_in_the_daemon_logs_its_skills_and_resumes(tmp_path, observation):
    restart = observation == "proprio"
    session = tmp_path / "data" / "e2e"
    _run_daemon(tmp_path, observation, episodes=2)
    if restart:
        before = session / "checkpoint_before_restart.pt"
        shutil.copy(session / "explorer" / "checkpoint.pt", before)
        _run_daemon(tmp_path, observation, episodes=3)  # a restart continues the same explorer
    manifest = read_manifest(session)
    assert len(manifest) == (3 if restart else 2) and all(e.steps == 20 for e in manifest)
    episodes = list(iter_episodes([session]))
    skills = [e.metadata["skill"] for e in episodes]
    assert all(isinstance(z, int) and 0 <= z < K for z in skills), skills
    ends = [e for e in read_events(session) if e["kind"] == "episode_end"]
    totals = [e["diayn_updates_total"] for e in ends]
    assert totals[-1] > 0 and totals == sorted(totals), totals
    assert any(np.isfinite(e.get("diayn_discriminator_loss", np.nan)) for e in ends)
    state, _ = load_explorer_checkpoint(session / "explorer" / "checkpoint.pt")
    assert state["skill"] == skills[-1], "the checkpoint holds the skill of the episode being recorded"
    if restart:
        assert "explorer_resumed" in [e["kind"] for e in read_events(session)]
        assert totals[-1] == totals[-2] + TINY["updates_per_episode"], "counters continue after the restart"
        saved, _ = load_explorer_checkpoint(before)
        resumed = _explorer()
        resumed.load_state_dict(saved)
        assert resumed.begin_episode()["skill"] == skills[2], "the restarted session drew its skill from the saved RNG"
