"""Datasets from the episode store: transitions, n-step returns, frame stacks, memory, relabelling."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from learning.dataset import DatasetError, OfflineDataset
from learning.relabel import PrivilegedStateMissing
from sim.tasks import make_task
from store import DamagedEpisodeWarning

from .helpers import write_session

GOAL0 = np.array(make_task("reach:0").goal)


def tip_line(e, t):
    return (0.45 + 0.02 * t + 0.001 * e, 0.2, 0.05)


def test_transitions_are_t_minus_1_per_episode_and_truncations_are_not_terminals(tmp_path):
    sd = write_session(tmp_path, "s", [5, 1, 7, 2], outcomes=["complete", "complete", "safety_stop", "fault"])
    ds = OfflineDataset(sd, "reach:0", "proprio", n_step=1, gamma=0.9)
    assert ds.num_episodes == 3  # the 1-step episode has no transition
    assert ds.num_transitions == 4 + 6 + 1
    assert ds.num_states == 5 + 7 + 2
    last_states = set((ds.episode_starts[1:] - 1).tolist())
    assert not last_states & set(ds.valid_np.tolist())  # the last state of an episode has no successor
    b = ds.batch(ds.valid_np)
    assert torch.allclose(b["discount"], torch.full_like(b["discount"], 0.9))  # no terminals anywhere
    assert ds.batch(ds.valid_np)["obs"].shape == (11, 14)


def test_nstep_returns_by_hand(tmp_path):
    sd = write_session(tmp_path, "s", [6, 3], tip_fn=tip_line, outcomes=["complete", "operator_stop"])
    gamma, n = 0.9, 3
    ds = OfflineDataset(sd, "reach:0", "proprio", n_step=n, gamma=gamma)
    for e, length in enumerate([6, 3]):
        r = np.array([-np.linalg.norm(np.array(tip_line(e, t)) - GOAL0) for t in range(length)])
        for t in range(length - 1):
            i = int(ds.episode_starts[e]) + t
            k = min(n, length - 1 - t)
            want_r = sum(gamma**j * r[t + 1 + j] for j in range(k))
            b = ds.batch([i])
            assert b["reward"].item() == pytest.approx(want_r, rel=1e-5)
            assert b["discount"].item() == pytest.approx(gamma**k, rel=1e-6)  # truncation: bootstrap with gamma^k
            assert b["next_obs"][0, 0].item() == pytest.approx(e + (t + k) / 1000.0, abs=1e-6)  # s_{t+k}
            assert b["obs"][0, 0].item() == pytest.approx(e + t / 1000.0, abs=1e-6)


def test_actions_are_commands_scaled_by_the_velocity_cap(tmp_path):
    sd = write_session(tmp_path, "s", [4], velocity_cap=0.4)
    ds = OfflineDataset(sd, "reach:0")
    want = np.clip(0.25 * np.sin(np.arange(7) + 2) / 0.4, -1, 1)
    np.testing.assert_allclose(ds.batch([2])["action"][0].numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(ds.action_limit, np.full(7, 0.4))


def test_statistics_and_proprio_object(tmp_path):
    sd = write_session(tmp_path, "s", [5, 4])
    ds = OfflineDataset(sd, "reach:0", "proprio")
    all_obs = ds.vector.numpy()
    np.testing.assert_allclose(ds.obs_spec.mean, all_obs.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.obs_spec.std, all_obs.std(0), rtol=1e-4, atol=1e-6)
    dso = OfflineDataset(sd, "reach:0", "proprio+object")
    assert dso.obs_spec.shape == (21,)
    np.testing.assert_allclose(dso.batch([1])["obs"][0, 14:].numpy(), [0.56, 0.01, -0.087, 1, 0, 0, 0], atol=1e-6)


def test_frame_stacks_never_cross_episode_starts(tmp_path):
    sd = write_session(tmp_path, "s", [4, 3, 2], image=(16, 16))
    ds = OfflineDataset(sd, "reach:0", "image", frame_stack=3, image_cache="memory")
    assert ds.obs_spec.shape == (9, 16, 16)

    def stack_ids(index):  # the global step number of each frame in the stack, oldest first
        obs = ds.observations(torch.tensor([index]))[0]
        return [int(obs[3 * k, 0, 0]) for k in range(3)]

    assert stack_ids(0) == [0, 0, 0]
    assert stack_ids(1) == [0, 0, 1]
    assert stack_ids(3) == [1, 2, 3]
    assert stack_ids(4) == [4, 4, 4]  # episode 2 starts: repeat its first frame, never frames 2, 3
    assert stack_ids(5) == [4, 4, 5]
    assert stack_ids(7) == [7, 7, 7]
    b = ds.batch([5])
    assert b["obs"].dtype == torch.uint8 and b["next_obs"].shape == (1, 9, 16, 16)
    assert [int(b["next_obs"][0, 3 * k, 0, 0]) for k in range(3)] == [4, 5, 6]


def test_image_memory_within_1_1x_raw_frames(tmp_path):
    lengths = [30, 25, 20]
    sd = write_session(tmp_path, "s", lengths, image=(32, 32))
    ds = OfflineDataset(sd, "reach:0", "image", image_cache="memory")
    raw = sum(lengths) * 32 * 32 * 3
    assert ds.raw_frame_bytes() == raw
    assert ds.frames.dtype == torch.uint8 and ds.vector is None
    # Every array the dataset holds for images: the single frames and the episode-start index.
    held = ds.frames.numel() * ds.frames.element_size() + ds.first.numel() * ds.first.element_size()
    assert ds.image_bytes() == held <= 1.1 * raw
    s = ds.sample(64)
    assert s["obs"].shape == (64, 9, 32, 32)


def test_memmap_cache_built_once_gives_the_same_batches(tmp_path):
    sd = write_session(tmp_path, "s", [6, 5], image=(8, 8))
    mem = OfflineDataset(sd, "reach:0", "image", image_cache="memory")
    cache = tmp_path / "cache"
    mm = OfflineDataset(sd, "reach:0", "image", image_cache="memmap", cache_dir=cache)
    assert mm.frames_kind == "memmap" and mm.image_bytes() < mm.raw_frame_bytes()
    files = sorted(cache.glob("frames-*.u8"))
    assert len(files) == 1
    stamp = os.stat(files[0]).st_mtime_ns
    OfflineDataset(sd, "reach:0", "image", image_cache="memmap", cache_dir=cache)
    assert os.stat(files[0]).st_mtime_ns == stamp  # reused, not rebuilt
    idx = torch.arange(mem.num_states - 1)
    assert torch.equal(mem.observations(idx), mm.observations(idx))


def test_relabelled_rewards_and_success(tmp_path):
    sd = write_session(tmp_path, "s", [8], tip_fn=tip_line)
    ds = OfflineDataset(sd, "reach:0")
    tips = np.array([tip_line(0, t) for t in range(8)])
    dist = np.linalg.norm(tips - GOAL0, axis=1)
    np.testing.assert_allclose(ds.reward_next[:7], -dist[1:], rtol=1e-6)
    np.testing.assert_array_equal(ds.success_next[:7], dist[1:] < 0.05)
    assert ds.success_next[:7].any() and not ds.success_next[:7].all()
    push = OfflineDataset(sd, "push")
    cube_y = 0.01 * np.arange(8)
    np.testing.assert_allclose(push.reward_next[:7], 1 - np.tanh(10 * np.maximum(0, 0.18 - cube_y[1:])), rtol=1e-6)
    flip = OfflineDataset(sd, "flip:yellow")
    assert (flip.reward_next[:7] == 1.0).all()


def test_upsampling_proportions(tmp_path):
    sd = write_session(tmp_path, "s", [20, 20], tip_fn=tip_line)
    base = OfflineDataset(sd, "reach:0", seed=1)
    rewarded = base.success_next
    frac = rewarded[base.valid_np].mean()
    assert 0 < frac < 0.5
    n = 40_000
    uniform = rewarded[base.sample_indices(n).numpy()].mean()
    assert uniform == pytest.approx(frac, abs=0.01)
    for alpha in (0.3, 0.7):
        ds = OfflineDataset(sd, "reach:0", upsample_alpha=alpha, seed=2)
        got = rewarded[ds.sample_indices(n).numpy()].mean()
        assert got == pytest.approx(alpha + (1 - alpha) * frac, abs=0.015)
        assert set(ds.sample_indices(1000).tolist()) <= set(ds.valid_np.tolist())


def test_sampler_state_round_trip(tmp_path):
    sd = write_session(tmp_path, "s", [10])
    ds = OfflineDataset(sd, "reach:0", seed=3)
    state = ds.sampler_state()
    a = ds.sample_indices(50)
    ds.load_sampler_state(state)
    assert torch.equal(a, ds.sample_indices(50))


def test_damaged_episode_is_skipped_with_the_stores_warning(tmp_path):
    sd = write_session(tmp_path, "s", [5, 6, 7])
    victim = sd / "episodes" / "episode_000001.h5"
    victim.write_bytes(victim.read_bytes()[:200])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = OfflineDataset(sd, "reach:0")
    assert any(issubclass(w.category, DamagedEpisodeWarning) and "episode_000001" in str(w.message) for w in caught)
    assert ds.num_transitions == 4 + 6


def test_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no episodes"):
        OfflineDataset(tmp_path / "empty", "reach:0")
    with pytest.raises(DatasetError, match="no such data directory"):
        OfflineDataset(tmp_path / "missing", "reach:0")
    hw = write_session(tmp_path, "hardware", [4], privileged=False)
    for task, obs in (("push", "proprio"), ("flip:red", "proprio"), ("reach:0", "proprio+object")):
        with pytest.raises(PrivilegedStateMissing, match="session hardware"):
            OfflineDataset(hw, task, obs)
    OfflineDataset(hw, "reach:0", "proprio")  # reach needs no privileged state
    with pytest.raises(DatasetError, match="camera"):
        OfflineDataset(hw, "reach:0", "image")
    cam = write_session(tmp_path, "cam", [4], image=(8, 8))
    with pytest.raises(DatasetError, match="different cameras"):
        OfflineDataset([hw, cam], "reach:0")
    tip = write_session(tmp_path, "tip", [4], action_space="tip_delta")
    with pytest.raises(DatasetError, match="different action spaces"):
        OfflineDataset([hw, tip], "reach:0")


def test_default_reward_scale_spreads_episode_returns_over_a_thousand():
    from learning.train_config import default_reward_scale

    assert default_reward_scale(np.array([-80.0, -30.0, -55.0])) == pytest.approx(20.0)
    assert default_reward_scale(np.array([-42.0])) == 1.0  # no spread: rewards left as they are


def test_a_salvaged_episode_with_missing_steps_gives_no_transition_across_the_gap(tmp_path):
    """A `.partial` damaged in its middle is salvaged with steps 10..19 missing (store):
    the dataset treats steps 0..9 and 20..39 as two runs, never pairing s_9 with s_20."""
    from store import SessionStore, scan_partial

    from .helpers import HOME_Q, session_yaml

    opts = {"flush_every_steps": 10, "flush_interval_s": 3600.0, "free_space_floor_bytes": 0}
    with SessionStore.open(tmp_path, "s", session_yaml_text=session_yaml("s", episode_steps=40), **opts) as store:
        rec = store.begin_episode({"explorer": "synthetic"})
        for t in range(40):
            q = np.array(HOME_Q)
            q[0] = t / 1000.0
            rec.append(
                {
                    "time": np.float64(t / 20.0),
                    "obs/q": q,
                    "obs/dq": np.zeros(7),
                    "obs/tip_pos": np.array([0.45 + 0.01 * t, 0.0, 0.1]),
                    "command": 0.25 * np.sin(np.arange(7) + t),
                }
            )
        rec.abandon()
    data = bytearray(rec.path.read_bytes())
    data[scan_partial(rec.path).chunks[1][2] + 3] ^= 0xFF  # an array byte of steps 10..19
    rec.path.write_bytes(bytes(data))
    SessionStore.open(tmp_path, "s", free_space_floor_bytes=0).close()  # salvages it

    ds = OfflineDataset(tmp_path / "s", "reach:0", "proprio", n_step=3, gamma=0.9)
    assert ds.num_states == 30 and ds.num_transitions == 9 + 19
    assert 9 not in ds.valid_np.tolist()  # s_9 is the last state of its run
    assert ds.first[9].item() == 0 and ds.first[10].item() == 10  # frame stacks restart after the gap
    b = ds.batch(ds.valid_np)
    step = torch.round(b["obs"][:, 0] * 1000)
    step_next = torch.round(b["next_obs"][:, 0] * 1000)
    gap = step_next - step
    assert ((gap >= 1) & (gap <= 3)).all(), "an n-step window crossed the gap"
    assert not ((step < 10) & (step_next >= 20)).any()
    assert b["discount"][ds.valid_np.tolist().index(8)].item() == pytest.approx(0.9)  # s_8 -> s_9 only
