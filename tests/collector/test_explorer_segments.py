"""The learned explorers' replay never builds a transition across missing steps.

A `.partial` damaged in its middle is salvaged (store) into an episode whose steps
10..19 are missing: rows 0..9 hold steps 0..9 and rows 10..29 steps 20..39
(`Episode.segments()` = [(0, 10), (10, 30)]).  Each recorded observation encodes its own episode
(q[0] = index / 10) and original step number (q[1] = step / 100), so every (s_t, s_t+1) pair the
explorers use can be checked: its step numbers differ by exactly one."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from collector.explorers import ExplorerSpec, make_explorer
from store import SessionStore, iter_episodes, scan_partial

STEPS = 12
GAPPED_STEPS = 40  # recorded; 30 held after the salvage
SMALL_TD3 = {
    "actor_hidden": [16, 16],
    "critic_hidden": [16, 16],
    "rnd_hidden": [32, 32],
    "rnd_output_dim": 16,
    "episodes_per_cycle": 2,
    "batch_size": 8,
    "rnd_batch_size": 16,
    "updates_per_episode": 4,
}
SMALL_SSE = {"hidden": [32, 32], "batch_size": 16, "horizon": 4, "updates_per_episode": 3}
SPEC = ExplorerSpec(
    observation_low=np.concatenate([np.full(7, -2.9), np.full(7, -0.5)]),
    observation_high=np.concatenate([np.full(7, 2.9), np.full(7, 0.5)]),
    action_limit=np.full(3, 0.05),
    action_dim=3,
    episode_steps=STEPS,
)
FLUSH = {"flush_every_steps": 10, "flush_interval_s": 3600.0, "free_space_floor_bytes": 0}


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """The explorers set the process's torch threads; other tests keep theirs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _record(recorder, steps: int, rng: np.random.Generator) -> None:
    for t in range(steps):
        q = rng.uniform(-1, 1, 7)
        q[0], q[1] = recorder.index / 10, t / 100
        recorder.append(
            {
                "time": np.float64(t / 20),
                "obs/q": q,
                "obs/dq": rng.uniform(-0.5, 0.5, 7),
                "action": rng.uniform(-0.05, 0.05, 3),
                "command": rng.uniform(-0.05, 0.05, 7),
            }
        )


@pytest.fixture
def gapped_session(tmp_path):
    """Episode 0 whole (12 steps), episode 1 salvaged with steps 10..19 missing, episode 2 whole."""
    rng = np.random.default_rng(0)
    with SessionStore.open(tmp_path, "s", session_yaml_text="robot: {}\n", **FLUSH) as store:
        recorder = store.begin_episode({"explorer": "test", "skill": 3})
        _record(recorder, STEPS, rng)
        recorder.finish("complete")
        damaged = store.begin_episode({"explorer": "test", "skill": 3})
        _record(damaged, GAPPED_STEPS, rng)
        damaged.abandon()
    data = bytearray(damaged.path.read_bytes())
    data[scan_partial(damaged.path).chunks[1][2] + 3] ^= 0xFF  # an array byte of steps 10..19
    damaged.path.write_bytes(bytes(data))
    with SessionStore.open(tmp_path, "s", **FLUSH) as store:  # salvages episode 1
        recorder = store.begin_episode({"explorer": "test", "skill": 3})
        _record(recorder, STEPS, rng)
        recorder.finish("complete")
        session_dir = store.session_dir
    episodes = {ep.index: ep for ep in iter_episodes([session_dir])}
    assert episodes[1].segments() == [(0, 10), (10, 30)], "the fixture must hold an episode with a gap"
    assert [episodes[i].segments() for i in (0, 2)] == [[(0, STEPS)], [(0, STEPS)]]
    return session_dir


def _steps(observations: np.ndarray) -> np.ndarray:
    """Original step number of raw vector observations (q[1] = step / 100)."""
    return np.round(observations[:, 1] * 100).astype(int)


def _episodes(observations: np.ndarray) -> np.ndarray:
    return np.round(observations[:, 0] * 10).astype(int)


TRANSITIONS = {0: STEPS - 1, 1: 9 + 19, 2: STEPS - 1}
"""(s_t, s_t+1) pairs per episode: the gapped one has 9 before the gap and 19 after, not 29."""


@pytest.mark.parametrize("max_cached", [None, 1])
def test_replay_samples_no_transition_across_the_gap(gapped_session, max_cached):
    """A restarted explorer's view: every episode registered at once and none loaded yet (the
    gaps are known from the listing, `SessionReader.segments`), with and without an LRU cache
    that evicts them again."""
    explorer = make_explorer("rnd", SPEC, SMALL_TD3 | {"max_cached_episodes": max_cached}, seed=0)
    replay = explorer.replay
    replay.sync(gapped_session)
    assert replay.total_transitions == sum(TRANSITIONS.values()), "the gaps are known before any episode is read"
    rng = np.random.default_rng(1)
    seen: set[tuple[int, int]] = set()
    for _ in range(4):
        episodes, rows = replay.sample_transitions(2000, rng)
        obs, next_obs = replay.gather(episodes, rows), replay.gather(episodes, rows + 1)
        assert np.array_equal(_episodes(obs), episodes) and np.array_equal(_episodes(next_obs), episodes)
        assert np.all(_steps(next_obs) - _steps(obs) == 1), "a transition crossed the missing steps"
        seen |= set(zip(episodes.tolist(), _steps(obs).tolist(), strict=True))
    assert replay.total_transitions == sum(TRANSITIONS.values())
    expected = {(e, t) for e in (0, 2) for t in range(STEPS - 1)}
    expected |= {(1, t) for t in [*range(9), *range(20, 39)]}
    assert seen == expected, "every transition inside a segment is sampled, none across the gap"


@pytest.mark.parametrize("name", ["rnd", "gcrnd"])
def test_training_batches_pair_each_state_with_its_own_next_state(gapped_session, name):
    explorer = make_explorer(name, SPEC, SMALL_TD3, seed=0)
    explorer.begin_episode()
    stats = explorer.train(SimpleNamespace(session_dir=gapped_session))  # ingests every episode, then trains
    assert stats["td3_updates"] == 3 * 4
    gathered: list[tuple[np.ndarray, np.ndarray]] = []
    replay_gather = explorer.replay.gather

    def gather(episodes, steps, key="obs"):
        out = replay_gather(episodes, steps, key)
        if key == "obs":
            gathered.append((np.asarray(steps).copy(), out))
        return out

    explorer.replay.gather = gather
    batch = explorer._batch(3000)
    assert batch is not None
    obs_rows, obs = gathered[0]
    next_rows, next_obs = gathered[1]
    assert np.array_equal(next_rows, obs_rows + 1)
    assert np.all(_steps(next_obs) - _steps(obs) == 1), "a transition crossed the missing steps"
    gapped = _steps(obs)[_episodes(obs) == 1]
    assert {9, 39} & set(gapped.tolist()) == set(), "no transition from a segment's last step"
    assert {0, 8, 20, 38} <= set(gapped.tolist())
    if name == "gcrnd":
        b = explorer.relabelled_batch(3000)
        assert np.all(_steps(b["next_obs"]) - _steps(b["obs"]) == 1)
        assert np.all(b["done"] == ((b["goal_step"] == b["step"]) | (b["goal_step"] == b["step"] + 1)))


def test_sse_transitions_stay_inside_segments_and_a_gap_is_not_done(gapped_session):
    # crash_salvaged counted as a terminal outcome, to see that only the episode's last step is done
    explorer = make_explorer("sse", SPEC, SMALL_SSE | {"done_outcomes": ["crash_salvaged"]}, seed=0)
    stats = explorer.train(gapped_session)
    assert stats["sse_updates"] == 3 and np.isfinite(stats["sse_policy_loss"])
    data = explorer.replay.arrays
    steps = np.round(data["x"][:, 1] * 2.9 * 100).astype(int)  # normalised by the spec's bounds
    next_steps = np.round(data["next_x"][:, 1] * 2.9 * 100).astype(int)
    assert np.all(next_steps - steps == 1), "a transition crossed the missing steps"
    assert explorer.transitions == sum(TRANSITIONS.values())
    assert 9 not in steps[STEPS - 1 : STEPS - 1 + TRANSITIONS[1]]
    all_steps = np.round(data["all_x"][:, 1] * 2.9 * 100).astype(int)
    assert len(all_steps) == 2 * STEPS + 30
    assert np.flatnonzero(data["all_done"]).tolist() == [STEPS + 29], "done: the salvaged episode's last step only"
    assert data["all_done"][STEPS + 9] == 0 and all_steps[STEPS + 9] == 9, "the step before the gap is not done"


def test_diayn_transitions_stay_inside_segments_with_the_episodes_skill(gapped_session):
    explorer = make_explorer("diayn", SPEC, {"hidden": [16, 16], "batch_size": 8, "updates_per_episode": 2}, seed=0)
    stats = explorer.train(gapped_session)
    assert stats["diayn_updates"] == 2 and explorer.unlabelled_episodes == []
    data = explorer.replay.arrays
    steps = np.round(data["x"][:, 1] * 2.9 * 100).astype(int)  # normalised by the spec's bounds
    next_steps = np.round(data["next_x"][:, 1] * 2.9 * 100).astype(int)
    assert np.all(next_steps - steps == 1), "a transition crossed the missing steps"
    assert explorer.transitions == sum(TRANSITIONS.values()) and len(data["all_x"]) == 2 * STEPS + 30
    assert set(data["z"].tolist()) == set(data["all_z"].tolist()) == {3} and len(data["z"]) == len(data["x"])
