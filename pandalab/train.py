"""The glue of `pandalab train` and `pandalab eval`: arguments to a `TrainConfig` (or, with
``--seeds`` / ``--tasks``, to the configs of a stack of agents trained in one process,
`learning.stacked_trainer`), one-line errors, Ctrl-C text naming the last checkpoint and the
command that resumes, per-episode progress of an evaluation.  The training loop, its checkpoints
and evaluation live in `learning`."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from pydantic import ValidationError

from learning.evaluate import evaluate_checkpoint
from learning.progress import summary_text
from learning.stacked import MAX_AGENTS
from learning.train_config import TrainConfig, TrainError
from learning.trainer import Trainer
from pandalab.cli import command_line
from safety.strict_model import validation_problems
from store import atomic_write_text


def config_from_args(args) -> TrainConfig:
    if args.task is not None:
        _check_task("--task", args.task)
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


def parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2``: distinct whole numbers; `TrainError` naming the problem."""
    items = [t.strip() for t in text.split(",")]
    if not all(t.isdigit() for t in items):
        raise TrainError(f"--seeds takes whole numbers >= 0 separated by commas, e.g. 0,1,2; not {text!r}")
    return _distinct("--seeds", [int(t) for t in items])


def parse_tasks(text: str) -> list[str]:
    """``--tasks reach:0,reach:1``: distinct known task names; `TrainError` naming the problem."""
    tasks = [t.strip() for t in text.split(",")]
    for task in tasks:
        _check_task("--tasks", task)
    return _distinct("--tasks", tasks)


def _check_task(option: str, task: str) -> None:
    from sim.tasks import make_task

    try:
        make_task(task)
    except ValueError as error:
        raise TrainError(f"{option}: {error}") from None


def _distinct(option: str, values: list) -> list:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise TrainError(f"{option}: {', '.join(repeated)} given twice")
    if len(values) > MAX_AGENTS:
        raise TrainError(f"{option}: {len(values)} given; at most {MAX_AGENTS} agents train stacked in one process")
    return values


def configs_from_args(args) -> list[TrainConfig] | None:
    """The agents' configs of a stacked run (``--seeds`` and/or ``--tasks``), or None for a single run."""
    from learning.stacked_trainer import agent_configs

    seeds, tasks = getattr(args, "seeds", None), getattr(args, "tasks", None)
    if seeds is None and tasks is None:
        return None
    if seeds is not None and args.seed is not None:
        raise TrainError("give --seed or --seeds, not both")
    if tasks is not None and args.task is not None:
        raise TrainError("give --task or --tasks, not both")
    base = config_from_args(args)
    return agent_configs(base, parse_seeds(seeds) if seeds else None, parse_tasks(tasks) if tasks else None)


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


def stacked_interrupted_text(configs: list[TrainConfig] | None, trainer, command: str) -> str:
    """One line after Ctrl-C of a stacked run: where it stopped, its agents' last checkpoints, how to continue."""
    if configs is None:
        return "pandalab train: interrupted before it started"
    dirs = ", ".join(str(c.run_dir()) for c in configs)
    saved_step = getattr(trainer, "saved_step", None)
    if trainer is None or trainer.stack is None:
        where, saved = "interrupted while loading the data", f"run directories {dirs}"
    elif saved_step is not None:
        where, saved = f"interrupted at update {trainer.step}", f"last checkpoints (update {saved_step}) in {dirs}"
    else:
        first = configs[0].checkpoint_every
        where, saved = f"interrupted at update {trainer.step}", f"no checkpoint yet (the first comes at update {first})"
    again = "resume with" if any((c.run_dir() / "checkpoint.pt").is_file() for c in configs) else "start again with"
    return f"pandalab train: {where}; {saved}; {again}: {command}"


def main_train(args) -> int:
    """`pandalab train`: exit 2 with a clear message on bad data, config or checkpoint; 130 with one
    line (the last checkpoint, the command that resumes) on Ctrl-C."""
    from learning.dataset import DatasetError
    from learning.relabel import PrivilegedStateMissing

    config = trainer = configs = None
    try:
        configs = configs_from_args(args)
        if configs is not None:
            return _train_stacked(configs, args)
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


def _train_stacked(configs: list[TrainConfig], args) -> int:
    """`pandalab train --seeds/--tasks`: the agents trained as one stack; a summary per agent."""
    from learning.stacked_trainer import StackedTrainer

    trainer = None
    try:
        trainer = StackedTrainer(configs, resume=args.resume)
        reports = trainer.run()
    except KeyboardInterrupt:
        print(stacked_interrupted_text(configs, trainer, _same_command(args)), file=sys.stderr)
        return 130
    print(stacked_summary_text(reports))
    return 0


def stacked_summary_text(reports: list[dict[str, Any]]) -> str:
    """A stacked run in a few lines: training, then each agent's last evaluation (its report.json
    and `pandalab eval --checkpoint DIR` tell the rest)."""
    first = reports[0]
    rate, total = first.get("updates_per_s"), first["stacked"]["aggregate_updates_per_s"]
    speed = f", {rate:.0f} upd/s per agent, {total:.0f} in all" if rate else ""
    lines = [
        f"stacked    {len(reports)} {first['algo']} agents, {first['updates']} updates each on {first['device']}, "
        f"batch {first['batch_size']}: {first['train_seconds']:.1f} s of training{speed}",
        f"{'run directory':44}{'success':>9}{'return':>10}{'closest m':>11}{'final m':>9}   (last evaluation)",
    ]
    for report in reports:
        last = report["last"] or {}
        cells = [
            _cell(last.get(key), digits, width)
            for key, digits, width in (
                ("success_rate", 2, 9),
                ("return_mean", 1, 10),
                ("closest_distance_mean_m", 3, 11),
                ("final_distance_mean_m", 3, 9),
            )
        ]
        lines.append(f"{report['run_dir']:44}" + "".join(cells))
    lines.append("reports    report.json in each run directory; `pandalab eval --checkpoint DIR` scores one")
    return "\n".join(lines)


def _cell(value: float | None, digits: int, width: int) -> str:
    return f"{'-' if value is None else f'{value:.{digits}f}':>{width}}"


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
