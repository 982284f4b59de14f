"""The learned explorers `rnd` (TD3 on the RND reward) and `gcrnd` (seed 003 Algorithm 1), on
small networks and synthetic sessions written through the real episode store."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from collector.explorers import ExplorerSpec, make_explorer
from collector.explorers.gcrnd import GCRNDConfig, relabel_future_goals
from collector.explorers.rnd import LearnedExplorerConfig
from collector.explorers.rnd_bonus import RND
from store import DamagedEpisodeWarning, SessionStore, iter_episodes

STEPS = 12
IMAGE = (16, 16, 3)
SMALL = {
    "actor_hidden": [16, 16],
    "critic_hidden": [16, 16],
    "rnd_hidden": [32, 32],
    "rnd_output_dim": 16,
    "conv_layers": [[4, 4, 2], [4, 3, 2]],
    "rnd_conv_layers": [[4, 4, 2], [4, 3, 2]],
    "episodes_per_cycle": 2,
    "batch_size": 8,
    "rnd_batch_size": 16,
    "updates_per_episode": 4,
}


def _spec(kind: str = "vector") -> ExplorerSpec:
    """As the collector builds it for proprio (q, dq) or an image: positions are q."""
    return ExplorerSpec(
        observation_low=np.concatenate([np.full(7, -2.9), np.full(7, -0.5)]),
        observation_high=np.concatenate([np.full(7, 2.9), np.full(7, 0.5)]),
        action_limit=np.full(3, 0.05),
        action_dim=3,
        episode_steps=STEPS,
        observation_kind=kind,
        image_shape=IMAGE if kind == "image" else None,
        position_indices=tuple(range(7)),
    )


def _episode_arrays(index: int, steps: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """q[:, 0] encodes the episode, q[:, 1] the step: a goal's origin can be read off its values."""
    q = rng.uniform(-1, 1, size=(steps, 7))
    q[:, 0] = index / 10
    q[:, 1] = np.arange(steps) / 100
    images = rng.integers(0, 256, size=(steps, *IMAGE), dtype=np.uint8)
    images[:, 0, 0, 0] = index
    images[:, 0, 1, 0] = np.arange(steps)
    return {
        "obs/q": q,
        "obs/dq": rng.uniform(-0.5, 0.5, size=(steps, 7)),
        "obs/tip_pos": rng.uniform(-1, 1, size=(steps, 3)),
        "obs/images/front": images,
        "action": rng.uniform(-0.05, 0.05, size=(steps, 3)),
        "command": rng.uniform(-0.05, 0.05, size=(steps, 7)),
    }


class _Session:
    """A real store holding synthetic episodes (the explorer's replay buffer)."""

    def __init__(self, root, lengths=()) -> None:
        self.store = SessionStore.open(
            root, "s", session_yaml_text="robot:\n  options:\n    cameras: [{name: front}]\n"
        )
        self.session_dir = self.store.session_dir
        self.rng = np.random.default_rng(0)
        for steps in lengths:
            self.add(steps)

    def add(self, steps: int = STEPS) -> int:
        recorder = self.store.begin_episode({"explorer": "test"})
        arrays = _episode_arrays(recorder.index, steps, self.rng)
        for t in range(steps):
            recorder.append({key: value[t] for key, value in arrays.items()})
        recorder.finish("complete")
        return recorder.index

    def close(self) -> None:
        self.store.close()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """As the explorers run in the collector (`torch_threads` = 1): small networks on a loaded
    machine are many times slower with more threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def session(tmp_path):
    s = _Session(tmp_path, [STEPS] * 3)
    yield s
    s.close()


def _observation(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "image":
        return rng.integers(0, 256, size=IMAGE, dtype=np.uint8)
    return rng.uniform(-1, 1, size=14)


# --------------------------------------------------------------------------------------- RND


def test_rnd_novelty_falls_where_trained_and_stays_high_far_away():
    config = LearnedExplorerConfig(rnd_hidden=(64, 64), rnd_output_dim=32, rnd_lr=1e-3)
    torch.manual_seed(0)
    rnd = RND("vector", (14,), config)
    rng = np.random.default_rng(0)
    visited = rng.normal(0, 0.1, size=(256, 14))
    far = np.full((1, 14), 3.0)
    rnd.update_obs_stats(visited)
    before_near, before_far = rnd.novelty(visited).mean(), rnd.novelty(far)[0]
    rnd.fit(visited, epochs=60, batch_size=64, rng=rng)
    after_near, after_far = rnd.novelty(visited).mean(), rnd.novelty(far)[0]
    assert after_near < 0.1 * before_near
    assert after_far > 0.1 * before_far
    assert after_far > 20 * after_near


def test_rnd_images_novelty_falls_and_inputs_are_clipped():
    config = LearnedExplorerConfig(rnd_conv_layers=((8, 4, 2), (8, 3, 2)), rnd_hidden=(32,), rnd_lr=1e-3)
    torch.manual_seed(0)
    rnd = RND("image", IMAGE, config)
    rng = np.random.default_rng(0)
    seen = np.clip(rng.normal(100, 5, size=(64, *IMAGE)), 0, 255).astype(np.uint8)
    rnd.update_obs_stats(seen)
    assert float(rnd._whiten(rnd._prepare(np.full((1, *IMAGE), 255, np.uint8))).abs().max()) <= 5.0
    before = rnd.novelty(seen).mean()
    rnd.fit(seen, epochs=100, batch_size=32, rng=rng)
    assert rnd.novelty(seen).mean() < 0.3 * before
    rnd.update_reward_stats(rnd.novelty(seen))
    np.testing.assert_allclose(rnd.intrinsic_reward(seen[:3]), rnd.novelty(seen[:3]) / rnd.reward_stats.std)


# ------------------------------------------------------------------------------------ config


def test_defaults_are_seed_003_table_one():
    c = GCRNDConfig()
    assert (c.cycles, c.episodes_per_cycle, c.rnd_epochs, c.self_goal_probability) == (150, 10, 4, 0.04)
    assert (c.actor_hidden, c.critic_hidden, c.actor_lr, c.critic_lr) == ((300, 200), (400, 300), 1e-4, 1e-4)
    assert (c.exploration_noise_start, c.exploration_noise_end) == (1.5, 0.5)
    assert c.conv_layers == ((32, 8, 4), (64, 4, 2), (64, 3, 1))
    assert c.rnd_hidden == (512, 512) and c.rnd_obs_clip == 5.0
    explorer = make_explorer("gcrnd", _spec(), {}, seed=0)
    assert explorer.goal_subset_size == 10 * STEPS and explorer.noise_steps == 150 * 10 * STEPS
    with pytest.raises(ValidationError):
        make_explorer("gcrnd", _spec(), {"self_goal_prob": 0.1}, seed=0)
    with pytest.raises(ValidationError):
        make_explorer("rnd", _spec(), {"self_goal_probability": 0.1}, seed=0)


def test_the_noise_schedule_spans_the_sessions_planned_steps_when_it_has_a_budget():
    """003 decays the noise over its whole run (300K steps); a session with a budget is its own whole
    run: the schedule spans its planned steps less the heatup's, and ends at the end std there."""
    import dataclasses

    spec = dataclasses.replace(_spec(), planned_steps=20 * STEPS)
    explorer = make_explorer("rnd", spec, {**SMALL, "heatup_episodes": 2}, seed=0)
    assert explorer.noise_steps == 18 * STEPS
    explorer.policy_steps = 9 * STEPS
    assert explorer.exploration_noise == pytest.approx(1.0)
    explorer.policy_steps = 18 * STEPS
    assert explorer.exploration_noise == pytest.approx(0.5)
    assert make_explorer("rnd", spec, {**SMALL, "exploration_noise_steps": 7}, seed=0).noise_steps == 7


def test_a_stop_condition_plans_its_steps():
    from collector.config import StopCondition

    assert StopCondition(steps=1000).planned_steps(50) == 1000
    assert StopCondition(episodes=4).planned_steps(50) == 200
    assert StopCondition(steps=1000, episodes=4).planned_steps(50) == 200
    assert StopCondition(wall_time_s=60).planned_steps(50) is None


def test_noise_schedule_is_linear_from_start_to_end():
    explorer = make_explorer("rnd", _spec(), {**SMALL, "exploration_noise_steps": 100, "heatup_episodes": 0}, seed=0)
    explorer.begin_episode()
    assert explorer.exploration_noise == pytest.approx(1.5)
    for _ in range(50):
        assert np.all(np.abs(explorer.act(np.zeros(14))) <= 0.05 + 1e-12)
    assert explorer.exploration_noise == pytest.approx(1.0)
    explorer.policy_steps = 1000
    assert explorer.exploration_noise == pytest.approx(0.5)


# -------------------------------------------------------------------------------- GC-RND goals


def test_first_episode_is_heatup_then_the_goal_is_logged(tmp_path):
    s = _Session(tmp_path)
    explorer = make_explorer("gcrnd", _spec(), SMALL, seed=0)
    info = explorer.begin_episode()
    assert info["phase"] == "heatup" and "goal" not in info
    s.add()
    explorer.train(s)
    info = explorer.begin_episode()
    assert info["phase"] == "policy"
    goal = info["goal"]
    assert goal["episode"] == 0 and 0 <= goal["step"] < STEPS
    (episode,) = iter_episodes([s.session_dir])
    np.testing.assert_allclose(goal["vector"], episode.load("obs/q")[goal["step"]], rtol=1e-6)  # no velocities
    s.close()


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_goal_is_the_argmax_of_novelty_over_its_random_subset(session, kind):
    explorer = make_explorer("gcrnd", _spec(kind), {**SMALL, "goal_subset_size": 20}, seed=1)
    explorer.train(session)
    episodes, steps, novelty = explorer.last_subset
    assert len(episodes) == 20
    assert len(set(zip(episodes.tolist(), steps.tolist(), strict=True))) == 20, "subset states are distinct"
    observations = explorer.spec.positions(explorer.replay.gather(episodes, steps))
    np.testing.assert_allclose(explorer.rnd.novelty(observations), novelty)
    best = int(np.argmax(novelty))
    goal = explorer.pending_goal
    assert (goal["episode"], goal["step"]) == (episodes[best], steps[best])
    assert goal["novelty"] == pytest.approx(novelty.max())
    assert goal["novelty"] >= explorer.rnd.novelty(observations).max() - 1e-9
    np.testing.assert_array_equal(goal["obs"], observations[best])
    # the subset is random: another draw scores other states
    explorer.select_goal()
    assert set(zip(*explorer.last_subset[:2], strict=True)) != set(zip(episodes, steps, strict=True))


def test_subset_is_the_whole_store_when_it_is_smaller(session):
    explorer = make_explorer("gcrnd", _spec(), SMALL, seed=0)  # M * T = 24 < 36 states
    explorer.train(session)
    assert len(explorer.last_subset[0]) == 2 * STEPS
    explorer = make_explorer("gcrnd", _spec(), {**SMALL, "goal_subset_size": 1000}, seed=0)
    explorer.train(session)
    assert len(explorer.last_subset[0]) == 3 * STEPS


@pytest.mark.parametrize("name", ["rnd", "gcrnd"])
def test_novelty_and_goals_see_positions_not_velocities(session, name):
    """003's novelty and goals were images (where things are, not how fast): states that differ only
    in their joint velocities are equally novel, and a vector goal holds no velocity."""
    explorer = make_explorer(name, _spec(), SMALL, seed=0)
    explorer.train(session)
    rng = np.random.default_rng(5)
    states = rng.uniform(-1, 1, size=(50, 14))
    spiked = states.copy()
    spiked[:, 7:] = rng.choice([-0.5, 0.5], size=(50, 7))  # velocity spikes at the cap
    positions = explorer.spec.positions
    np.testing.assert_array_equal(explorer.rnd.novelty(positions(states)), explorer.rnd.novelty(positions(spiked)))
    assert explorer.rnd.novelty(positions(states)).shape == (50,)
    if name == "gcrnd":
        assert explorer.pending_goal["obs"].shape == (7,)
        explorer.begin_episode()
        action = explorer.act(states[0])
        assert action.shape == (3,)


def test_the_collector_tells_explorers_which_components_are_positions():
    from collector.session import position_indices

    assert position_indices("proprio") == tuple(range(7))  # q, not dq
    assert position_indices("proprio+object") == (*range(7), *range(14, 21))  # q and the cube's pose
    assert position_indices("image") is None


# ------------------------------------------------------------------------------- relabelling


def test_relabelling_rules():
    rng = np.random.default_rng(0)
    n = 20000
    lengths = rng.integers(2, 30, size=n)
    steps = rng.integers(0, lengths - 1)  # transitions: s_t+1 is recorded
    goal, reward, done = relabel_future_goals(steps, lengths, 0.04, rng)
    assert np.all(goal >= steps) and np.all(goal < lengths), "goals come from the future of the same episode"
    assert np.all((reward == 0) == (goal == steps)) and set(np.unique(reward)) == {-1.0, 0.0}
    assert np.all(done == ((goal == steps) | (goal == steps + 1)))
    assert np.all(done[reward == 0]), "self-goals are terminal"
    # P(self-goal) = 0.04 + 0.96 * E[1 / (length - step)]
    expected = 0.04 + 0.96 * np.mean(1.0 / (lengths - steps))
    assert np.mean(goal == steps) == pytest.approx(expected, abs=0.01)
    none = relabel_future_goals(np.zeros(1000, int), np.full(1000, 50), 0.0, rng)[0]
    assert len(np.unique(none)) > 30, "future goals spread over the episode"
    always = relabel_future_goals(np.zeros(100, int), np.full(100, 50), 1.0, rng)
    assert np.all(always[0] == 0) and np.all(always[1] == 0) and np.all(always[2])


def test_relabelled_batches_take_goals_from_the_same_episode_future(session):
    session.add(5)  # episodes of different lengths
    explorer = make_explorer("gcrnd", _spec(), SMALL, seed=0)
    explorer.replay.sync(session.session_dir)
    b = explorer.relabelled_batch(500)
    lengths = np.array([explorer.replay.length(int(e)) for e in b["episode"]])
    assert np.all(b["step"] < lengths - 1), "every transition has a recorded next state"
    np.testing.assert_allclose(b["goal"][:, 0], b["episode"] / 10, atol=1e-6)  # the goal's own episode
    np.testing.assert_allclose(b["goal"][:, 1], b["goal_step"] / 100, atol=1e-6)
    np.testing.assert_allclose(b["next_obs"][:, 1], (b["step"] + 1) / 100, atol=1e-6)
    assert np.all(b["goal_step"] >= b["step"])
    assert np.all((b["reward"] == 0) == (b["goal_step"] == b["step"]))
    assert np.all(b["done"] == ((b["goal_step"] == b["step"]) | (b["goal_step"] == b["step"] + 1)))
    # dynamic: the same transitions get new goals at every draw
    again = make_explorer("gcrnd", _spec(), SMALL, seed=0)
    again.replay.sync(session.session_dir)
    first = again.relabelled_batch(500)
    second = again.relabelled_batch(500)
    assert not np.array_equal(first["goal_step"] - first["step"], second["goal_step"] - second["step"])
    torch_batch = explorer._batch(8)
    assert torch_batch["obs"].shape == (8, 14 + 7)  # the state, and the goal's positions
    done = torch_batch["discount"] == 0
    np.testing.assert_allclose(torch_batch["discount"][~done].numpy(), 0.99)


# -------------------------------------------------------------------- training and checkpoints


@pytest.mark.parametrize("name", ["rnd", "gcrnd"])
@pytest.mark.parametrize("kind", ["vector", "image"])
def test_train_cycle_and_save_load_round_trip(session, name, kind):
    rng = np.random.default_rng(0)
    explorer = make_explorer(name, _spec(kind), SMALL, seed=3)
    explorer.begin_episode()
    stats = explorer.train(session)
    assert stats["td3_updates"] == 3 * 4 and stats["rnd_cycles"] == 1 and np.isfinite(stats["critic_loss"])
    assert explorer.train(session) == {}, "no new episode: nothing to train"
    assert explorer.counters == {
        "episodes_started": 1,
        "episodes_trained": 3,
        "policy_steps": 0,
        "td3_updates": 12,
        "rnd_cycles": 1,
    }
    explorer.begin_episode()
    [explorer.act(_observation(kind, rng)) for _ in range(3)]

    saved = pickle.dumps(explorer.state_dict())
    restored = make_explorer(name, _spec(kind), SMALL, seed=99)
    restored.load_state_dict(pickle.loads(saved))
    assert restored.counters == explorer.counters
    observations = [_observation(kind, rng) for _ in range(5)]
    for observation in observations:
        np.testing.assert_array_equal(explorer.act(observation), restored.act(observation))
    # both continue identically, the restored one rebuilding its replay from the store
    session.add()
    a, b = explorer.train(session), restored.train(session)
    assert a == b and a["td3_updates"] == 4 and a["rnd_cycles"] == 2
    assert explorer.begin_episode() == restored.begin_episode()
    for observation in observations:
        action = explorer.act(observation)
        np.testing.assert_array_equal(action, restored.act(observation))
        assert np.all(np.abs(action) <= 0.05 + 1e-12)


def test_checkpoint_of_another_explorer_is_refused():
    rnd = make_explorer("rnd", _spec(), SMALL, seed=0)
    with pytest.raises(ValueError, match="RNDExplorer"):
        make_explorer("gcrnd", _spec(), SMALL, seed=0).load_state_dict(rnd.state_dict())


def test_a_damaged_episode_is_skipped(session):
    victim = session.session_dir / "episodes" / "episode_000001.h5"
    victim.write_bytes(b"not an episode")
    explorer = make_explorer("gcrnd", _spec(), SMALL, seed=0)
    with pytest.warns(DamagedEpisodeWarning, match="skipping damaged episode .*episode_000001.h5"):
        stats = explorer.train(session)
    assert stats["td3_updates"] > 0
    assert 1 not in explorer.replay and 0 in explorer.replay
    assert list(explorer.replay.indices) == [0, 2] and explorer.known_episodes == [0, 2]
    session.add()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # listed once, skipped once: no warning at every train
        assert explorer.train(session)["td3_updates"] == 4
