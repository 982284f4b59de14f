"""The adversarial soak (benchmarks/safety_soak.py) is resumable: a run stopped in the middle of an
episode and started again ends with exactly the statistics of an uninterrupted run (everything but
the timings), because every episode starts with a reset and its own seed, and only finished
episodes are saved.  Short episodes keep it to a few seconds (PyBullet, the faster simulator)."""

from __future__ import annotations

import json

import pytest

from benchmarks import safety_soak

EPISODE_STEPS = 40
EPISODES = 3
TIMINGS = ("elapsed_s", "filter_total_s", "filter_max_s", "filter_hist")


def _run(path, stop=lambda: False):
    return safety_soak.run(
        path,
        EPISODES * EPISODE_STEPS,
        ("pybullet",),
        ("tip_delta",),
        seed=3,
        episode_steps=EPISODE_STEPS,
        chunk_episodes=1,
        stop=stop,
        log=lambda line: None,
    )


def _measured(path) -> dict:
    state = safety_soak.load_state(path)
    tally = state["runs"]["pybullet/tip_delta"]["tally"].to_dict()
    return {k: v for k, v in tally.items() if k not in TIMINGS}


@pytest.mark.slow
def test_an_interrupted_soak_resumes_to_the_uninterrupted_result(tmp_path):
    whole = tmp_path / "whole.json"
    _, finished = _run(whole)
    assert finished

    resumed = tmp_path / "resumed.json"
    calls = []

    def stop_in_episode_two():  # called once per step: stops 10 steps into the second episode
        calls.append(None)
        return len(calls) > EPISODE_STEPS + 10

    _, finished = _run(resumed, stop_in_episode_two)
    assert not finished
    partial = safety_soak.load_state(resumed)["runs"]["pybullet/tip_delta"]["tally"]
    assert (partial.episodes, partial.steps) == (1, EPISODE_STEPS), "only whole episodes are saved"
    assert not resumed.with_name(resumed.name + ".partial").exists()

    _, finished = _run(resumed)
    assert finished
    expected, got = _measured(whole), _measured(resumed)
    assert got["steps"] == EPISODES * EPISODE_STEPS
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    # Another run with the same target does nothing; the report reads the state.
    state, finished = _run(resumed)
    assert finished and state["runs"]["pybullet/tip_delta"]["tally"].steps == EPISODES * EPISODE_STEPS
    assert "| PyBullet | tip_delta | 120 |" in safety_soak.table(safety_soak.results(state))

    # After a code change, --restart measures the selected run again from zero and keeps the old
    # result under "superseded"; runs not selected are left alone.
    state["code"][-1] = "older code"
    state["runs"]["robosuite/joint_velocity"] = {"tally": safety_soak.Tally(), "code_version": 0}
    state["runs"]["robosuite/joint_velocity"]["tally"].steps = 7
    safety_soak.save_state(resumed, state)
    with pytest.raises(safety_soak.StateError, match="other code"):
        _run(resumed)
    state, finished = safety_soak.run(
        resumed,
        EPISODE_STEPS,
        ("pybullet",),
        ("tip_delta",),
        seed=3,
        episode_steps=EPISODE_STEPS,
        restart=True,
        log=lambda line: None,
    )
    assert finished
    saved = safety_soak.load_state(resumed)
    assert saved["runs"]["pybullet/tip_delta"]["tally"].steps == EPISODE_STEPS
    assert saved["runs"]["pybullet/tip_delta"]["code_version"] == len(saved["code"]) - 1 == 1
    assert saved["runs"]["robosuite/joint_velocity"]["tally"].steps == 7
    assert [(old["run"], old["tally"]["steps"]) for old in saved["superseded"]] == [
        ("pybullet/tip_delta", EPISODES * EPISODE_STEPS)
    ]


def test_a_state_of_other_settings_is_refused(tmp_path):
    path = tmp_path / "state.json"
    safety_soak.save_state(
        path,
        {"settings": safety_soak.settings(3, safety_soak.SafetyLimits(), EPISODE_STEPS), "code": ["x"], "runs": {}},
    )
    with pytest.raises(safety_soak.StateError, match="other code"):
        _run(path)
    with pytest.raises(safety_soak.StateError, match="other settings"):
        safety_soak.run(path, 10, seed=1, episode_steps=EPISODE_STEPS, log=lambda line: None)
    path.write_text("{}")
    with pytest.raises(safety_soak.StateError, match="not a safety soak state"):
        _run(path)
