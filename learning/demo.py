"""`make demo` / `pandalab demo`: the whole story on the embedded default, in minutes on a laptop CPU.

1. collect a small dataset in simulation with the default explorer (random linear policies) by
   running the real collector daemon: ``pandalab collect --config configs/demo.yaml`` as a
   subprocess (PyBullet, no camera, 200-step episodes, 12000 steps);
2. relabel it for reach:0 and train TD3+BC and BC from proprioception (``DEMO_STEPS`` updates
   each, evaluated in the same simulator);
3. print a table of both against the behaviour data's own closest distance to goal 0 (the minimum
   over every logged tool-tip position, and the mean over episodes of each episode's closest), with
   the paths of the data, the curves and the checkpoints, and the time it all took.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

DEMO_STEPS = {"td3bc": 10_000, "bc": 10_000}
"""Gradient updates per algorithm (both with the published network sizes and batch 256)."""
DEMO_EVAL_EPISODES = 10
DEMO_TASK = "reach:0"


def _sessions(root: Path) -> set[Path]:
    if not root.is_dir():
        return set()
    return {p for p in root.iterdir() if (p / "manifest.jsonl").exists()}


def collect(config_path: Path) -> Path:
    """Run the collector daemon on ``config_path``; return the session directory it recorded."""
    data = yaml.safe_load(config_path.read_text())
    root = Path(data.get("data_root", "data"))
    before = _sessions(root)
    cmd = [sys.executable, "-m", "collector.cli", "collect", "--config", str(config_path)]
    print(f"$ pandalab collect --config {config_path}", flush=True)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise SystemExit(f"pandalab collect failed with exit code {result.returncode}")
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
                f"{algo} ({rep['steps']} updates)",
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
    steps: dict[str, int] | None = None,
    eval_episodes: int = DEMO_EVAL_EPISODES,
) -> dict[str, Any]:
    from learning.trainer import TrainConfig, train

    started = time.monotonic()
    out = Path(out)
    steps = steps or DEMO_STEPS
    session = collect(Path(config_path))
    collected = time.monotonic()
    reports: dict[str, dict[str, Any]] = {}
    stamp = session.name
    for algo, n in steps.items():
        run_dir = out / "runs" / f"{algo}_{stamp}"
        print(
            f"$ pandalab train --data {session} --task {DEMO_TASK} --obs proprio --algo {algo} --steps {n} "
            f"--out {run_dir}",
            flush=True,
        )
        config = TrainConfig(
            data=[str(session)],
            task=DEMO_TASK,
            obs="proprio",
            algo=algo,
            steps=n,
            eval_every=n // 2,
            eval_episodes=eval_episodes,
            checkpoint_every=max(1, n // 4),
            out=str(run_dir),
        )
        reports[algo] = train(config)
        print(f"  {algo}: {reports[algo]['train_seconds']:.0f} s", flush=True)
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
    print(f"curves       tensorboard --logdir {out / 'runs'}   (and metrics.csv in each run)")
    for algo, rep in reports.items():
        print(f"checkpoint   {rep['checkpoint']}   (pandalab eval --checkpoint {rep['checkpoint']} --video {algo}.mp4)")
    print(f"report       {out / 'demo_report.json'}")
    print(f"time         {total:.0f} s in all ({collected - started:.0f} s collecting)")
    return summary


def main_demo(args) -> int:
    steps = None
    if args.steps:
        steps = {algo: args.steps for algo in DEMO_STEPS}
    run_demo(args.config, args.out, steps, args.eval_episodes or DEMO_EVAL_EPISODES)
    return 0
