"""Soak test: the collector daemon runs for a long time in simulation; its step rate must hold
steady and its memory stay flat.

Starts `pandalab collect` as a subprocess (PyBullet or robosuite, one 84x84 camera, random linear
policies, 200-step episodes), samples its telemetry (`ctl status`) and resident memory
(/proc/<pid>/status VmRSS) every ``--every`` seconds, then stops it with `ctl stop`, verifies the
session, and prints the samples and a summary: step rate first vs last third, and memory growth
after the first sample.

    .venv/bin/python benchmarks/collect_soak.py --minutes 30 [--backend pybullet] [--every 30]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks._cli import REPO, run_script
from collector.control import send_request
from store import verify_session


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--backend", default="pybullet", choices=["pybullet", "robosuite"])
    parser.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        control = f"ipc://{tmp}/control"
        config = {
            "session_id": "soak",
            "data_root": str(tmp / "data"),
            "robot": {"backend": args.backend, "options": {"cameras": [{"name": "front", "width": 84, "height": 84}]}},
            "episode_steps": 200,
            "explorer": {"name": "random_linear"},
            "control_address": control,
            "telemetry_address": f"ipc://{tmp}/telemetry",
        }
        (tmp / "soak.yaml").write_text(yaml.safe_dump(config))
        daemon = subprocess.Popen(
            [sys.executable, "-m", "pandalab", "collect", "--config", str(tmp / "soak.yaml")],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        samples = []
        started = time.monotonic()
        print(
            f"soaking {args.minutes:g} min ({args.backend}), a sample every {args.every:g} s...",
            file=sys.stderr,
            flush=True,
        )
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(args.every)
                status = send_request(control, "status", timeout_s=10)
                samples.append(
                    (time.monotonic() - started, status["steps"], status["step_rate_hz"], rss_mb(daemon.pid))
                )
                t, n, rate, rss = samples[-1]
                print(f"  {t:.0f} s: {n} steps, {rate:.1f} steps/s, {rss:.1f} MB", file=sys.stderr, flush=True)
            send_request(control, "stop", timeout_s=10)
            daemon.wait(timeout=120)
        finally:
            if daemon.poll() is None:
                daemon.kill()
        report = verify_session(tmp / "data" / "soak")
    table = Table(title=f"Soak: {args.backend}, one 84x84 camera, {args.minutes:g} min")
    for column in ("t (s)", "steps", "rate over the window (steps/s)", "telemetry rate (steps/s)", "RSS (MB)"):
        table.add_column(column, justify="right")
    previous_t, previous_n = 0.0, 0
    window_rates = []
    for t, n, rate, rss in samples:
        window = (n - previous_n) / (t - previous_t)
        window_rates.append(window)
        table.add_row(f"{t:.0f}", str(n), f"{window:.1f}", f"{rate:.1f}", f"{rss:.1f}")
        previous_t, previous_n = t, n
    Console().print(table)
    third = max(1, len(samples) // 3)
    rss = np.array([s[3] for s in samples])
    print(
        f"step rate: first third {np.mean(window_rates[:third]):.1f}, last third {np.mean(window_rates[-third:]):.1f} "
        f"steps/s; memory: {rss[0]:.1f} MB at the first sample, {rss[-1]:.1f} MB at the last "
        f"({rss[-1] - rss[0]:+.1f} MB); session verified: {report.clean} ({report.steps} steps)"
    )


if __name__ == "__main__":
    run_script(main)
