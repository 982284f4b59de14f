"""Coverage of the cube scene by each explorer, for the same budget of recorded steps and seed set.

Seed 003's protocol (configs/sim_cube_tip.yaml): robosuite Panda + coloured cube, tool-tip
displacement actions, 200-step episodes, cube reset yellow-face-up after each episode.  Every
explorer (`random`, `random_linear`, `gep`, `rnd`, `gcrnd`, and `sse` when registered) runs through
the real `collector.session.Collector` (in a child process each, ``--jobs`` at a time) with its
default parameters, until ``--steps`` recorded steps per seed.  Reported per explorer (mean over
seeds): occupied cells of the tool-tip grid (5 cm) and of cube x-y (2 cm) from
`pandalab.data.coverage`, the distribution of the cube's top-face colour over all recorded
steps (003 Fig. 5), and the mean time spent training per episode (events.jsonl episode_end
train_s; the arm is held still meanwhile).  One PNG per explorer (all seeds together) is written
with `pandalab.data.coverage` (the same plot as `pandalab data coverage`).

Explorers see ``--observation`` (default proprio: joint angles + velocities; seed 003's agents saw
84x84 images, which costs ~10x more training time on a CPU); no camera is rendered unless the
observation is image.  Train times include contention between the ``--jobs`` parallel runs.
Progress: a line when each session starts and ends, and one every 30 s from each running session.

    .venv/bin/python benchmarks/explorer_coverage.py [--steps 3000] [--seeds 0 1] [--jobs 2]

Measured (2 shared, loaded CPU cores): 3000 steps x seeds {0, 1}, 2 jobs: 914 s wall; the
learned explorers dominate (train s per 200-step episode: rnd ~10, gcrnd ~7, sse ~18).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import pathlib
import sys
import tempfile
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks._cli import ignore_sigint, run_script
from collector.explorers import EXPLORERS
from pandalab.data import CUBE_FACE_COLOURS, coverage
from store import read_events

REPO = pathlib.Path(__file__).resolve().parents[1]
EXPLORER_ORDER = ("random", "random_linear", "gep", "rnd", "gcrnd", "sse")
HEARTBEAT_S = 30.0
"""Seconds between the progress lines of a running session."""


def _session_config(explorer: str, seed: int, steps: int, observation: str, root: pathlib.Path) -> dict:
    config = yaml.safe_load((REPO / "configs" / "sim_cube_tip.yaml").read_text())
    session_id = f"{explorer}_seed{seed}"
    config.update(
        {
            "session_id": session_id,
            "data_root": str(root),
            "seed": seed,
            "explorer": {"name": explorer, "observation": observation},
            "stop": {"steps": steps},
            "control_address": f"ipc://{root}/{session_id}_control",
            "telemetry_address": f"ipc://{root}/{session_id}_telemetry",
        }
    )
    if observation != "image":
        config["robot"]["options"]["cameras"] = []  # nothing looks at the frames: skip rendering
    return config


class _Heartbeat:
    """A running session's progress line every `HEARTBEAT_S` seconds (the collector's status)."""

    def __init__(self, name: str) -> None:
        self.name, self.last = name, time.monotonic()

    def __call__(self, status: dict) -> None:
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_S:
            self.last = now
            target = (status.get("stop_at") or {}).get("steps")
            print(
                f"  {self.name}: {status['state']}, {status['steps']}/{target} steps, {status['episodes']} episodes",
                flush=True,
            )


def _run_one(args: tuple[str, int, int, str, str, bool]) -> dict:
    explorer, seed, steps, observation, root, reuse = args
    from collector.config import parse_session_config
    from collector.session import Collector

    config = parse_session_config(_session_config(explorer, seed, steps, observation, pathlib.Path(root)))
    started = time.perf_counter()
    done = pathlib.Path(root) / config.session_id / "manifest.jsonl"
    if reuse and done.exists():
        code = 0  # --reuse: report a session recorded by an earlier run into the same --out
    else:
        print(f"  {config.session_id}: started", flush=True)
        progress = _Heartbeat(config.session_id)
        code = Collector(config, on_progress=progress, install_signal_handlers=False).run()
    elapsed = time.perf_counter() - started
    session = pathlib.Path(root) / config.session_id
    ends = [e for e in read_events(session) if e["kind"] == "episode_end"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = coverage([session], pathlib.Path(root) / f"{config.session_id}.png", Console(file=io.StringIO()))
    return {
        "explorer": explorer,
        "seed": seed,
        "code": code,
        "elapsed_s": elapsed,
        "episodes": len(ends),
        "train_s": float(np.mean([e["train_s"] for e in ends])) if ends else float("nan"),
        **counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="Recorded steps per explorer and seed (default 3000).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--explorers", nargs="+", default=[e for e in EXPLORER_ORDER if e in EXPLORERS])
    parser.add_argument("--observation", default="proprio", choices=["proprio", "proprio+object", "image"])
    parser.add_argument("--jobs", type=int, default=2, help="Sessions run at once (child processes).")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="Keep sessions and PNGs here.")
    parser.add_argument("--reuse", action="store_true", help="Report sessions already in --out without rerunning.")
    args = parser.parse_args()

    console = Console(width=200)
    with contextlib.ExitStack() as stack:
        root = args.out or pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="explorer_cov_")))
        root.mkdir(parents=True, exist_ok=True)
        jobs = [(e, s, args.steps, args.observation, str(root), args.reuse) for e in args.explorers for s in args.seeds]
        started = time.perf_counter()
        print(
            f"{len(jobs)} sessions ({len(args.explorers)} explorers x {len(args.seeds)} seeds) of {args.steps} steps, "
            f"{args.jobs} at a time; sessions in {root}",
            flush=True,
        )
        results = []
        pool = multiprocessing.get_context("spawn").Pool(args.jobs, initializer=ignore_sigint, maxtasksperchild=1)
        try:
            for result in pool.imap_unordered(_run_one, jobs, chunksize=1):
                results.append(result)
                print(
                    f"[{len(results)}/{len(jobs)}] {result['explorer']} seed {result['seed']}: "
                    f"{'done' if result['code'] == 0 else 'failed, exit ' + str(result['code'])} in "
                    f"{result['elapsed_s']:.0f} s ({time.perf_counter() - started:.0f} s so far)",
                    flush=True,
                )
            pool.close()
        finally:
            pool.terminate()  # Ctrl-C: the workers ignore it, so end them here
            pool.join()
        wall = time.perf_counter() - started
        wall_text = "reused sessions" if args.reuse else f"{wall:.0f} s wall"
        pngs = {}
        for explorer in args.explorers:
            sessions = [root / f"{explorer}_seed{s}" for s in args.seeds]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pngs[explorer] = coverage(sessions, root / f"coverage_{explorer}.png", Console(file=io.StringIO()))

        table = Table(
            title=(
                f"Cube-scene coverage (robosuite, tip_delta, 200-step episodes, {args.observation} observations): "
                f"{args.steps} steps per explorer and seed, seeds {args.seeds}; {wall_text}"
            )
        )
        for column in (
            "explorer",
            "tip cells (5 cm)",
            "cube x-y cells (2 cm)",
            "top face % (" + "/".join(c[0].upper() for c in CUBE_FACE_COLOURS) + ")",
            "train s / episode",
            "all seeds: tip / cube cells",
        ):
            table.add_column(column, justify="right")
        for explorer in args.explorers:
            rows = [r for r in results if r["explorer"] == explorer]
            if any(r["code"] != 0 for r in rows):
                table.add_row(explorer, "failed", "", "", "", "")
                continue
            tip = [r["tip_cells"] for r in rows]
            cube = [r.get("cube_cells", 0) for r in rows]
            faces = np.sum([[r["top_face_counts"][c] for c in CUBE_FACE_COLOURS] for r in rows], axis=0)
            share = 100.0 * faces / max(1, faces.sum())
            union = pngs[explorer]
            table.add_row(
                explorer,
                f"{np.mean(tip):.1f} ± {np.std(tip):.1f}",
                f"{np.mean(cube):.1f} ± {np.std(cube):.1f}",
                "/".join(f"{v:.0f}" for v in share),
                f"{np.mean([r['train_s'] for r in rows]):.2f}",
                f"{union['tip_cells']} / {union.get('cube_cells', 0)}",
            )
        console.print(table)
        console.print(
            f"budget: {args.steps} steps x {len(args.seeds)} seeds per explorer "
            f"({args.steps // 200} episodes of 200 steps each), {args.jobs} sessions at a time on "
            f"{os.cpu_count()} CPU cores; PNGs: {root if args.out else '(temporary; pass --out to keep)'}"
        )


if __name__ == "__main__":
    run_script(main)
