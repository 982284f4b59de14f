"""The learned explorers (`rnd`, `gcrnd`) inside the real collector daemon: both simulators, with
and without images (tiny networks, 24x24 frames, short episodes), and a `gcrnd` session killed
with SIGKILL in the middle and restarted: it continues the same explorer."""

from __future__ import annotations

import itertools
import pathlib
import subprocess

import pytest

from collector.checkpoint import load_explorer_checkpoint
from collector.control import send_request
from store import iter_episodes, read_events, read_manifest
from tests.e2e.conftest import pandalab, wait_for, wait_until_answering, write_config

TINY = {
    "actor_hidden": [16, 16],
    "critic_hidden": [16, 16],
    "rnd_hidden": [16, 16],
    "rnd_output_dim": 8,
    "conv_layers": [[8, 4, 2], [8, 3, 2]],
    "rnd_conv_layers": [[8, 4, 2], [8, 3, 2]],
    "episodes_per_cycle": 2,
    "batch_size": 16,
    "rnd_batch_size": 32,
}
EPISODES, STEPS = 3, 15
COMBOS = list(itertools.product(["rnd", "gcrnd"], ["pybullet", "robosuite"], ["proprio", "image"]))


def _config(tmp_path: pathlib.Path, explorer: str, backend: str, observation: str, **overrides) -> pathlib.Path:
    camera = {"name": "front", "width": 24, "height": 24}
    return write_config(
        tmp_path,
        robot={"backend": backend, "options": {"cameras": [camera]}},
        action_space="tip_delta",
        episode_steps=STEPS,
        explorer={"name": explorer, "observation": observation, "parameters": TINY},
        **overrides,
    )


@pytest.fixture(scope="module")
def finished_sessions(tmp_path_factory) -> dict[tuple[str, str, str], tuple[pathlib.Path, subprocess.Popen, str]]:
    """All eight combinations run at once (each a daemon process), to keep the wall time low."""
    runs = {}
    for combo in COMBOS:
        tmp = tmp_path_factory.mktemp("_".join(combo).replace("+", ""))
        config = _config(tmp, *combo, stop={"episodes": EPISODES})
        runs[combo] = (tmp, pandalab("collect", "--config", str(config)))
    out = {}
    for combo, (tmp, process) in runs.items():
        try:
            process.wait(timeout=240)
        finally:
            if process.poll() is None:
                process.kill()
        out[combo] = (tmp / "data" / "e2e", process, process.stdout.read())
    return out


@pytest.mark.parametrize(("explorer", "backend", "observation"), COMBOS)
def test_runs_episodes_through_the_daemon(finished_sessions, explorer, backend, observation):
    session, process, output = finished_sessions[(explorer, backend, observation)]
    assert process.returncode == 0, output
    manifest = read_manifest(session)
    assert len(manifest) == EPISODES
    ends = [e for e in read_events(session) if e["kind"] == "episode_end"]
    assert len(ends) == EPISODES
    assert all(e["td3_updates"] > 0 for e in ends), ends
    assert ends[1]["rnd_cycles"] == 1, "one RND cycle after M = 2 episodes"
    episodes = list(iter_episodes([session]))
    assert [e.metadata["phase"] for e in episodes] == ["heatup", "policy", "policy"]
    if explorer == "gcrnd":
        for recorded in episodes[1:]:
            goal = recorded.metadata["goal"]
            assert 0 <= goal["episode"] < recorded.index and 0 <= goal["step"] < STEPS
            assert ("vector" in goal) == (observation == "proprio")
    checkpoint, _ = load_explorer_checkpoint(session / "explorer" / "checkpoint.pt")
    assert checkpoint["episodes_started"] == EPISODES
    assert checkpoint["known_episodes"] == [e.index for e in manifest]


def test_killed_gcrnd_session_continues_the_same_explorer(tmp_path):
    config = _config(tmp_path, "gcrnd", "pybullet", "proprio", stop={"episodes": 1000})
    session = tmp_path / "data" / "e2e"
    checkpoint_path = session / "explorer" / "checkpoint.pt"
    address = f"ipc://{tmp_path}/control"

    daemon = pandalab("collect", "--config", str(config))
    try:
        wait_until_answering(address, daemon)
        wait_for(lambda: len(read_manifest(session)) >= 4 and checkpoint_path.exists(), timeout_s=120)
        wait_for(lambda: send_request(address, "status")["episode_step"] > 3, timeout_s=60)  # mid-episode
    finally:
        daemon.kill()
        daemon.wait()
    state, _ = load_explorer_checkpoint(checkpoint_path)
    assert state["episodes_started"] >= 4 and state["rnd_cycles"] >= 2

    daemon = pandalab("collect", "--config", str(config))
    try:
        wait_until_answering(address, daemon)
        wait_for(lambda: len(read_manifest(session)) >= len(state["known_episodes"]) + 3, timeout_s=120)
        send_request(address, "stop")
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    after, _ = load_explorer_checkpoint(checkpoint_path)

    events = read_events(session)
    resumed = [e for e in events if e["kind"] == "explorer_resumed"]
    assert [e["episodes_started"] for e in resumed] == [state["episodes_started"]]
    restart = max(i for i, e in enumerate(events) if e["kind"] == "session_start")
    later = [e for e in events[restart:] if e["kind"] == "episode_end"]
    # counters continue from the checkpoint: no re-initialisation, no second heatup
    assert after["episodes_started"] == state["episodes_started"] + len(later)
    assert after["agent"]["updates"] == state["agent"]["updates"] + sum(e.get("td3_updates", 0) for e in later)
    assert after["policy_steps"] > state["policy_steps"]
    assert after["rnd_cycles"] >= state["rnd_cycles"]
    assert after["known_episodes"][: len(state["known_episodes"])] == state["known_episodes"]
    manifest = read_manifest(session)
    assert sorted(after["known_episodes"]) == [e.index for e in manifest], "the salvaged episode is trained on too"
    first_after = min(e["episode"] for e in later)
    (resumed_episode,) = [e for e in iter_episodes([session]) if e.index == first_after]
    assert resumed_episode.metadata["phase"] == "policy"
    goal = resumed_episode.metadata["goal"]
    assert (goal["episode"], goal["step"]) == (state["pending_goal"]["episode"], state["pending_goal"]["step"])
