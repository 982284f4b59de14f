"""`make demo` / `pandalab demo`: the whole story on the embedded default, in minutes on a laptop CPU.

1. collect a small task-agnostic dataset in simulation by running the real collector daemon:
   ``pandalab collect --config configs/demo.yaml`` as a subprocess (PyBullet, no camera, uniformly
   random tool-tip displacements, 200-step episodes, 12000 steps);
2. relabel it for reach:0 and train TD3+BC and BC from proprioception (``DEMO_UPDATES`` updates
   each, evaluated in the same simulator);
3. print a table of both against the behaviour data's own closest distance to goal 0 (the minimum
   over every logged tool-tip position, and the mean over episodes of each episode's closest), with
   the paths of the data, the curves and the checkpoints, and the time it all took.

Every command it prints runs as printed from where it was started (`pandalab.cli.runnable`:
``.venv/bin/pandalab`` in the repository root unless the venv is on PATH). Ctrl-C ends it with one
line (exit 130): the collector is passed the Ctrl-C and finishes its episode first.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

DEMO_UPDATES = {"td3bc": 10_000, "bc": 10_000}
"""Gradient updates per algorithm (both with the published network sizes and batch 256)."""
DEMO_ALGOS = ("td3bc", "iql", "cql", "bcq", "bc")
"""What ``--algos`` may name (proprio learners); the default is `DEMO_UPDATES`'s two, about three minutes."""
DEMO_EVAL_EPISODES = 10
DEMO_TASK = "reach:0"


def _sessions(root: Path) -> set[Path]:
    if not root.is_dir():
        return set()
    return {p for p in root.iterdir() if (p / "manifest.jsonl").exists()}


class DemoInterrupted(Exception):
    """Ctrl-C during the demo; the message says during what."""


def _wait_for_collector(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """After Ctrl-C: pass it on to the collector (its own process group, so that it gets each Ctrl-C
    exactly once), which finishes its episode and exits; a further Ctrl-C is passed on as well (the
    collector then stops the arm at once). Killed if it has not exited after ``timeout_s``."""
    process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            continue  # the loop's condition decides: exited, or past the deadline
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
    if process.poll() is None:
        process.kill()
        process.wait()


def collect(config_path: Path) -> Path:
    """Run the collector daemon on ``config_path``; return the session directory it recorded."""
    from pandalab.cli import command_line

    data = yaml.safe_load(config_path.read_text())
    root = Path(data.get("data_root", "data"))
    before = _sessions(root)
    cmd = [sys.executable, "-m", "pandalab", "collect", "--config", str(config_path)]
    print(f"$ {command_line('pandalab', 'collect', '--config', config_path)}", flush=True)
    process = subprocess.Popen(cmd, process_group=0)  # Ctrl-C reaches it through `_wait_for_collector` only
    try:
        code = process.wait()
    except KeyboardInterrupt:
        _wait_for_collector(process)
        raise DemoInterrupted(
            f"while collecting (the collector finished its episode and exited {process.returncode})"
        ) from None
    if code != 0:
        raise SystemExit(f"pandalab collect failed with exit code {code}")
    new = sorted(_sessions(root) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        sid = data.get("session_id")
        if sid and (root / sid).is_dir():
            return root / sid
        raise SystemExit(f"the collector recorded no session under {root}")
    return new[-1]


def _row(name: str, success: Any, closest: Any, closest_min: Any, final: Any, ret: Any) -> str:
    def f(v, spec):
        return "-" if v is None else format(v, spec)

    return (
        f"{name:<26}{f(success, '.2f'):>9}{f(closest, '.3f'):>13}{f(closest_min, '.3f'):>12}"
        f"{f(final, '.3f'):>10}{f(ret, '.1f'):>10}"
    )


def table(reports: dict[str, dict[str, Any]], behaviour: dict[str, Any]) -> str:
    lines = [
        f"{'reach:0 (goal 0)':<26}{'success':>9}{'closest m':>13}{'best ep. m':>12}{'final m':>10}{'return':>10}",
        _row(
            "behaviour data (random)",
            behaviour["success_rate"],
            behaviour["episode_closest_distance_mean_m"],
            behaviour["closest_distance_m"],
            behaviour["final_distance_mean_m"],
            behaviour["episode_return_mean"],
        ),
    ]
    for algo, rep in reports.items():
        e = rep["last"]
        lines.append(
            _row(
                f"{algo} ({rep['updates']} updates)",
                e["success_rate"],
                e["closest_distance_mean_m"],
                e["closest_distance_min_m"],
                e["final_distance_mean_m"],
                e["return_mean"],
            )
        )
    lines.append(
        "closest m: mean over episodes of each episode's closest tool-tip distance to goal 0 (seed 001 Table 1); "
        "best ep. m: the closest of all (behaviour: over every logged state)"
    )
    return "\n".join(lines)


def run_demo(
    config_path: str | Path = "configs/demo.yaml",
    out: str | Path = "out/demo",
    updates: dict[str, int] | None = None,
    eval_episodes: int = DEMO_EVAL_EPISODES,
) -> dict[str, Any]:
    from learning.train_config import TrainConfig
    from learning.trainer import Trainer
    from pandalab.cli import command_line

    started = time.monotonic()
    out = Path(out)
    updates = updates or DEMO_UPDATES
    session = collect(Path(config_path))
    collected = time.monotonic()
    reports: dict[str, dict[str, Any]] = {}
    stamp = session.name
    for algo, n in updates.items():
        run_dir = out / "runs" / f"{algo}_{stamp}"
        eval_every = max(1, n // 2)
        algo_config = {"max_steps": n} if algo == "iql" else {}  # IQL's cosine schedule spans the run
        args = ["train", "--data", session, "--task", DEMO_TASK, "--obs", "proprio", "--algo", algo]
        args += ["--updates", n, "--eval-every", eval_every, "--eval-episodes", eval_episodes]
        if algo_config:
            args += ["--algo-config", json.dumps(algo_config)]
        args += ["--checkpoint-every", max(1, n // 4), "--out", run_dir]
        print(f"$ {command_line('pandalab', *args)}", flush=True)
        config = TrainConfig(
            data=[str(session)],
            task=DEMO_TASK,
            obs="proprio",
            algo=algo,
            algo_config=algo_config,
            updates=n,
            eval_every=eval_every,
            eval_episodes=eval_episodes,
            checkpoint_every=max(1, n // 4),
            out=str(run_dir),
        )
        trainer = None
        try:
            trainer = Trainer(config)
            reports[algo] = trainer.run()
        except KeyboardInterrupt:
            at = f" at update {trainer.step}" if trainer is not None else ""
            raise DemoInterrupted(f"while training {algo}{at} (run {run_dir})") from None
        report = reports[algo]
        print(
            f"  {algo}: {report['train_seconds']:.0f} s training, {report['eval_seconds']:.0f} s evaluating",
            flush=True,
        )
    total = time.monotonic() - started
    behaviour = next(iter(reports.values()))["behaviour"]
    summary = {
        "session": str(session),
        "runs": {a: r["run_dir"] for a, r in reports.items()},
        "checkpoints": {a: r["checkpoint"] for a, r in reports.items()},
        "behaviour": behaviour,
        "results": {a: r["last"] for a, r in reports.items()},
        "seconds": {"collect": collected - started, "total": total},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_report.json").write_text(json.dumps(summary, indent=2))
    print()
    print(table(reports, behaviour))
    print()
    print(f"data         {session}  ({behaviour['episodes']} episodes, {behaviour['transitions']} transitions)")
    print(f"curves       {command_line('tensorboard', '--logdir', out / 'runs')}   (and metrics.csv in each run)")
    for algo, rep in reports.items():
        evaluate = command_line("pandalab", "eval", "--checkpoint", rep["checkpoint"], "--video", f"{algo}.mp4")
        print(f"checkpoint   {rep['checkpoint']}   ({evaluate})")
    print(f"report       {out / 'demo_report.json'}")
    print(f"time         {total:.0f} s in all ({collected - started:.0f} s collecting)")
    return summary


def main_demo(args) -> int:
    """`pandalab demo`: 0 when done; 130 with one line on Ctrl-C."""
    algos = list(DEMO_UPDATES)
    if args.algos:
        algos = [a.strip() for a in args.algos.split(",") if a.strip()]
        unknown = [a for a in algos if a not in DEMO_ALGOS]
        if unknown or not algos or len(set(algos)) != len(algos):
            print(
                f"pandalab demo: --algos takes distinct names of {', '.join(DEMO_ALGOS)}; got {args.algos!r}",
                file=sys.stderr,
            )
            return 2
    n = args.updates or next(iter(DEMO_UPDATES.values()))
    updates = {algo: n for algo in algos}
    try:
        run_demo(args.config, args.out, updates, args.eval_episodes or DEMO_EVAL_EPISODES)
    except (KeyboardInterrupt, DemoInterrupted) as interrupted:
        during = f" {interrupted}" if isinstance(interrupted, DemoInterrupted) else ""
        print(f"pandalab demo: interrupted{during}; run it again to start over", file=sys.stderr)
        return 130
    return 0
