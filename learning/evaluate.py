"""Scoring a policy in simulation, on the robot the data was recorded with.

The environment is `sim.gym_env.PandaEnv` rebuilt from the data's session.yaml (``env_spec``:
backend, cameras, control rate, home pose, safety limits), always with joint velocity actions:
the logged commands are joint velocities in every session (the safety filter emits them), so a
policy learned from them outputs joint velocities in [-1, 1], scaled back by the velocity caps and
sent through the same safety filter the collector used. Data from hardware is scored in robosuite
(``eval_backend``).

Episodes start from the home pose, perturbed by ``home_noise_rad`` (uniform per joint, seeded per
episode): a deterministic policy in a deterministic simulator would otherwise repeat one episode N
times. Measures per episode (seed 001 Table 1): return (sum of the task's rewards of the states
reached), success (the task's predicate held at some step: reach is not terminal here) and at the
end, and for tasks with a distance (reach: tool tip to goal; push: cube to region) the final and
the CLOSEST distance over the episode (including its first state).

A checkpoint (`evaluate_checkpoint`, `pandalab eval`) is scored on the robot its data came from,
rebuilt from the env spec saved in it. Of a run's evaluations, "best" is the one with the highest
success rate, then the smallest mean closest distance, then the highest return (`is_better`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learning.algorithms.base import Algorithm
from learning.checkpoint import load_checkpoint, obs_spec_from_checkpoint
from learning.train_config import TrainError, build_algorithm, resolve_device

VIDEO_CAMERA = {"name": "front", "width": 320, "height": 240}
"""Camera added for `--video` when the policy's environment has none."""


def simulator_for(env_spec: dict[str, Any]) -> str:
    """The simulator to evaluate in: the data's own backend when it is a simulator, else MuJoCo
    (robosuite) for data recorded on hardware."""
    from sim.config import SIM_BACKENDS

    return env_spec["backend"] if env_spec["backend"] in SIM_BACKENDS else "robosuite"


def make_env(
    env_spec: dict[str, Any],
    task,
    episode_steps: int,
    *,
    backend: str | None = None,
    seed: int = 0,
    extra_cameras: tuple[dict[str, Any], ...] = (),
):
    """A `PandaEnv` like the robot in ``env_spec`` (see `learning.dataset.SessionInfo.env_spec`)."""
    from safety.limits import SafetyLimits
    from sim.gym_env import PandaEnv

    backend = backend or simulator_for(env_spec)
    cameras = [dict(c) for c in env_spec.get("cameras", [])] + [dict(c) for c in extra_cameras]
    sim_config = {
        "backend": backend,
        "cameras": cameras,
        "action_space": "joint_velocity",
        "control_rate_hz": env_spec.get("control_rate_hz", 20.0),
        "seed": seed,
    }
    return PandaEnv(
        sim_config,
        task=task,
        episode_steps=episode_steps,
        home=np.asarray(env_spec["home_q"], dtype=np.float64),
        safety_limits=SafetyLimits(**env_spec.get("safety", {})),
    )


class Policy:
    """An algorithm acting on `PandaEnv` observations, with the dataset's observation layout."""

    def __init__(
        self,
        algo: Algorithm,
        obs_kind: str,
        action_limit: np.ndarray,
        camera: str | None = None,
        frame_stack: int = 1,
    ) -> None:
        self.algo = algo
        self.obs_kind = obs_kind
        self.action_limit = np.asarray(action_limit, dtype=np.float64)
        self.camera = camera
        self.frame_stack = frame_stack
        self.frames: collections.deque = collections.deque(maxlen=frame_stack)

    def reset(self) -> None:
        self.frames.clear()

    def observation(self, obs: dict[str, Any]) -> torch.Tensor:
        if self.obs_kind == "image":
            frame = np.ascontiguousarray(np.asarray(obs[self.camera], dtype=np.uint8).transpose(2, 0, 1))
            if not self.frames:
                self.frames.extend([frame] * self.frame_stack)  # repeat the first frame, as the dataset does
            else:
                self.frames.append(frame)
            return torch.from_numpy(np.concatenate(list(self.frames), axis=0)[None])
        parts = [obs["q"], obs["dq"]]
        if self.obs_kind == "proprio+object":
            parts += [obs["cube_pos"], obs["cube_quat"]]
        return torch.from_numpy(np.concatenate(parts).astype(np.float32)[None])

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        x = self.observation(obs).to(self.algo.device)
        with torch.no_grad():
            a = self.algo.act(x)
        a = np.clip(a.detach().cpu().numpy()[0].astype(np.float64), -1.0, 1.0)
        return a * self.action_limit


def _task_distance(task, states: dict[str, np.ndarray]) -> np.ndarray | None:
    for name in ("distance", "distance_to_region"):
        fn = getattr(task, name, None)
        if fn is not None:
            return np.asarray(fn(states))
    push = getattr(task, "push", None)
    return None if push is None else np.asarray(push.distance_to_region(states))


def run_episode(env, policy: Policy, home: np.ndarray, frames: list | None = None, video_camera: str | None = None):
    """One episode from ``home``; returns per-episode measures (module docstring)."""
    env.home = home
    obs, info = env.reset()
    policy.reset()
    states = collections.defaultdict(list)

    def keep(o: dict[str, Any]) -> None:
        for key in ("tip_pos", "cube_pos", "cube_quat", "cube_top_face"):
            if key in o:
                states[key].append(np.asarray(o[key]))
        if frames is not None and video_camera is not None:
            frames.append(o[video_camera])

    keep(obs)
    total, successes, events, truncated, steps = 0.0, [bool(info["success"])], 0, False, 0
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))
        keep(obs)
        total += reward
        successes.append(bool(info["success"]))
        events += len(info["safety_events"])
        steps += 1
        if terminated:
            break
    stacked = {k: np.stack(v) for k, v in states.items()}
    out = {
        "return": float(total),
        "success": bool(any(successes)),
        "final_success": successes[-1],
        "steps": steps,
        "safety_events": events,
    }
    dist = _task_distance(env.task, stacked)
    if dist is not None:
        out["final_distance_m"] = float(dist[-1])
        out["closest_distance_m"] = float(dist.min())
    return out


def perturbed_home(env_spec: dict[str, Any], noise_rad: float, rng: np.random.Generator) -> np.ndarray:
    from safety.limits import SafetyLimits

    home = np.asarray(env_spec["home_q"], dtype=np.float64)
    if noise_rad <= 0:
        return home
    limits = SafetyLimits(**env_spec.get("safety", {}))
    return np.clip(home + rng.uniform(-noise_rad, noise_rad, size=home.shape), limits.q_lower, limits.q_upper)


def aggregate(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean (and spread) of the per-episode measures."""
    out: dict[str, Any] = {"episodes": len(episodes)}
    out["success_rate"] = float(np.mean([e["success"] for e in episodes]))
    out["final_success_rate"] = float(np.mean([e["final_success"] for e in episodes]))
    returns = np.array([e["return"] for e in episodes])
    out["return_mean"], out["return_std"] = float(returns.mean()), float(returns.std())
    out["safety_events_mean"] = float(np.mean([e["safety_events"] for e in episodes]))
    if "closest_distance_m" in episodes[0]:
        closest = np.array([e["closest_distance_m"] for e in episodes])
        final = np.array([e["final_distance_m"] for e in episodes])
        out["closest_distance_mean_m"] = float(closest.mean())
        out["closest_distance_min_m"] = float(closest.min())
        out["final_distance_mean_m"] = float(final.mean())
    return out


def evaluate(
    env,
    policy: Policy,
    env_spec: dict[str, Any],
    episodes: int,
    *,
    home_noise_rad: float = 0.05,
    seed: int = 0,
    video_path: str | Path | None = None,
    video_camera: str | None = None,
    on_episode: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Score ``policy`` over ``episodes`` episodes; the first is recorded to ``video_path`` if given.
    ``on_episode(i, episodes, result)`` is called after episode i (1-based), for progress.

    Uses its own random generator (seeded by ``seed``): the trainer's RNG streams are untouched."""
    rng = np.random.default_rng(seed)
    results = []
    for i in range(episodes):
        frames = [] if (video_path is not None and i == 0) else None
        home = perturbed_home(env_spec, home_noise_rad, rng)
        results.append(run_episode(env, policy, home, frames, video_camera))
        if frames:
            write_video(video_path, frames, fps=float(env_spec.get("control_rate_hz", 20.0)))
        if on_episode is not None:
            on_episode(i + 1, episodes, results[-1])
    out = aggregate(results)
    out["per_episode"] = results
    return out


def write_video(path: str | Path, frames: list[np.ndarray], fps: float = 20.0) -> Path:
    """An H.264 mp4 of RGB frames (`store.video.write_mp4`), small frames enlarged to at least
    240 pixels high."""
    from store.video import write_mp4

    return write_mp4(path, frames, fps, min_height=240)


def is_better(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
    """Is evaluation a better than b (success rate, then closest distance, then return)?"""
    if b is None:
        return True
    key = lambda e: (e["success_rate"], -e.get("closest_distance_mean_m", 0.0), e["return_mean"])  # noqa: E731
    return key(a) > key(b)


def policy_from_checkpoint(ckpt: dict[str, Any], device: torch.device):
    """The policy of a checkpoint (`load_checkpoint`), on ``device``."""
    algo = build_algorithm(
        ckpt["algo"], ckpt["algo_config"], obs_spec_from_checkpoint(ckpt), ckpt["action_dim"], device
    )
    algo.load_state_dict(ckpt["algorithm"])
    return Policy(algo, ckpt["obs"], np.asarray(ckpt["action_limit"]), ckpt["camera"], ckpt["frame_stack"])


def evaluate_checkpoint(
    path: str | Path,
    *,
    episodes: int = 10,
    steps: int | None = None,
    video: str | Path | None = None,
    device: str = "auto",
    expect_algo: str | None = None,
    expect_obs: str | None = None,
    backend: str | None = None,
    seed: int = 0,
    home_noise_rad: float | None = None,
    on_episode=None,
    say=None,
) -> dict[str, Any]:
    """Score a checkpoint on the robot its data came from (the env spec saved in the checkpoint).
    ``on_episode(i, n, episode)`` is called after each episode, ``say(text)`` at each stage."""
    say = say or (lambda text: None)
    ckpt = load_checkpoint(path)
    for what, want, have in (("algorithm", expect_algo, ckpt["algo"]), ("observation kind", expect_obs, ckpt["obs"])):
        if want is not None and want != have:
            raise TrainError(f"checkpoint {ckpt['path']} is a {have} {what} checkpoint, not {want}")
    dev = resolve_device(device)
    policy = policy_from_checkpoint(ckpt, dev)
    env_spec = ckpt["env_spec"]
    config = ckpt["config"]
    extra, video_camera = (), None
    if video is not None:
        names = [c["name"] for c in env_spec.get("cameras", [])]
        if names:
            video_camera = names[0]
        else:
            extra, video_camera = (VIDEO_CAMERA,), VIDEO_CAMERA["name"]
    episode_steps = steps or ckpt["eval_steps"]
    backend = backend or config.get("eval_backend") or simulator_for(env_spec)
    say(
        f"evaluating {ckpt['path']} ({ckpt['algo']}, {ckpt['obs']}, {ckpt['task']}, update {ckpt['step']}) "
        f"in {backend} on {dev}: {episodes} episodes x {episode_steps} steps"
        + (f", video of the first to {video}" if video is not None else "")
    )
    env = make_env(
        env_spec,
        ckpt["task"],
        episode_steps,
        backend=backend,
        seed=seed,
        extra_cameras=extra,
    )
    try:
        result = evaluate(
            env,
            policy,
            env_spec,
            episodes,
            home_noise_rad=config.get("eval_home_noise_rad", 0.05) if home_noise_rad is None else home_noise_rad,
            seed=seed,
            video_path=video,
            video_camera=video_camera,
            on_episode=on_episode,
        )
    finally:
        env.close()
    result = {
        "checkpoint": ckpt["path"],
        "algo": ckpt["algo"],
        "obs": ckpt["obs"],
        "task": ckpt["task"],
        "step": ckpt["step"],
        **result,
    }
    if video is not None:
        result["video"] = str(video)
    return result
