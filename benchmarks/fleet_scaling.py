"""Recorded steps/s of `pandalab fleet` with 1 and N workers against one plain collector.

The plain collector is the real `collector.session.Collector` (what `pandalab collect` runs) in this
process, timed before and after the fleets (their mean is the reference: a shared machine's load
drifts); the fleet is `pandalab.fleet.Fleet` on Ray, first with one worker, then with N (default:
the cores), every session recording ``--steps`` steps with one 84x84 camera. Target: N workers
record at least 0.9 x min(N, cores) times the plain collector's rate. Also printed: Ray's overhead
per worker (the actor's start-up until it answers, its session's start, its peak resident memory
beside the plain collector's) and Ray's own start-up and daemons' memory. A recorded step is one
(s, a) row of an episode; an episode of T steps gives T - 1 transitions to the trainer.

    .venv/bin/python benchmarks/fleet_scaling.py [--workers N] [--steps 600] [--backend pybullet]
    .venv/bin/python benchmarks/fleet_scaling.py --address HEAD:6379 --out /shared/bench   # a cluster

On a cluster (``--address``), ``--out`` must be shared storage every node sees at the same path, and
the memory columns stay empty for workers on other machines.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import sys
import tempfile
import threading
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from benchmarks._cli import run_script

CAMERA = {"name": "front", "width": 84, "height": 84}


def session_config(backend: str, root: pathlib.Path, name: str, steps: int, episode_steps: int):
    from collector.config import parse_session_config

    return parse_session_config(
        {
            "session_id": name,
            "data_root": str(root),
            "robot": {"backend": backend, "options": {"cameras": [CAMERA]}},
            "episode_steps": episode_steps,
            "explorer": {"name": "random_linear"},
            "stop": {"steps": steps},
            "control_address": f"ipc://{root}/{name}-c",
            "telemetry_address": f"ipc://{root}/{name}-t",
        }
    )


def recording_span(sessions: list[pathlib.Path]) -> tuple[int, float]:
    """Steps recorded by ``sessions`` and the wall time from the first session_start to the last
    session_stop (events.jsonl): recording time, process and simulator start-up excluded."""
    from store import read_manifest

    starts, stops, steps = [], [], 0
    for session in sessions:
        steps += sum(info.steps for info in read_manifest(session))
        for line in (session / "events.jsonl").read_text().splitlines():
            event = json.loads(line)
            if event["kind"] == "session_start":
                starts.append(event["time"])
            elif event["kind"] == "session_stop":
                stops.append(event["time"])
    return steps, max(stops) - min(starts)


def plain(backend: str, root: pathlib.Path, steps: int, episode_steps: int, name: str = "plain") -> dict:
    from collector.session import Collector

    config = session_config(backend, root, name, steps, episode_steps)
    started_at = time.time()
    started = time.perf_counter()
    cpu = time.process_time()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="closing .* unfinished")
        assert Collector(config, install_signal_handlers=False).run() == 0
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    recorded, span = recording_span([root / name])
    start_event = next(
        json.loads(line)
        for line in (root / name / "events.jsonl").read_text().splitlines()
        if '"session_start"' in line
    )
    return {
        "workers": 1,
        "steps": recorded,
        "wall": wall,
        "rate": recorded / wall,
        "recording_rate": recorded / span,
        "startup": start_event["time"] - started_at,
        "cores": cpu / wall,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # the process so far (KiB on Linux)
    }


def fleet(backend: str, root: pathlib.Path, workers: int, steps: int, episode_steps: int) -> dict:
    import psutil

    from pandalab.fleet import Fleet, state_path, worker_configs

    base = f"fleet{workers}"
    configs = worker_configs(session_config(backend, root, base, steps, episode_steps), workers, base)
    runner = Fleet(configs, base, state_path(root, base), max_restarts=0, report_every_s=0, say=lambda line: None)
    peaks: dict[int, float] = {}
    cpu: dict[int, float] = {}
    done = threading.Event()
    actor_up: dict[int, float] = {}

    def sample() -> None:  # the actors' resident memory, local workers only
        while not done.wait(0.25):
            for row in list(runner.rows):
                pid = row.get("pid")
                if pid is None:
                    continue
                actor_up.setdefault(row["worker"], time.time())
                try:
                    process = psutil.Process(pid)
                    rss = process.memory_info().rss / 2**20
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                peaks[pid] = max(peaks.get(pid, 0.0), rss)
                cpu[pid] = times.user + times.system

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started_at = time.time()
    started = time.perf_counter()
    try:
        code = runner.run()
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - started
    assert code == 0, f"the fleet of {workers} failed: {runner.results}"
    sessions = [pathlib.Path(c.data_root) / c.session_id for c in configs]
    recorded, span = recording_span(sessions)
    first_starts = []
    for session in sessions:
        for line in (session / "events.jsonl").read_text().splitlines():
            if '"session_start"' in line:
                first_starts.append(json.loads(line)["time"] - started_at)
                break
    return {
        "workers": workers,
        "steps": recorded,
        "wall": wall,
        "rate": recorded / wall,
        "recording_rate": recorded / span,
        "actor_up": sum(actor_up.values()) / len(actor_up) - started_at if actor_up else float("nan"),
        "startup": sum(first_starts) / len(first_starts),
        "rss_mb": sum(peaks.values()) / len(peaks) if peaks else float("nan"),
        "cores": sum(cpu.values()) / wall if cpu else float("nan"),
    }


def ray_daemons_rss_mb() -> float:
    """Resident memory of the local Ray's own processes (GCS, raylet, agents, monitors), MiB."""
    import psutil

    total = 0.0
    for process in psutil.Process().children(recursive=True):
        try:
            if "ray" in " ".join(process.cmdline()) and "CollectorWorker" not in process.name():
                total += process.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N (default: the cores)")
    parser.add_argument("--steps", type=int, default=600, help="steps recorded per session (default 600)")
    parser.add_argument("--episode-steps", type=int, default=100, help="control steps per episode (default 100)")
    parser.add_argument("--backend", default="pybullet", help="pybullet (default) or robosuite")
    parser.add_argument("--address", help="a Ray cluster (HOST:PORT, ray://HOST:PORT, auto); default: a local Ray")
    parser.add_argument("--out", help="data root for the sessions (default: a temporary folder, removed)")
    args = parser.parse_args()
    if args.workers < 1 or args.steps < 1 or args.episode_steps < 1:
        parser.error("--workers, --steps and --episode-steps must be positive")

    import logging

    import ray
    from rich.console import Console
    from rich.table import Table

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="fleet_scaling_", dir=args.out) as tmp:
        root = pathlib.Path(tmp)
        print(f"plain collector: {args.steps} steps ({args.backend}, one 84x84 camera)...", file=sys.stderr, flush=True)
        rows = [("plain, before", plain(args.backend, root, args.steps, args.episode_steps))]
        started = time.perf_counter()
        init = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        if args.address:
            init["address"] = args.address
        else:
            init["num_cpus"] = max(cores, args.workers)
        ray.init(**init)
        ray_start = time.perf_counter() - started
        try:
            daemons = ray_daemons_rss_mb() if not args.address else float("nan")
            for workers in sorted({1, args.workers}):
                print(f"fleet of {workers}: {args.steps} steps each...", file=sys.stderr, flush=True)
                rows.append((f"fleet of {workers}", fleet(args.backend, root, workers, args.steps, args.episode_steps)))
        finally:
            ray.shutdown()
        print("plain collector again (the load of a shared machine drifts)...", file=sys.stderr, flush=True)
        after = plain(args.backend, root, args.steps, args.episode_steps, name="plain_after")
        rows.append(("plain, after", after | {"rss_mb": float("nan")}))  # this process holds Ray now

    plains = [run for name, run in rows if name.startswith("plain")]
    base = {key: sum(run[key] for run in plains) / len(plains) for key in ("rate", "recording_rate")}
    table = Table(
        title=f"Fleet scaling: {args.backend}, one 84x84 camera, {args.steps} steps per session, "
        f"episodes of {args.episode_steps}, {cores} cores, Ray {'at ' + args.address if args.address else 'local'}"
    )
    for column in ("run", "steps", "wall s", "steps/s", "x plain", "recording steps/s", "x plain", "target x"):
        table.add_column(column, justify="right")
    for column in ("cores used", "actor up s", "session start s", "RSS MB / worker"):
        table.add_column(column, justify="right")
    for name, run in rows:
        fleet_row = name.startswith("fleet")
        table.add_row(
            name,
            str(run["steps"]),
            f"{run['wall']:.1f}",
            f"{run['rate']:.1f}",
            f"{run['rate'] / base['rate']:.2f}",
            f"{run['recording_rate']:.1f}",
            f"{run['recording_rate'] / base['recording_rate']:.2f}",
            f"{0.9 * min(run['workers'], cores):.1f}" if fleet_row else "-",
            f"{run['cores']:.2f}",
            f"{run['actor_up']:.1f}" if fleet_row else "-",
            f"{run['startup']:.1f}",
            f"{run['rss_mb']:.0f}",
        )
    Console(width=max(150, Console().width)).print(table)
    print(
        f"Ray: start-up {ray_start:.1f} s, its own daemons {daemons:.0f} MB resident (local). steps/s: every recorded "
        "step over the wall time, start-up included; recording: first session_start to last session_stop "
        "(events.jsonl). actor up: from the fleet's start until the actor answered; session start: until its "
        "session_start. RSS: peak per worker process; the plain collector's is this whole process (before Ray). "
        "x plain: against the mean of the two plain runs. cores used: CPU seconds of the collector processes "
        "(all their threads) per wall second."
    )
    return 0


if __name__ == "__main__":
    run_script(main)
