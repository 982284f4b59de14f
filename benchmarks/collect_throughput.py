"""Steps/s of a whole collection session vs the raw simulator loop alone.

The session is the real `collector.session.Collector` (explorer, safety filter, episode store
with its writer thread, operator socket, resets between episodes) with one 84x84 camera, run in
this process against each simulated backend.  The reference is the raw simulator stepped directly
with the same settings and the same camera (as in benchmarks/sim_throughput.py).  Also printed:
the bytes/s the store wrote.  Target: the whole pipeline within 15% of the raw simulator.

    .venv/bin/python benchmarks/collect_throughput.py [--steps 2000] [--episode-steps 200]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks._cli import run_script
from benchmarks.sim_throughput import RAW_LOOPS, commands
from collector.config import parse_session_config
from collector.session import Collector
from robot_drivers import create_driver
from sim.config import SimConfig
from store import iter_episodes, read_manifest

CAMERA = {"name": "front", "width": 84, "height": 84}


def raw_rate(backend: str, steps: int) -> float:
    driver = create_driver(backend, SimConfig(backend=backend, cameras=(CAMERA,)))
    driver.connect()
    try:
        return max(RAW_LOOPS[backend](driver, commands(steps), True) for _ in range(2))
    finally:
        driver.close()


def session_rate(backend: str, steps: int, episode_steps: int, root: pathlib.Path) -> dict:
    config = parse_session_config(
        {
            "session_id": f"bench_{backend}",
            "data_root": str(root),
            "robot": {"backend": backend, "options": {"cameras": [CAMERA]}},
            "episode_steps": episode_steps,
            "explorer": {"name": "random_linear"},
            "stop": {"steps": steps},
            "control_address": f"ipc://{root}/{backend}_control",
            "telemetry_address": f"ipc://{root}/{backend}_telemetry",
        }
    )
    collector = Collector(config, install_signal_handlers=False)
    started = time.perf_counter()
    with warnings.catch_warnings():  # Ctrl-C: the temporary session's unfinished episode does not matter
        warnings.filterwarnings("ignore", message="closing .* unfinished")
        assert collector.run() == 0
    elapsed = time.perf_counter() - started
    session = root / f"bench_{backend}"
    steps = sum(e.steps for e in read_manifest(session))
    written = sum(f.stat().st_size for f in session.rglob("*") if f.is_file())
    periods = [episode.metadata["timing"]["loop_period_mean_s"] for episode in iter_episodes([session])]
    return {
        "steps": steps,
        "elapsed": elapsed,
        "rate": steps / elapsed,
        "loop_rate": 1.0 / float(np.mean(periods)),
        "bytes_per_s": written / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="control steps recorded per session (default 2000)")
    parser.add_argument("--episode-steps", type=int, default=200, help="control steps per episode (default 200)")
    args = parser.parse_args()
    table = Table(
        title=f"Collection with one 84x84 camera: {args.steps} steps per session, episodes of {args.episode_steps}"
    )
    columns = ("backend", "raw sim steps/s", "loop steps/s", "loop / raw", "session steps/s", "session / raw")
    for column in (*columns, "store MB/s", "wall s"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("robosuite", "pybullet"):
            print(f"{backend}: timing the raw simulator (2 x 300 steps)...", file=sys.stderr, flush=True)
            raw = raw_rate(backend, 300)
            print(f"{backend}: a collection session of {args.steps} steps...", file=sys.stderr, flush=True)
            run = session_rate(backend, args.steps, args.episode_steps, pathlib.Path(tmp))
            table.add_row(
                backend,
                f"{raw:.1f}",
                f"{run['loop_rate']:.1f}",
                f"{run['loop_rate'] / raw:.2f}",
                f"{run['rate']:.1f}",
                f"{run['rate'] / raw:.2f}",
                f"{run['bytes_per_s'] / 1e6:.2f}",
                f"{run['elapsed']:.1f}",
            )
    Console().print(table)
    print(
        "loop: the step loop inside episodes (explorer, filter, driver, store append, control socket), from the "
        "episodes' recorded mean loop period; session: every recorded step over the whole wall time, start-up "
        "(simulator build, renderer), episode finishes, explorer checkpoints and resets included"
    )


if __name__ == "__main__":
    run_script(main)
