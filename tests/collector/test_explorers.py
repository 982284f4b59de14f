"""The non-learned explorers: bounds, per-episode policies, GEP's archive, exact resume."""

import numpy as np
import pytest
from pydantic import ValidationError

from collector.explorers import ExplorerSpec, make_explorer

SPEC = ExplorerSpec(
    observation_low=np.concatenate([np.full(7, -2.9), np.full(7, -0.5)]),
    observation_high=np.concatenate([np.full(7, 2.9), np.full(7, 0.5)]),
    action_limit=np.full(7, 0.5),
    action_dim=7,
    episode_steps=50,
)


def _observations(rng, n=50):
    return rng.uniform(SPEC.observation_low, SPEC.observation_high, size=(n, 14))


def _run_episode(explorer, rng):
    explorer.begin_episode()
    observations = _observations(rng)
    actions = np.stack([explorer.act(o) for o in observations])
    explorer.on_episode_end(observations)
    return actions


@pytest.mark.parametrize("name", ["random", "random_linear", "gep", "diayn"])
def test_actions_stay_inside_the_action_box_even_for_wild_observations(name):
    explorer = make_explorer(name, SPEC, {}, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        explorer.begin_episode()
        for observation in rng.normal(0, 100, size=(100, 14)):
            action = explorer.act(observation)
            assert action.shape == (7,)
            assert np.all(np.abs(action) <= 0.5 + 1e-12)


def test_random_linear_keeps_one_policy_per_episode_and_draws_a_new_one_each_episode():
    explorer = make_explorer("random_linear", SPEC, {}, seed=1)
    observation = np.zeros(14)
    explorer.begin_episode()
    first = explorer.act(observation)
    np.testing.assert_array_equal(first, explorer.act(observation))
    explorer.begin_episode()
    assert not np.allclose(first, explorer.act(observation))


def test_random_linear_actions_are_not_all_saturated():
    explorer = make_explorer("random_linear", SPEC, {}, seed=2)
    actions = np.concatenate([_run_episode(explorer, np.random.default_rng(i)) for i in range(20)])
    saturated = np.mean(np.isclose(np.abs(actions), 0.5))
    assert 0.05 < saturated < 0.7, f"{saturated:.0%} of action components at the limit"


def test_gep_bootstraps_then_perturbs_the_policy_nearest_to_a_random_goal():
    explorer = make_explorer("gep", SPEC, {"bootstrap_policies": 5}, seed=3)
    rng = np.random.default_rng(3)
    phases = []
    for _ in range(8):
        info = explorer.begin_episode()
        phases.append(info["gep_phase"])
        observations = _observations(rng)
        [explorer.act(o) for o in observations]
        explorer.on_episode_end(observations)
        if info["gep_phase"] == "goal":
            goal = np.array(info["gep_goal"])
            descriptors = np.stack(explorer.descriptors[:-1])
            assert info["gep_parent"] == int(np.argmin(np.linalg.norm(descriptors - goal, axis=1)))
            parent = explorer.policies[info["gep_parent"]]
            difference = explorer.policies[-1] - parent
            assert 0.05 < np.std(difference) < 0.3, "perturbation is not N(0, 0.2)-sized"
        np.testing.assert_allclose(explorer.descriptors[-1], SPEC.normalise(observations).mean(axis=0))
    assert phases == ["bootstrap"] * 5 + ["goal"] * 3


@pytest.mark.parametrize("name", ["random", "random_linear", "gep", "diayn"])
def test_state_dict_round_trip_continues_identically(name):
    explorer = make_explorer(name, SPEC, {"bootstrap_policies": 2} if name == "gep" else {}, seed=4)
    for i in range(3):
        _run_episode(explorer, np.random.default_rng(i))
    clone = make_explorer(name, SPEC, {"bootstrap_policies": 2} if name == "gep" else {}, seed=999)
    clone.load_state_dict(explorer.state_dict())
    for i in range(3):
        np.testing.assert_array_equal(
            _run_episode(explorer, np.random.default_rng(10 + i)), _run_episode(clone, np.random.default_rng(10 + i))
        )


def test_unknown_explorer_and_unknown_parameter_are_named():
    with pytest.raises(KeyError, match="unknown explorer 'curious'"):
        make_explorer("curious", SPEC, {}, seed=0)
    with pytest.raises(ValidationError, match="bootstrap_polices"):
        make_explorer("gep", SPEC, {"bootstrap_polices": 3}, seed=0)
