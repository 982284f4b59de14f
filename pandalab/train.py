"""The glue of `pandalab train` and `pandalab eval`: arguments to a `TrainConfig`, one-line errors,
Ctrl-C text naming the last checkpoint and the command that resumes, per-episode progress of an
evaluation.  The training loop, its checkpoints and evaluation live in `learning`."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from pydantic import ValidationError

from learning.evaluate import evaluate_checkpoint
from learning.progress import summary_text
from learning.train_config import TrainConfig, TrainError
from learning.trainer import Trainer
from pandalab.cli import command_line
from safety.strict_model import validation_problems
from store import atomic_write_text


def config_from_args(args) -> TrainConfig:
    fields = {
        "data": args.data,
        "task": args.task,
        "obs": args.obs,
        "algo": args.algo,
        "updates": args.updates,
        "seed": args.seed,
        "device": args.device,
        "out": args.out,
        "checkpoint_every": args.checkpoint_every,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
        "eval_steps": args.eval_steps,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "upsample_alpha": args.upsample_alpha,
        "reward_scale": args.reward_scale,
        "camera": args.camera,
        "progress": not args.no_progress,
    }
    if args.algo_config:
        fields["algo_config"] = json.loads(args.algo_config)
    return TrainConfig(**{k: v for k, v in fields.items() if v is not None})


def _same_command(args) -> str:
    """The command that was run (re-running it continues from the run's checkpoint), runnable as printed."""
    argv = getattr(args, "argv", None)
    return command_line("pandalab", *argv) if argv else "the same command"


def interrupted_text(config: TrainConfig | None, trainer: Trainer | None, command: str) -> str:
    """One line after Ctrl-C: where the run stopped, its last checkpoint and how to continue."""
    if config is None:
        return "pandalab train: interrupted before it started"
    path = config.run_dir() / "checkpoint.pt"
    if trainer is None:
        where = "interrupted while loading the data"
        saved = "the last checkpoint is " + str(path) if path.is_file() else "no checkpoint yet"
    else:
        where = f"interrupted at update {trainer.step}"
        if trainer.saved_step is not None:
            saved = f"last checkpoint {path} (update {trainer.saved_step})"
        else:
            saved = f"no checkpoint yet (the first comes at update {config.checkpoint_every})"
    again = "resume with" if path.is_file() else "start again with"
    return f"pandalab train: {where}; {saved}; {again}: {command}"


def main_train(args) -> int:
    """`pandalab train`: exit 2 with a clear message on bad data, config or checkpoint; 130 with one
    line (the last checkpoint, the command that resumes) on Ctrl-C."""
    from learning.dataset import DatasetError
    from learning.relabel import PrivilegedStateMissing

    config = trainer = None
    try:
        config = config_from_args(args)
        trainer = Trainer(config, resume=args.resume)
        report = trainer.run()
    except KeyboardInterrupt:
        print(interrupted_text(config, trainer, _same_command(args)), file=sys.stderr)
        return 130
    except ValidationError as error:
        print(f"pandalab train: {'; '.join(validation_problems(error))}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as error:
        print(f"pandalab train: --algo-config is not JSON: {error}", file=sys.stderr)
        return 2
    except (TrainError, DatasetError, PrivilegedStateMissing) as error:
        print(f"pandalab train: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(summary_text(report))
    return 0


def main_eval(args) -> int:
    """`pandalab eval --checkpoint PATH`: score a checkpoint; exit 2 on a bad or mismatched one, 130
    with one line on Ctrl-C. A line per episode on stderr (unless --no-progress)."""
    from learning.dataset import DatasetError

    show = not getattr(args, "no_progress", False)
    done = [0]
    started = time.monotonic()

    def say(text: str) -> None:
        if show:
            print(text, file=sys.stderr, flush=True)

    def on_episode(i: int, n: int, episode: dict[str, Any]) -> None:
        done[0] = i
        distance = (
            f", closest {episode['closest_distance_m']:.3f} m, final {episode['final_distance_m']:.3f} m"
            if "closest_distance_m" in episode
            else ""
        )
        say(
            f"episode {i}/{n}: success {'yes' if episode['success'] else 'no'}, return {episode['return']:.1f}"
            f"{distance} ({time.monotonic() - started:.0f} s)"
        )

    try:
        result = evaluate_checkpoint(
            args.checkpoint,
            episodes=args.episodes,
            steps=args.episode_steps,
            video=args.video,
            device=args.device,
            expect_algo=args.algo,
            expect_obs=args.obs,
            backend=args.backend,
            seed=args.seed,
            on_episode=on_episode,
            say=say,
        )
    except KeyboardInterrupt:
        print(
            f"pandalab eval: interrupted after {done[0]} of {args.episodes} episodes; nothing was written"
            + (f" but {args.video}" if args.video and done[0] else ""),
            file=sys.stderr,
        )
        return 130
    except (TrainError, DatasetError) as error:
        print(f"pandalab eval: {error}", file=sys.stderr)
        return 2
    shown = {k: v for k, v in result.items() if k != "per_episode"}
    print(json.dumps(shown, indent=2))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    return 0
