"""The gymnasium environment: the API contract, task rewards, and the safety filter in the path."""

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import sim.gym_env  # noqa: F401 - registers pandalab/Panda-v0
from sim.gym_env import PandaEnv


@pytest.fixture(scope="module")
def env():
    env = PandaEnv({"backend": "pybullet", "cameras": [{"name": "front", "width": 32, "height": 32}]}, "reach:0", 20)
    yield env
    env.close()


def test_passes_gymnasiums_env_checker(env):
    check_env(env, skip_render_check=True)


def test_reward_is_the_tasks_and_episodes_truncate_at_the_time_limit(env):
    observation, _ = env.reset(seed=0)
    assert observation["front"].shape == (32, 32, 3)
    goal = env.task.goal
    for step in range(20):
        observation, reward, terminated, truncated, _ = env.step(np.full(7, 0.1))
        assert reward == pytest.approx(-np.linalg.norm(observation["tip_pos"] - goal), abs=1e-6)
        assert not terminated
        assert truncated == (step == 19)


def test_actions_beyond_the_cap_are_filtered_before_the_driver(env):
    env.reset()
    _, _, _, _, info = env.step(np.full(7, 50.0))
    assert np.all(np.abs(info["command"]) <= 0.5 + 1e-9)
    assert {event["kind"] for event in info["safety_events"]} >= {"velocity_clip"}
    _, _, _, _, info = env.step(np.array([np.nan] * 7))
    assert np.all(info["command"] == 0.0)
    assert "nonfinite" in {event["kind"] for event in info["safety_events"]}


def test_tip_delta_env_moves_the_tool_tip_through_the_filter():
    env = gymnasium.make(
        "pandalab/Panda-v0", sim_config={"backend": "robosuite", "action_space": "tip_delta", "cameras": []}
    )
    try:
        observation, _ = env.reset()
        start = observation["tip_pos"].copy()
        for _ in range(5):
            observation, *_ = env.step(np.array([0.01, 0.0, 0.0]))
        for _ in range(8):
            observation, *_ = env.step(np.zeros(3))
        moved = observation["tip_pos"] - start
        assert np.linalg.norm(moved - [0.05, 0.0, 0.0]) < 0.005, moved
    finally:
        env.close()


def test_a_collision_reflex_terminates_the_episode_with_the_event_and_a_reset_recovers():
    """Driving the tool tip at the cube (PyBullet, tip_delta) presses it harder than the collision
    thresholds allow: the arm stops itself, as a real Franka does.  The episode ends there
    (terminated, not truncated, not an exception that would end an evaluation or a training), the
    event is in ``info``; the next reset recovers the arm."""
    from sim.scene import CUBE_START_POS

    env = gymnasium.make(
        "pandalab/Panda-v0",
        sim_config={"backend": "pybullet", "action_space": "tip_delta", "cameras": []},
        task="push",
    ).unwrapped
    try:
        obs, _ = env.reset()
        into_the_cube = CUBE_START_POS + np.array([0.0, 0.0, -0.05])
        for _ in range(120):
            action = np.clip((into_the_cube - obs["tip_pos"]) / 0.02, -1, 1) * env.action_space.high
            obs, _, terminated, truncated, info = env.step(action)
            if terminated:
                break
        assert terminated and not truncated, "the reflex never tripped"
        assert "collision reflex" in info["collision_reflex"]
        assert [e["kind"] for e in info["safety_events"]] == ["collision_reflex"]
        assert not np.any(info["command"])
        obs, _ = env.reset()
        obs, _, terminated, truncated, info = env.step(np.zeros(3))
        assert not terminated and "collision_reflex" not in info
    finally:
        env.close()
