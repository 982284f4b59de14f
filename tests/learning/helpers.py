"""Tiny synthetic sessions written through the real episode store (same keys as the collector)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from safety.reset import DEFAULT_HOME_Q
from store import SessionStore

HOME_Q = DEFAULT_HOME_Q.tolist()


def session_yaml(
    session_id: str = "synthetic",
    backend: str = "pybullet",
    cameras: list | None = None,
    action_space: str = "joint_velocity",
    episode_steps: int = 20,
    velocity_cap: float = 0.5,
) -> str:
    return yaml.safe_dump(
        {
            "session_id": session_id,
            "robot": {"backend": backend, "options": {"cameras": cameras or []}},
            "action_space": action_space,
            "control_rate_hz": 20.0,
            "episode_steps": episode_steps,
            "home_q": HOME_Q,
            "safety": {"velocity_cap": velocity_cap},
        }
    )


def write_session(
    root: Path,
    name: str,
    lengths: list[int],
    *,
    outcomes: list[str] | None = None,
    image: tuple[int, int] | None = None,
    privileged: bool = True,
    tip_fn=None,
    seed: int = 0,
    **yaml_options,
) -> Path:
    """A session of episodes of the given lengths. Step t of episode e has q[0] = e + t / 1000
    (so tests can tell states apart), command = 0.25 * sin(...), tool tip from ``tip_fn(e, t)``
    (default: a straight line), and (with ``image``) frames whose every pixel is the step's global
    number mod 251."""
    rng = np.random.default_rng(seed)
    cameras = [{"name": "front", "width": image[1], "height": image[0]}] if image else []
    text = session_yaml(name, cameras=cameras, **yaml_options)
    outcomes = outcomes or ["complete"] * len(lengths)
    counter = 0
    with SessionStore.open(root, name, session_yaml_text=text) as store:
        for e, (length, outcome) in enumerate(zip(lengths, outcomes, strict=True)):
            rec = store.begin_episode({"explorer": "synthetic"}, seeds={"e": e})
            for t in range(length):
                q = np.array(HOME_Q) + rng.normal(0, 0.01, 7)
                q[0] = e + t / 1000.0
                step = {
                    "time": np.float64(t / 20.0),
                    "obs/q": q,
                    "obs/dq": rng.normal(0, 0.1, 7),
                    "obs/tip_pos": np.array(tip_fn(e, t) if tip_fn else (0.45 + 0.01 * t, 0.0, 0.1)),
                    "action": np.full(7, 0.1),
                    "command": 0.25 * np.sin(np.arange(7) + t + 10 * e),
                }
                if image:
                    step["obs/images/front"] = np.full((*image, 3), counter % 251, dtype=np.uint8)
                if privileged:
                    step["privileged/cube_pos"] = np.array([0.56, 0.01 * t, -0.087])
                    step["privileged/cube_quat"] = np.array([1.0, 0.0, 0.0, 0.0])
                    step["privileged/cube_top_face"] = np.int64(4)
                rec.append(step)
                counter += 1
            rec.finish(outcome)
    return root / name
