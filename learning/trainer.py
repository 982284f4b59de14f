"""The overnight trainer: `pandalab train --data DIR... --task reach:0 --obs proprio --algo td3bc`.

One run lives in one directory (``--out``, default ``runs/<algo>_<task>_<obs>_<seed>``)::

    config.json       the TrainConfig (what `pandalab eval` rebuilds the policy and robot from)
    checkpoint.pt     the latest checkpoint, replaced atomically (temp file, fsync, rename)
    metrics.csv       step, tag, value: the same scalars as TensorBoard
    tb/               TensorBoard event files (``tensorboard --logdir runs``)
    report.json       written at the end: dataset, behaviour score, last and best evaluations

Checkpoints (every ``checkpoint_every`` updates and at the end) hold the algorithm's state
(networks, target networks, optimisers, counters, the normalisation statistics of its
`ObservationSpec`), the step counter, every RNG state (torch, CUDA, numpy, python, the dataset
sampler's generator) and the evaluation history. Re-running the same command, or ``--resume``,
continues from the checkpoint: a killed run loses at most ``checkpoint_every`` updates, and on CPU
the resumed run's parameters equal an uninterrupted run's (same seed, same thread count).
A checkpoint of another algorithm, observation kind, task, data or hyper-parameters is refused.

Evaluation (every ``eval_every`` updates and at the end) runs the policy in simulation on the
robot the data came from (`learning.evaluate`), with the torch RNG forked so that it never changes
the training stream. "Last" is the final evaluation; "best" the evaluation with the highest success
rate, then the smallest mean closest distance, then the highest return.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import AliasChoices, ConfigDict, Field, ValidationError

from safety.strict_model import StrictModel, validation_problems
from store import atomic_write_bytes, atomic_write_text

CHECKPOINT_FORMAT = "pandalab-train-checkpoint"
CHECKPOINT_VERSION = 1
IDENTITY_FIELDS = (
    "algo",
    "obs",
    "task",
    "data",
    "algo_config",
    "batch_size",
    "n_step",
    "gamma",
    "seed",
    "camera",
    "frame_stack",
    "upsample_alpha",
    "terminal_on_success",
)
"""Fields a resumed run must share with its checkpoint (anything else, e.g. ``updates``, may change)."""
DEFAULT_N_STEP = {"drqbc": 3}
"""n-step returns when neither the config nor the algorithm's config says (DrQ+BC: 3; others 1)."""
EVAL_STEPS_CAP = 200
"""Default evaluation length: the session's episode_steps, at most this (seed 003's 200 steps;
001's 1000-step episodes would make every evaluation five times slower for little information)."""


class TrainError(ValueError):
    """A run that cannot start or continue (the message says why)."""


def default_reward_scale(returns: np.ndarray) -> float:
    """IQL's / CORL's D4RL reward normalisation: 1000 / (max - min episode return); 1 when the
    returns do not spread (a single episode, or a constant reward)."""
    spread = float(np.max(returns) - np.min(returns)) if len(returns) else 0.0
    return 1000.0 / spread if spread > 1e-6 else 1.0


class TrainConfig(StrictModel):
    """Everything that defines a training run (saved as config.json in the run directory)."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)

    data: list[str] = Field(..., min_length=1, description="Session directories or data roots holding them.")
    task: str = Field("reach:0", description="Task to relabel the data for and evaluate (sim.tasks.make_task).")
    obs: Literal["proprio", "proprio+object", "image"] = Field(
        "proprio", description="Observation: proprio (q, dq), proprio+object (+ cube pose, sim), image."
    )
    algo: str = Field("td3bc", description="Algorithm: td3bc, bcq, drqbc or bc.")
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


# ---------------------------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"device {name!r} requested but CUDA is not available")
    return device


def _identity(config: TrainConfig) -> dict[str, Any]:
    d = config.model_dump(mode="json")
    ident = {k: d[k] for k in IDENTITY_FIELDS}
    ident["data"] = [str(Path(p).resolve()) for p in d["data"]]
    return ident


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file (or the checkpoint.pt of a run directory); `TrainError` if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise TrainError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise TrainError(f"{path} is not a readable checkpoint: {error}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not a pandalab training checkpoint")
    ckpt["path"] = str(path)
    return ckpt


def check_checkpoint_matches(ckpt: dict[str, Any], config: TrainConfig) -> None:
    """Refuse a checkpoint of another algorithm, observation, task, data or hyper-parameters."""
    saved = ckpt["identity"]
    ours = _identity(config)
    for key in IDENTITY_FIELDS:
        if saved.get(key) != ours.get(key):
            raise TrainError(
                f"checkpoint {ckpt['path']} was trained with {key}={saved.get(key)!r}, not {ours.get(key)!r}: "
                "it cannot continue this run (choose another --out, or the same settings)"
            )


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002 (the global stream other code may draw from)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_algorithm(name: str, algo_config: dict[str, Any], obs_spec, action_dim: int, device):
    from learning.algorithms import ALGORITHMS, make_algorithm

    if name not in ALGORITHMS:
        raise TrainError(f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}")
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


class _StageLog:
    """Progress of set-up work (reading, checking and caching data) as plain lines on stderr: the
    first call of a stage, then at most one line every ``every_s`` seconds, and its end."""

    def __init__(self, enabled: bool, every_s: float = 5.0) -> None:
        self.enabled, self.every_s = enabled, every_s
        self.t0 = time.monotonic()
        self.stage: str | None = None
        self.last_print = 0.0

    def __call__(self, stage: str, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if stage != self.stage or finished or now - self.last_print >= self.every_s:
            count = f"{done}/{total}" if total is not None and done <= total else f"{done}"
            print(f"data: {stage}: {count} ({now - self.t0:.0f} s)", file=sys.stderr, flush=True)
            self.stage, self.last_print = stage, now


class _Progress:
    """Training progress on stderr: a rich bar (updates/s, ETA, losses) on a terminal; otherwise a
    line at the first update and then every ``every_s`` seconds. Updates/s count training time
    only (evaluations excluded). Messages (evaluations) go above the bar, or as lines."""

    def __init__(self, enabled: bool, total: int, start: int, every_s: float = 10.0) -> None:
        self.enabled, self.total, self.start, self.every_s = enabled, total, start, every_s
        self.last_print = 0.0
        self.last_refresh = 0.0
        self.info = ""
        self.rich = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.rich = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:.1f} upd/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.rich.add_task("train", total=total, completed=start, rate=0.0, info="")
            self.rich.start()

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.rich is not None:
            self.rich.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def update(self, step: int, train_seconds: float, info: str | None = None, force: bool = False) -> None:
        """Called after every update: ``train_seconds`` is this session's training time so far."""
        if not self.enabled:
            return
        if info is not None:
            self.info = info
        now = time.monotonic()
        first = step == self.start + 1
        if not (force or first or now - self.last_refresh >= 0.25):
            return
        self.last_refresh = now
        rate = (step - self.start) / max(train_seconds, 1e-9)
        if self.rich is not None:
            self.rich.update(self.task, completed=step, rate=rate, info=self.info)
        elif force or first or now - self.last_print >= self.every_s:
            eta = _duration((self.total - step) / rate) if rate > 0 else "-"
            print(
                f"update {step}/{self.total} | {_rate(rate)} upd/s | ETA {eta} | {self.info}".rstrip(" |"),
                file=sys.stderr,
                flush=True,
            )
            self.last_print = now

    def note(self, text: str) -> None:
        """A passing state (an evaluation's episode): the bar's text, or a line every ``every_s``."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self.rich is not None:
            self.rich.update(self.task, info=text)
        elif now - self.last_print >= self.every_s:
            print(text, file=sys.stderr, flush=True)
            self.last_print = now

    def close(self) -> None:
        if self.rich is not None:
            self.rich.stop()


def _duration(seconds: float) -> str:
    """A duration for people: 42 s, 7 min 05 s, 3 h 12 min."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"


def _eval_text(result: dict[str, Any]) -> str:
    """One evaluation in a few words: success rate, return, closest and final distance."""
    text = f"success {result['success_rate']:.2f}, return {result['return_mean']:.1f}"
    if "closest_distance_mean_m" in result:
        text += f", closest {result['closest_distance_mean_m']:.3f} m, final {result['final_distance_mean_m']:.3f} m"
    return text


def _better(a: dict[str, Any], b: dict[str, Any] | None) -> bool:
    """Is evaluation a better than b (success rate, then closest distance, then return)?"""
    if b is None:
        return True
    key = lambda e: (e["success_rate"], -e.get("closest_distance_mean_m", 0.0), e["return_mean"])  # noqa: E731
    return key(a) > key(b)


# ---------------------------------------------------------------------------------- the trainer


class Trainer:
    """Builds the dataset, the algorithm and (if evaluating) the environment of a `TrainConfig`."""

    def __init__(self, config: TrainConfig, resume: bool | str | Path | None = None) -> None:
        from learning.dataset import OfflineDataset

        self.config = config
        self.run_dir = config.run_dir()
        self.device = resolve_device(config.device)
        self._ensure_algorithm_known()
        self.start_ckpt = self._find_resume(resume)  # refuses a mismatched checkpoint before loading any data
        if self.device.type == "cpu" and (config.threads or config.obs != "image"):
            torch.set_num_threads(config.threads or 1)
        if config.deterministic and self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        self._seed_everything(config.seed)
        n_step = config.n_step or _algo_default(config.algo, "n_step", config.algo_config)
        n_step = n_step or DEFAULT_N_STEP.get(config.algo, 1)
        gamma = config.gamma or _algo_default(config.algo, "gamma", config.algo_config) or 0.99
        self.batch_size = config.batch_size or _algo_default(config.algo, "batch_size", config.algo_config) or 256
        self.dataset = OfflineDataset(
            config.data,
            config.task,
            config.obs,
            n_step=int(n_step),
            gamma=float(gamma),
            camera=config.camera,
            frame_stack=config.frame_stack,
            upsample_alpha=config.upsample_alpha,
            terminal_on_success=config.terminal_on_success,
            device=self.device,
            image_cache=config.image_cache,
            cache_dir=config.cache_dir,
            seed=config.seed,
            progress=_StageLog(config.progress),
        )
        self.dataset.scale_rewards(config.reward_scale or default_reward_scale(self.dataset.episode_returns()))
        algo_config = dict(config.algo_config)
        self.algo = build_algorithm(config.algo, algo_config, self.dataset.obs_spec, 7, self.device)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.eval_steps = config.eval_steps or min(self.dataset.env_spec["episode_steps"], EVAL_STEPS_CAP)
        self._env = None
        self.train_seconds = 0.0
        """Time spent training (updates, logging, checkpoints) over every session of the run, s."""
        self.eval_seconds = 0.0
        """Time spent evaluating over every session of the run, s."""
        self.saved_step: int | None = None
        """The update of the last checkpoint on disk (None before the first)."""

    # -- setup

    def _ensure_algorithm_known(self) -> None:
        from learning.algorithms import ALGORITHMS

        if self.config.algo not in ALGORITHMS:
            raise TrainError(f"unknown algorithm {self.config.algo!r}; known: {', '.join(sorted(ALGORITHMS))}")

    def _find_resume(self, resume: bool | str | Path | None) -> dict[str, Any] | None:
        own = self.run_dir / "checkpoint.pt"
        if resume not in (None, False, True):
            ckpt = load_checkpoint(resume)
        elif own.is_file():
            ckpt = load_checkpoint(own)  # re-running the same command continues the run
        elif resume is True:
            raise TrainError(f"--resume: no checkpoint in {self.run_dir}")
        else:
            return None
        check_checkpoint_matches(ckpt, self.config)
        return ckpt

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)  # noqa: NPY002
        torch.manual_seed(seed)

    # -- checkpoints

    def checkpoint_dict(self) -> dict[str, Any]:
        spec = self.dataset.obs_spec
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "identity": _identity(self.config),
            "config": self.config.model_dump(mode="json"),
            "algo": self.config.algo,
            "algo_config": self.algo.config.model_dump(mode="json"),
            "obs": self.config.obs,
            "task": self.config.task,
            "obs_spec": {"kind": spec.kind, "shape": list(spec.shape), "mean": spec.mean, "std": spec.std},
            "action_dim": self.algo.action_dim,
            "action_limit": self.dataset.action_limit,
            "camera": self.dataset.camera,
            "frame_stack": self.dataset.frame_stack,
            "env_spec": self.dataset.env_spec,
            "eval_steps": self.eval_steps,
            "step": self.step,
            "algorithm": self.algo.state_dict(),
            "rng": _rng_state(),
            "sampler": self.dataset.sampler_state(),
            "history": self.history,
            "best": self.best,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
        }

    def save_checkpoint(self) -> Path:
        buffer = io.BytesIO()
        torch.save(self.checkpoint_dict(), buffer)
        path = atomic_write_bytes(self.run_dir / "checkpoint.pt", buffer.getvalue())
        self.saved_step = self.step
        return path

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.algo.load_state_dict(ckpt["algorithm"])
        self.step = int(ckpt["step"])
        _set_rng_state(ckpt["rng"])
        self.dataset.load_sampler_state(ckpt["sampler"])
        self.history = list(ckpt.get("history", []))
        self.best = ckpt.get("best")
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        self.eval_seconds = float(ckpt.get("eval_seconds", 0.0))
        self.saved_step = self.step

    # -- evaluation

    def env(self):
        if self._env is None:
            from learning.evaluate import make_env

            self._env = make_env(
                self.dataset.env_spec,
                self.dataset.task,
                self.eval_steps,
                backend=self.config.eval_backend,
                seed=self.config.seed,
            )
        return self._env

    def evaluate(self, on_episode=None) -> dict[str, Any]:
        from learning.evaluate import Policy, evaluate

        policy = Policy(
            self.algo, self.config.obs, self.dataset.action_limit, self.dataset.camera, self.dataset.frame_stack
        )
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            result = evaluate(
                self.env(),
                policy,
                self.dataset.env_spec,
                self.config.eval_episodes,
                home_noise_rad=self.config.eval_home_noise_rad,
                seed=self.config.seed,
                on_episode=on_episode,
            )
        result = {"step": self.step, **{k: v for k, v in result.items() if k != "per_episode"}}
        self.history.append(result)
        if _better(result, self.best):
            self.best = result
        return result

    # -- the loop

    def run(self) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter

        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.start_ckpt is not None:
            self._restore(self.start_ckpt)
            print(f"resuming {self.run_dir} from update {self.step} ({self.start_ckpt['path']})", file=sys.stderr)
        else:
            atomic_write_text(self.run_dir / "config.json", json.dumps(config.model_dump(mode="json"), indent=2))
        for advice in self.algo.run_advice(config.updates):
            print(f"warning: {advice}", file=sys.stderr)
        self._trim_csv(self.step)
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if self.step else None)
        csv_file = open(self.run_dir / "metrics.csv", "a", newline="")
        csv_writer = csv.writer(csv_file)
        if csv_file.tell() == 0:
            csv_writer.writerow(["step", "tag", "value"])

        def log(tag: str, value: float) -> None:
            writer.add_scalar(tag, value, self.step)
            csv_writer.writerow([self.step, tag, f"{value:.9g}"])

        progress = _Progress(config.progress, config.updates, self.step)
        if self.step < config.updates:
            progress.message(
                f"training {config.algo} on {self.dataset.num_transitions} transitions, updates {self.step + 1}.."
                f"{config.updates} on {self.device}, batch {self.batch_size} -> {self.run_dir}"
            )
        sums: dict[str, float] = {}
        count = 0
        eval_on = config.eval_episodes > 0
        loop_started = window_start = segment_start = time.monotonic()
        eval_session = window_eval = segment_eval = 0.0  # evaluation time this session / window / since checkpoint
        start_step = self.step

        def on_episode(i: int, n: int, episode: dict[str, Any]) -> None:
            progress.note(f"evaluating at update {self.step}: episode {i}/{n}")

        try:
            while self.step < config.updates:
                losses = self.algo.update(self.dataset.sample(self.batch_size))
                self.step += 1
                count += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                info = None
                if self.step % config.log_every == 0 or self.step == config.updates:
                    now = time.monotonic()
                    for k, v in sums.items():
                        log(f"train/{k}", v / count)
                    log("train/updates_per_s", count / max(now - window_start - window_eval, 1e-9))
                    info = " ".join(f"{k} {v / count:.3g}" for k, v in list(sums.items())[:3])
                    sums, count, window_start, window_eval = {}, 0, now, 0.0
                    csv_file.flush()  # `tail -f metrics.csv` follows a run (one small write per log_every)
                progress.update(
                    self.step, time.monotonic() - loop_started - eval_session, info, force=self.step == config.updates
                )
                if eval_on and (
                    (config.eval_every and self.step % config.eval_every == 0) or self.step == config.updates
                ):
                    eval_started = time.monotonic()
                    result = self.evaluate(on_episode)
                    spent = time.monotonic() - eval_started
                    eval_session += spent
                    window_eval += spent
                    segment_eval += spent
                    for k in ("success_rate", "return_mean", "closest_distance_mean_m", "final_distance_mean_m"):
                        if k in result:
                            log(f"eval/{k}", result[k])
                    progress.message(f"evaluation at update {self.step}: {_eval_text(result)} ({spent:.1f} s)")
                if self.step % config.checkpoint_every == 0 or self.step == config.updates:
                    now = time.monotonic()
                    self.train_seconds += now - segment_start - segment_eval
                    self.eval_seconds += segment_eval
                    segment_start, segment_eval = now, 0.0
                    csv_file.flush()
                    writer.flush()
                    self.save_checkpoint()
        finally:
            progress.close()
            writer.close()
            csv_file.close()
            if self._env is not None:
                self._env.close()
                self._env = None
        done = self.step - start_step
        train_session = time.monotonic() - loop_started - eval_session
        report = self.report(updates_this_session=done, seconds_this_session=train_session)
        atomic_write_text(self.run_dir / "report.json", json.dumps(report, indent=2))
        return report

    def _trim_csv(self, step: int) -> None:
        """Drop CSV rows logged after the checkpoint we continue from (the updates a kill lost)."""
        path = self.run_dir / "metrics.csv"
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [r for r in rows[1:] if len(r) == 3 and r[0].isdigit() and int(r[0]) <= step]
        if len(kept) != len(rows) - 1:
            text = io.StringIO()
            csv.writer(text).writerows([["step", "tag", "value"], *kept])
            atomic_write_text(path, text.getvalue())

    def report(self, updates_this_session: int = 0, seconds_this_session: float = 0.0) -> dict[str, Any]:
        last = self.history[-1] if self.history else None
        return {
            "run_dir": str(self.run_dir),
            "algo": self.config.algo,
            "task": self.config.task,
            "obs": self.config.obs,
            "seed": self.config.seed,
            "device": str(self.device),
            "updates": self.step,
            "batch_size": self.batch_size,
            "dataset": self.dataset.summary(),
            "behaviour": self.dataset.behaviour_summary(),
            "eval": {
                "backend": self.config.eval_backend or self.dataset.env_spec["backend"],
                "episodes": self.config.eval_episodes,
                "episode_steps": self.eval_steps,
                "home_noise_rad": self.config.eval_home_noise_rad,
            },
            "last": last,
            "best": self.best,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "evaluations": len(self.history),
            "updates_per_s": updates_this_session / seconds_this_session if seconds_this_session > 0 else None,
            "checkpoint": str(self.run_dir / "checkpoint.pt"),
            "tensorboard": str(self.run_dir / "tb"),
            "metrics_csv": str(self.run_dir / "metrics.csv"),
        }


def train(config: TrainConfig, resume: bool | str | Path | None = None) -> dict[str, Any]:
    """Train (or continue) the run of ``config``; returns the report (also in report.json)."""
    return Trainer(config, resume).run()


# ---------------------------------------------------------------------------------- summaries


def _fmt(value: Any, unit: str = "", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _rate(value: float) -> str:
    """Updates per second for people: whole numbers from 10 up, one decimal below, two below 1."""
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def summary_text(report: dict[str, Any]) -> str:
    """A one-screen summary of a report."""
    b = report["behaviour"]
    ds = report["dataset"]
    lines = [
        f"run        {report['run_dir']}  ({report['algo']}, {report['task']}, obs {report['obs']}, "
        f"seed {report['seed']})",
        f"data       {ds['episodes']} episodes, {ds['transitions']} transitions from {len(ds['sessions'])} session(s); "
        f"outcomes {ds['outcomes']}",
        f"training   {report['updates']} updates on {report['device']}, batch {report['batch_size']}: "
        f"{_fmt(report['train_seconds'], ' s', 1)} of training"
        + (f", {_rate(report['updates_per_s'])} upd/s" if report.get("updates_per_s") else ""),
        (
            f"evaluation {report.get('evaluations', 0)} x {report['eval']['episodes']} episodes x "
            f"{report['eval']['episode_steps']} steps in {report['eval']['backend']} (home noise "
            f"{report['eval']['home_noise_rad']} rad): {_fmt(report.get('eval_seconds'), ' s', 1)}"
            if report.get("evaluations") and report["eval"]["episodes"]
            else "evaluation none (--eval-episodes 0)"
        ),
    ]
    header = f"{'':12}{'success':>9}{'return':>10}{'closest m':>11}{'final m':>9}"
    lines.append(header)
    for name, e in (("last", report["last"]), ("best", report["best"])):
        if e is None:
            continue
        lines.append(
            f"{name + ' @' + str(e['step']):12}{_fmt(e['success_rate'], '', 2):>9}{_fmt(e['return_mean'], '', 1):>10}"
            f"{_fmt(e.get('closest_distance_mean_m')):>11}{_fmt(e.get('final_distance_mean_m')):>9}"
        )
    if "closest_distance_m" in b:
        lines.append(
            f"{'behaviour':12}{_fmt(b['success_rate'], '', 2):>9}{_fmt(b['episode_return_mean'], '', 1):>10}"
            f"{_fmt(b['episode_closest_distance_mean_m']):>11}{_fmt(b['final_distance_mean_m']):>9}"
            f"   (closest over the whole dataset {b['closest_distance_m']:.3f} m)"
        )
    lines.append(f"files      {report['checkpoint']}  {report['tensorboard']}  {report['metrics_csv']}")
    return "\n".join(lines)


def policy_from_checkpoint(ckpt: dict[str, Any], device: torch.device):
    from learning.algorithms.base import ObservationSpec
    from learning.evaluate import Policy

    spec = ckpt["obs_spec"]
    obs_spec = ObservationSpec(spec["kind"], tuple(spec["shape"]), spec["mean"], spec["std"])
    algo = build_algorithm(ckpt["algo"], ckpt["algo_config"], obs_spec, ckpt["action_dim"], device)
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
    from learning.evaluate import SIMULATED, VIDEO_CAMERA, evaluate, make_env

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
    backend = (
        backend
        or config.get("eval_backend")
        or (env_spec["backend"] if env_spec["backend"] in SIMULATED else "robosuite")
    )
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
