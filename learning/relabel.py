"""Hindsight relabelling: a task chosen at training time scores logged states (000 section 3.3).

The collector never knows the task; `sim.tasks` defines each one as a pure function of logged
states, so a whole episode is relabelled at once from its arrays:

- the reward of the transition (s_t, a_t, s_{t+1}) is the task's reward of s_{t+1} (the state the
  command led to, as `sim.gym_env.PandaEnv.step` scores it during evaluation);
- a transition is "high reward" (for up-sampling, 002 section 4.2) when the task's success
  predicate holds in s_{t+1}.

Tasks needing the cube (push, flip, push+flip) read ``privileged/*``, which only simulation logs;
`check_privileged` refuses data without it, naming the session.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sim.tasks import Task

TASK_STATE_KEYS = {
    "tip_pos": "obs/tip_pos",
    "cube_pos": "privileged/cube_pos",
    "cube_quat": "privileged/cube_quat",
    "cube_top_face": "privileged/cube_top_face",
}
"""Task state name (sim.tasks) -> key in the episode file."""
PRIVILEGED_KEYS = ("privileged/cube_pos", "privileged/cube_quat", "privileged/cube_top_face")


class PrivilegedStateMissing(ValueError):
    """The task or observation needs simulator ground truth that the data does not hold."""


def task_state_keys(task: Task) -> list[str]:
    """Episode keys the task reads."""
    return [TASK_STATE_KEYS[name] for name in task.required_keys()]


def task_states(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays `sim.tasks` takes, from an episode's arrays keyed as on disk."""
    return {name: np.asarray(arrays[key]) for name, key in TASK_STATE_KEYS.items() if key in arrays}


def check_privileged(what: str, have_keys, session: str) -> None:
    """Raise `PrivilegedStateMissing` when an episode of ``session`` lacks the cube's state."""
    missing = [k for k in PRIVILEGED_KEYS if k not in have_keys]
    if missing:
        raise PrivilegedStateMissing(
            f"{what} needs privileged simulator state ({', '.join(missing)}), which session {session} lacks "
            "(hardware data, or a recording without the cube): use a reach task / the proprio or image "
            "observation, or data collected in simulation"
        )


def relabel(task: Task, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Reward (float32) and success (bool) of every logged state of one episode, shape (T,).

    The transition from state t is rewarded with entry t + 1 (see the module docstring)."""
    states = task_states(arrays)
    reward = np.asarray(task.reward(states), dtype=np.float32)
    success = np.asarray(task.success(states), dtype=bool)
    return reward, success


def transition_rewards(task: Task, arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Reward and success of the T - 1 transitions of one episode: the task scored on s_1..s_{T-1}."""
    reward, success = relabel(task, arrays)
    return reward[1:], success[1:]
