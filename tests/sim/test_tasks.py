"""Task rewards and success predicates on hand-made logged states."""

import numpy as np
import pytest

from sim.scene import CUBE_FACE_COLOURS
from sim.tasks import TaskParameters, make_task


def test_reach_reward_is_minus_distance_and_success_inside_radius():
    task = make_task("reach:0")
    goal = np.array(TaskParameters().reach_goals[0])
    tips = np.stack([goal + [0.3, 0.0, 0.0], goal + [0.0, 0.04, 0.0], goal])
    np.testing.assert_allclose(task.reward({"tip_pos": tips}), [-0.3, -0.04, 0.0], atol=1e-6)
    assert task.success({"tip_pos": tips}).tolist() == [False, True, True]


def test_every_reach_goal_is_a_different_point():
    goals = [make_task(f"reach:{k}").goal for k in range(4)]
    assert len({tuple(g) for g in goals}) == 4


def test_push_reward_rises_to_one_past_the_threshold():
    task = make_task("push")
    cube = np.array([[0.56, 0.0, -0.087], [0.56, 0.10, -0.087], [0.56, 0.18, -0.087], [0.56, 0.25, -0.087]])
    reward = task.reward({"cube_pos": cube, "cube_top_face": np.zeros(4)})
    np.testing.assert_allclose(reward, [1 - np.tanh(1.8), 1 - np.tanh(0.8), 1.0, 1.0], atol=1e-6)
    assert task.success({"cube_pos": cube}).tolist() == [False, False, True, True]


def test_flip_rewards_only_the_named_colour_on_top():
    task = make_task("flip:red")
    faces = np.array([CUBE_FACE_COLOURS.index(c) for c in ("yellow", "red", "blue")])
    assert task.reward({"cube_top_face": faces}).tolist() == [0.0, 1.0, 0.0]


def test_push_flip_is_the_sum_and_needs_both():
    task = make_task("push+flip:blue")
    blue = CUBE_FACE_COLOURS.index("blue")
    states = {
        "cube_pos": np.array([[0.5, 0.3, 0.0], [0.5, 0.3, 0.0], [0.5, 0.0, 0.0]]),
        "cube_top_face": np.array([blue, 0, blue]),
    }
    np.testing.assert_allclose(task.reward(states), [2.0, 1.0, 1.0 + 1 - np.tanh(1.8)], atol=1e-6)
    assert task.success(states).tolist() == [True, False, False]


def test_cube_tasks_need_privileged_state_and_say_so():
    task = make_task("push")
    assert task.requires_privileged
    with pytest.raises(KeyError, match="cube_pos"):
        task.reward({"tip_pos": np.zeros((2, 3))})


@pytest.mark.parametrize("spec", ["reach", "reach:9", "reach:x", "flip:purple", "push:3", "lift"])
def test_bad_task_names_are_rejected_with_the_name(spec):
    with pytest.raises(ValueError, match="task"):
        make_task(spec)
