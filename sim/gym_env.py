"""A thin `gymnasium.Env` over a simulated backend, for evaluating policies and for users' tools.

Every action goes through the safety filter (`robot_drivers.safe_driver.SafeDriver`), exactly as
in the collector, so a policy evaluated here meets the same limits it met during collection.

    import gymnasium, sim.gym_env
    env = gymnasium.make("pandalab/Panda-v0", sim_config={"backend": "pybullet"}, task="reach:0")

Observations are a dict: ``q`` (7, rad), ``dq`` (7, rad/s), ``tip_pos`` (3, m), one uint8 image
per configured camera under its name, and (simulation only, never for explorers) ``cube_pos``,
``cube_quat`` and ``cube_top_face``.  The reward is the task's (`sim.tasks`), computed on the
state reached; ``info`` carries ``success``, the command actually sent and the safety events.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import numpy as np
from gymnasium import spaces

from robot_drivers import ActionSpace, DriverFault, FaultReason, RobotState, create_driver
from robot_drivers.safe_driver import SafeDriver
from safety.types import SafetyEvent
from sim.config import SimConfig
from sim.scene import CUBE_FACES, DEFAULT_HOME_Q
from sim.tasks import Task, make_task, states_from


class PandaEnv(gymnasium.Env):
    """The seed-003 scene as a gymnasium environment with a time limit of ``episode_steps``."""

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        sim_config: SimConfig | dict[str, Any] | None = None,
        task: Task | str | None = None,
        episode_steps: int = 200,
        home: np.ndarray | None = None,
        safety_limits: Any = None,
        render_mode: str | None = None,
    ) -> None:
        if sim_config is None:
            sim_config = SimConfig()
        elif isinstance(sim_config, dict):
            sim_config = SimConfig(**sim_config)
        if episode_steps <= 0:
            raise ValueError(f"episode_steps must be positive, got {episode_steps}")
        self.sim_config = sim_config
        self.task = make_task(task) if isinstance(task, str) else task
        self.episode_steps = episode_steps
        self.home = DEFAULT_HOME_Q.copy() if home is None else np.asarray(home, dtype=np.float64)
        self.render_mode = render_mode
        # The filter turns every action (either space) into joint velocities for the driver.
        driver_config = sim_config.model_copy(update={"action_space": ActionSpace.joint_velocity})
        self.driver = create_driver(sim_config.backend, driver_config)
        self.driver.connect()
        self.safe = SafeDriver(self.driver, safety_limits, action_space=sim_config.action_space)
        limit = self.safe.action_limit
        self.action_space = spaces.Box(
            -limit, limit, shape=(ActionSpace(sim_config.action_space).dim,), dtype=np.float64
        )
        observation = {
            "q": spaces.Box(-np.pi * 2, np.pi * 2, shape=(7,), dtype=np.float64),
            "dq": spaces.Box(-10.0, 10.0, shape=(7,), dtype=np.float64),
            "tip_pos": spaces.Box(-2.0, 2.0, shape=(3,), dtype=np.float64),
            "cube_pos": spaces.Box(-5.0, 5.0, shape=(3,), dtype=np.float64),
            "cube_quat": spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float64),
            "cube_top_face": spaces.Discrete(len(CUBE_FACES)),
        }
        for camera in sim_config.cameras:
            observation[camera.name] = spaces.Box(0, 255, shape=(camera.height, camera.width, 3), dtype=np.uint8)
        self.observation_space = spaces.Dict(observation)
        self._state: RobotState | None = None
        self._steps = 0

    def _observation(self, state: RobotState) -> dict[str, Any]:
        observation: dict[str, Any] = {"q": state.q, "dq": state.dq, "tip_pos": state.tip_pos}
        observation.update(state.images)
        observation["cube_pos"] = state.privileged["cube_pos"]
        observation["cube_quat"] = state.privileged["cube_quat"]
        observation["cube_top_face"] = int(state.privileged["cube_top_face"])
        return observation

    def _score(self, state: RobotState) -> tuple[float, bool]:
        if self.task is None:
            return 0.0, False
        states = states_from([state])
        return float(self.task.reward(states)[0]), bool(self.task.success(states)[0])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._state = self.safe.reset(self.home)
        self._steps = 0
        _, success = self._score(self._state)
        return self._observation(self._state), {"success": success}

    def step(self, action: np.ndarray):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        try:
            command, events = self.safe.act(self._state, np.asarray(action, dtype=np.float64))
            values, reflex = command.values, None
        except DriverFault as fault:
            if fault.reason is not FaultReason.collision_reflex:
                raise
            # The arm stopped itself (it met the table or the cube harder than the collision thresholds
            # allow), as a real Franka does: the episode ends here, terminated, with the event.
            values, reflex = np.zeros(ActionSpace(self.sim_config.action_space).dim), fault.message
            events = [SafetyEvent("collision_reflex", None, 1.0, fault.message)]
        self._state = self.safe.read_state()
        self._steps += 1
        reward, success = self._score(self._state)
        truncated = self._steps >= self.episode_steps and reflex is None
        info = {"success": success, "command": values, "safety_events": [e.to_dict() for e in events]}
        if reflex is not None:
            info["collision_reflex"] = reflex
        return self._observation(self._state), reward, reflex is not None, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._state is None or not self._state.images:
            return None
        return next(iter(self._state.images.values()))

    def close(self) -> None:
        self.driver.close()


gymnasium.register(id="pandalab/Panda-v0", entry_point="sim.gym_env:PandaEnv")
