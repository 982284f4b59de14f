"""The overnight trainer: `pandalab train --data DIR... --task reach:0 --obs proprio --algo td3bc`.

One run lives in one directory (``--out``, default ``runs/<algo>_<task>_<obs>_<seed>``)::

    config.json       the TrainConfig (`learning.train_config`; what `pandalab eval` rebuilds the policy and robot from)
    checkpoint.pt     the latest checkpoint (`learning.checkpoint`), replaced atomically
    metrics.csv       step, tag, value: the same scalars as TensorBoard (`learning.progress.MetricsLog`)
    tb/               TensorBoard event files (``tensorboard --logdir runs``)
    report.json       written at the end: dataset, behaviour score, last and best evaluations

Checkpoints come every ``checkpoint_every`` updates and at the end. Re-running the same command, or
``--resume``, continues from the checkpoint: a killed run loses at most ``checkpoint_every``
updates, and on CPU the resumed run's parameters equal an uninterrupted run's (same seed, same
thread count). A checkpoint of another algorithm, observation kind, task, data or hyper-parameters
is refused.

Evaluation (every ``eval_every`` updates and at the end) runs the policy in simulation on the
robot the data came from (`learning.evaluate`), with the torch RNG forked so that it never changes
the training stream. "Last" is the final evaluation; "best" the best by `learning.evaluate.is_better`.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learning.checkpoint import (
    RunState,
    ctrl_c_held,
    find_resume_checkpoint,
    make_checkpoint,
    restore_checkpoint,
    write_checkpoint,
)
from learning.progress import LoopClock, MetricsLog, Progress, StageLog, eval_text
from learning.train_config import (
    EVAL_STEPS_CAP,
    TrainConfig,
    build_algorithm,
    check_algorithm,
    default_reward_scale,
    learning_defaults,
    resolve_device,
)
from store import atomic_write_text

EVAL_METRICS = ("success_rate", "return_mean", "closest_distance_mean_m", "final_distance_mean_m")
"""The measures of each evaluation logged as ``eval/<name>`` scalars."""


class Trainer:
    """Builds the dataset, the algorithm and (if evaluating) the environment of a `TrainConfig`.
    Given ``dataset`` (the data and task of ``config``, already read: the agents of a stacked run,
    `learning.stacked_trainer`, share one), it samples through a view of it with its own sampler."""

    def __init__(self, config: TrainConfig, resume: bool | str | Path | None = None, dataset=None) -> None:
        self.config = config
        self.run_dir = config.run_dir()
        self.device = resolve_device(config.device)
        check_algorithm(config.algo)
        self.start_ckpt = find_resume_checkpoint(config, resume)  # refused if mismatched, before loading any data
        if self.device.type == "cpu" and (config.threads or config.obs != "image"):
            torch.set_num_threads(config.threads or 1)
        if config.deterministic and self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        self._seed_everything(config.seed)
        self.batch_size = learning_defaults(config)[2]
        if dataset is not None:
            self.dataset = dataset.with_sampler(config.seed)
        else:
            self.dataset = load_dataset(config, self.device)
        self.dataset.scale_rewards(config.reward_scale or default_reward_scale(self.dataset.episode_returns()))
        self.algo = build_algorithm(config.algo, dict(config.algo_config), self.dataset.obs_spec, 7, self.device)
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

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)  # noqa: NPY002
        torch.manual_seed(seed)

    # -- the loop

    def run(self) -> dict[str, Any]:
        config = self.config
        self._start()
        metrics = MetricsLog(self.run_dir, self.step)
        progress = Progress(config.progress, config.updates, self.step)
        if self.step < config.updates:
            progress.message(
                f"training {config.algo} on {self.dataset.num_transitions} transitions, updates {self.step + 1}.."
                f"{config.updates} on {self.device}, batch {self.batch_size} -> {self.run_dir}"
            )
        sums: dict[str, float] = {}
        count = 0
        clock = LoopClock()
        start_step = self.step
        try:
            while self.step < config.updates:
                losses = self.algo.update(self.dataset.sample(self.batch_size))
                self.step += 1
                count += 1
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                last = self.step == config.updates
                info = None
                if self.step % config.log_every == 0 or last:
                    info = self._log_window(metrics, clock.window(), sums, count)
                    sums, count = {}, 0
                progress.update(self.step, clock.training(), info, force=last)
                if config.eval_episodes > 0 and ((config.eval_every and self.step % config.eval_every == 0) or last):
                    self._evaluate_and_log(metrics, clock, progress)
                if self.step % config.checkpoint_every == 0 or last:
                    train_seconds, eval_seconds = clock.segment()
                    self.train_seconds += train_seconds
                    self.eval_seconds += eval_seconds
                    metrics.flush()
                    self.save_checkpoint()
        finally:
            progress.close()
            metrics.close()
            if self._env is not None:
                self._env.close()
                self._env = None
        report = self.report(updates_this_session=self.step - start_step, seconds_this_session=clock.training())
        atomic_write_text(self.run_dir / "report.json", json.dumps(report, indent=2))
        return report

    def _start(self) -> None:
        """Create the run directory; restore the checkpoint we continue from, or write config.json."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.start_ckpt is not None:
            self._restore(self.start_ckpt)
            print(f"resuming {self.run_dir} from update {self.step} ({self.start_ckpt['path']})", file=sys.stderr)
        else:
            atomic_write_text(self.run_dir / "config.json", json.dumps(self.config.model_dump(mode="json"), indent=2))
        for advice in self.algo.run_advice(self.config.updates):
            print(f"warning: {advice}", file=sys.stderr)

    def _log_window(self, metrics: MetricsLog, seconds: float, sums: dict[str, float], count: int) -> str:
        """Log the mean losses and the updates/s of the window that ends now (``seconds`` of
        training); the progress text."""
        for k, v in sums.items():
            metrics.log(self.step, f"train/{k}", v / count)
        metrics.log(self.step, "train/updates_per_s", count / max(seconds, 1e-9))
        info = " ".join(f"{k} {v / count:.3g}" for k, v in list(sums.items())[:3])
        metrics.flush_csv()
        return info

    def _evaluate_and_log(self, metrics: MetricsLog, clock: LoopClock, progress: Progress) -> None:
        def on_episode(i: int, n: int, episode: dict[str, Any]) -> None:
            progress.note(f"evaluating at update {self.step}: episode {i}/{n}")

        started = time.monotonic()
        result = self.evaluate(on_episode)
        spent = time.monotonic() - started
        clock.evaluated(spent)
        for k in EVAL_METRICS:
            if k in result:
                metrics.log(self.step, f"eval/{k}", result[k])
        progress.message(f"evaluation at update {self.step}: {eval_text(result)} ({spent:.1f} s)")

    # -- checkpoints

    def save_checkpoint(self) -> Path:
        with ctrl_c_held():
            path = write_checkpoint(self.run_dir / "checkpoint.pt", self.checkpoint())
            self.saved_step = self.step
        return path

    def checkpoint(self, rng: dict[str, Any] | None = None) -> dict[str, Any]:
        """The run's checkpoint now (`learning.checkpoint.make_checkpoint`)."""
        state = RunState(self.step, self.history, self.best, self.train_seconds, self.eval_seconds)
        return make_checkpoint(self.config, self.algo, self.dataset, self.eval_steps, state, rng)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        state = restore_checkpoint(ckpt, self.algo, self.dataset)
        self.step, self.history, self.best = state.step, state.history, state.best
        self.train_seconds, self.eval_seconds = state.train_seconds, state.eval_seconds
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
        from learning.evaluate import Policy, evaluate, is_better

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
        if is_better(result, self.best):
            self.best = result
        return result

    # -- the report

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


def load_dataset(config: TrainConfig, device: torch.device):
    """The `learning.dataset.OfflineDataset` of a run: its data relabelled for its task, on ``device``,
    sampled with a generator seeded with its seed; rewards not yet scaled."""
    from learning.dataset import OfflineDataset

    n_step, gamma, _ = learning_defaults(config)
    return OfflineDataset(
        config.data,
        config.task,
        config.obs,
        n_step=n_step,
        gamma=gamma,
        camera=config.camera,
        frame_stack=config.frame_stack,
        upsample_alpha=config.upsample_alpha,
        terminal_on_success=config.terminal_on_success,
        device=device,
        image_cache=config.image_cache,
        cache_dir=config.cache_dir,
        seed=config.seed,
        progress=StageLog(config.progress),
    )


def train(config: TrainConfig, resume: bool | str | Path | None = None) -> dict[str, Any]:
    """Train (or continue) the run of ``config``; returns the report (also in report.json)."""
    return Trainer(config, resume).run()
