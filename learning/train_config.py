"""What defines a training run (`TrainConfig`, saved as config.json in the run directory) and what
its names and defaults resolve to: the device, the algorithm, n-step, discount, batch size and
reward scale."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import AliasChoices, ConfigDict, Field, ValidationError

from safety.strict_model import StrictModel, validation_problems

DEFAULT_N_STEP = {"drqbc": 3}
"""n-step returns when neither the config nor the algorithm's config says (DrQ+BC: 3; others 1)."""
EVAL_STEPS_CAP = 200
"""Default evaluation length: the session's episode_steps, at most this (seed 003's 200 steps;
001's 1000-step episodes would make every evaluation five times slower for little information)."""


class TrainError(ValueError):
    """A run that cannot start or continue (the message says why)."""


class TrainConfig(StrictModel):
    """Everything that defines a training run (saved as config.json in the run directory)."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)

    data: list[str] = Field(..., min_length=1, description="Session directories or data roots holding them.")
    task: str = Field("reach:0", description="Task to relabel the data for and evaluate (sim.tasks.make_task).")
    obs: Literal["proprio", "proprio+object", "image"] = Field(
        "proprio", description="Observation: proprio (q, dq), proprio+object (+ cube pose, sim), image."
    )
    algo: str = Field("td3bc", description="Algorithm: td3bc, bcq, drqbc, iql, cql or bc.")
    algo_config: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the algorithm's config fields (e.g. hidden sizes)."
    )
    updates: int = Field(
        100_000,
        gt=0,
        validation_alias=AliasChoices("updates", "steps"),
        description="Gradient updates in total (a resumed run continues to this). `steps` is its old name.",
    )
    batch_size: int | None = Field(
        None, gt=0, description="Batch size; default the algorithm config's batch_size (TD3+BC 256, BCQ 100)."
    )
    n_step: int | None = Field(
        None, gt=0, description="n-step returns; default the algorithm config's n_step, else 3 for drqbc, 1 otherwise."
    )
    gamma: float | None = Field(
        None, gt=0, le=1, description="Discount of the n-step returns; default the algorithm config's, else 0.99."
    )
    seed: int = Field(0, ge=0, description="Seed of torch, numpy, python and the sampler.")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    threads: int | None = Field(
        None,
        gt=0,
        description="torch CPU threads; default 1 for vector observations (small MLPs gain nothing from more, "
        "and lose badly when the cores are shared) and torch's default for images. Results on CPU are "
        "reproducible for a fixed count.",
    )
    deterministic: bool = Field(True, description="torch.use_deterministic_algorithms on CPU.")
    out: str | None = Field(None, description="Run directory; default runs/<algo>_<task>_<obs>_<seed>.")
    checkpoint_every: int = Field(5000, gt=0, description="Updates between checkpoints (the most a kill loses).")
    eval_every: int = Field(10_000, ge=0, description="Updates between evaluations; 0: only at the end.")
    eval_episodes: int = Field(5, ge=0, description="Episodes per evaluation; 0 disables evaluation.")
    eval_steps: int | None = Field(
        None,
        gt=0,
        description=f"Steps per evaluation episode; default the session's episode_steps, at most {EVAL_STEPS_CAP}.",
    )
    eval_backend: str | None = Field(
        None, description="Simulator to evaluate in; default the data's backend (robosuite for hardware data)."
    )
    eval_home_noise_rad: float = Field(
        0.05, ge=0, description="Uniform perturbation of the home pose per joint at each evaluation episode, rad."
    )
    camera: str | None = Field(None, description="Camera of image observations; default the session's first.")
    frame_stack: int = Field(3, gt=0, description="Frames per image observation (DrQ: 3).")
    image_cache: Literal["auto", "memory", "memmap"] = Field(
        "auto", description="Keep frames in memory, in a memory-mapped cache, or choose by size."
    )
    cache_dir: str | None = Field(
        None, description="Where the memory-mapped frame cache goes; default <data root>/.pandalab-cache."
    )
    upsample_alpha: float = Field(
        0.0, ge=0, lt=1, description="Share of each batch drawn from successful transitions (seed 002 sec. 4.2)."
    )
    terminal_on_success: bool = Field(False, description="Treat task success as terminal (default: no terminals).")
    reward_scale: float | None = Field(
        None,
        gt=0,
        description="Factor on the rewards learned from. Default (None): 1000 / (max - min episode return), the "
        "normalisation IQL and CORL use on D4RL, so critics see returns in the hundreds whatever the task's units. "
        "Needed by TD3+BC: with reach's -distance rewards (~-0.3 m per step) Q stays near its initial ~0, "
        "lambda = alpha / mean|Q| blows up, and the critic drifts to positive values (measured on the demo data: "
        "mean Q from -2.4 to +1.3 within 10K updates at scale 1; steadily negative and lambda ~0.005 at 100).",
    )
    log_every: int = Field(100, gt=0, description="Updates between logged scalars (means over the window).")
    progress: bool = Field(
        True, description="Progress on stderr: data loading, the first updates, a live line, evaluations."
    )

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        slug = "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", s) for s in (self.algo, self.task, self.obs, str(self.seed)))
        return Path("runs") / slug


# ---------------------------------------------------------------------------------- what the names resolve to


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name!r} requested but CUDA is not available")
    return device


def check_algorithm(name: str) -> None:
    """`TrainError` unless ``name`` is a known algorithm."""
    from learning.algorithms import ALGORITHMS

    if name not in ALGORITHMS:
        raise TrainError(f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}")


def build_algorithm(name: str, algo_config: dict[str, Any], obs_spec, action_dim: int, device):
    from learning.algorithms import make_algorithm

    check_algorithm(name)
    try:
        return make_algorithm(name, dict(algo_config), obs_spec, action_dim, device)
    except ValidationError as error:
        raise TrainError(f"algo_config for {name}: {'; '.join(validation_problems(error))}") from None
    except ValueError as error:
        raise TrainError(f"algo_config for {name}: {error}") from None


def _algo_default(name: str, field: str, algo_config: dict[str, Any]):
    """A field of the algorithm's config (with overrides applied), or None if it has none."""
    from learning.algorithms import ALGORITHMS

    cls = ALGORITHMS[name]
    if field in algo_config:
        return algo_config[field]
    config_class = getattr(cls, "config_class", None)
    if config_class is not None and field in config_class.model_fields:
        return config_class.model_fields[field].default
    return None


def learning_defaults(config: TrainConfig) -> tuple[int, float, Any]:
    """n-step, discount and batch size of a run: the config's, else the algorithm config's, else
    `DEFAULT_N_STEP` (1), 0.99 and 256."""
    n_step = config.n_step or _algo_default(config.algo, "n_step", config.algo_config)
    n_step = n_step or DEFAULT_N_STEP.get(config.algo, 1)
    gamma = config.gamma or _algo_default(config.algo, "gamma", config.algo_config) or 0.99
    batch_size = config.batch_size or _algo_default(config.algo, "batch_size", config.algo_config) or 256
    return int(n_step), float(gamma), batch_size


def default_reward_scale(returns: np.ndarray) -> float:
    """IQL's / CORL's D4RL reward normalisation: 1000 / (max - min episode return); 1 when the
    returns do not spread (a single episode, or a constant reward)."""
    spread = float(np.max(returns) - np.min(returns)) if len(returns) else 0.0
    return 1000.0 / spread if spread > 1e-6 else 1.0
