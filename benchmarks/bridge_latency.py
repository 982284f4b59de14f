"""The bridge's cost, measured on loopback: what the hardware path adds to a collection step.

- **round trips** through a real bridge server process (its simulated PyBullet arm free-running in
  real time): a state request and a (zero) command (the robot-side filter included), median and
  p99, next to a bare ZMQ DEALER/ROUTER echo of a command-sized message between two threads (the
  transport's floor; between processes PLATFORM.md measured about 0.12 ms);
- **state age at the step**: in a 20 Hz loop (read the state, filter, send), the time from the
  middle of the state request to the command leaving, median and p99;
- **collection at 20 Hz, realtime**: `pandalab collect` through the bridge against the same
  simulator in process, both paced in real time: steps/s from the episodes' recorded loop periods
  and the p99 error of the period (aim: >= 0.95x the in-process rate, p99 error < 1 ms);
- **franky-sim's loop rate**: simulated robot time per second of wall time, read through franky
  (only where .venv-franky-sim exists: `make test` builds it).

    .venv/bin/python benchmarks/bridge_latency.py [--samples 2000] [--steps 200]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it

import numpy as np
import yaml
import zmq

from benchmarks._cli import REPO, run_script


def _ms(values: list[float]) -> tuple[float, float]:
    array = 1000.0 * np.asarray(values)
    return float(np.median(array)), float(np.percentile(array, 99))


def _serve(folder: Path) -> tuple[subprocess.Popen, str]:
    address = f"ipc://{folder}/bridge"
    config = folder / "bridge.yaml"
    config.write_text(
        yaml.safe_dump({"address": address, "arm": "sim", "options": {"backend": "pybullet", "cameras": []}})
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "pandalab", "bridge", "serve", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return server, address


def _echo_floor(samples: int) -> tuple[float, float]:
    """A bare ZMQ DEALER -> ROUTER echo in this process's thread pair: the transport alone."""
    import threading

    context = zmq.Context.instance()
    address = f"inproc://echo{time.monotonic_ns()}"
    router = context.socket(zmq.ROUTER)
    router.bind(address)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            if router.poll(50):
                router.send_multipart(router.recv_multipart())

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    dealer = context.socket(zmq.DEALER)
    dealer.connect(address)
    payload = b"x" * 200
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        dealer.send(payload)
        dealer.recv()
        times.append(time.perf_counter() - t0)
    stop.set()
    thread.join()
    dealer.close(0)
    router.close(0)
    return _ms(times)


def _round_trips(address: str, samples: int) -> dict:
    from robot_drivers import ActionSpace, Command
    from robot_drivers.bridge.client import BridgeDriver
    from robot_drivers.safe_driver import SafeDriver

    driver = BridgeDriver({"server": address, "connect_timeout_s": 30})
    driver.connect()
    reads, commands, ages = [], [], []
    for _ in range(samples):
        t0 = time.perf_counter()
        driver.read_state()
        reads.append(time.perf_counter() - t0)
    safe = SafeDriver(driver)
    period = 1.0 / driver.control_rate_hz
    deadline = time.monotonic()
    for _ in range(min(samples, 200)):
        t0 = time.perf_counter()
        state = safe.read_state()
        t1 = time.perf_counter()
        command = safe.filter.filter(state, np.zeros(7))[0]
        t2 = time.perf_counter()
        driver.send(Command(ActionSpace.joint_velocity, command.values))
        commands.append(time.perf_counter() - t2)
        ages.append(t2 - (t0 + t1) / 2)
        deadline += period
        time.sleep(max(0.0, deadline - time.monotonic()))
    driver.close()
    return {"state": _ms(reads), "command": _ms(commands), "age": _ms(ages)}


def _collect(folder: Path, robot: dict, steps: int, name: str) -> tuple[float, float]:
    """(steps/s, p99 period error ms) of a realtime session of two episodes of ``steps`` steps."""
    config = {
        "session_id": name,
        "data_root": str(folder / "data"),
        "robot": robot,
        "realtime": True,
        "episode_steps": steps,
        "explorer": {"name": "random_linear"},
        "stop": {"episodes": 2},
        "control_address": f"ipc://{folder}/control_{name}",
        "telemetry_address": f"ipc://{folder}/telemetry_{name}",
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "pandalab", "collect", "--config", str(path)], cwd=REPO, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name}: collect failed: {done.stderr.strip()[-500:]}")
    from store import iter_episodes

    means, p99s = [], []
    for episode in iter_episodes(folder / "data" / name):
        timing = episode.metadata["timing"]
        means.append(timing["loop_period_mean_s"])
        p99s.append(timing["loop_period_p99_s"])
    period = 0.05
    return 1.0 / float(np.mean(means)), 1000.0 * (max(p99s) - period)


def _franky_sim_rate() -> float | None:
    binary = REPO / ".venv-franky-sim" / "bin" / "franky-sim"
    if not binary.exists():
        return None
    process = subprocess.Popen(
        [str(binary), "--simulator", "mujoco", "--hostname", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(300):
            with contextlib.closing(socket.socket()) as probe:
                if probe.connect_ex(("127.0.0.1", 1337)) == 0:
                    break
            time.sleep(0.1)
        code = (
            "import time, franky\n"
            "r = franky.Robot('127.0.0.1', realtime_config=franky.RealtimeConfig.Ignore)\n"
            "t0, s0 = time.monotonic(), r.state.time.to_sec()\n"
            "time.sleep(3.0)\n"
            "print((r.state.time.to_sec() - s0) / (time.monotonic() - t0))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    finally:
        process.terminate()
        process.wait(timeout=20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="requests timed per round trip (default 2000)")
    parser.add_argument("--steps", type=int, default=200, help="steps per episode of the collection runs (default 200)")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory(prefix="bridge_latency_") as tmp:
        folder = Path(tmp)
        floor = _echo_floor(args.samples)
        server, address = _serve(folder)
        try:
            trips = _round_trips(address, args.samples)
            bridged = _collect(folder, {"backend": "bridge", "options": {"server": address}}, args.steps, "bridge")
        finally:
            server.terminate()
            server.wait(timeout=30)
        direct = _collect(folder, {"backend": "pybullet", "options": {"cameras": []}}, args.steps, "direct")
    franky_rate = _franky_sim_rate()

    table = Table(title="bridge on loopback (2-core machine)")
    table.add_column("what")
    table.add_column("ours", justify="right")
    table.add_column("reference", justify="right")

    def pair(values: tuple[float, float], digits: int = 2) -> str:
        return f"{values[0]:.{digits}f} / {values[1]:.{digits}f}"

    echo = f"ZMQ inproc echo {pair(floor, 3)}"
    table.add_row("state round trip, ms (median / p99)", pair(trips["state"]), echo)
    table.add_row("command round trip, ms (median / p99)", pair(trips["command"]), echo)
    table.add_row("state age at the step, ms (median / p99)", pair(trips["age"]), "-")
    table.add_row(
        "collect at 20 Hz realtime: steps/s, p99 period error ms",
        f"{bridged[0]:.2f}, {bridged[1]:+.2f}",
        f"in process {direct[0]:.2f}, {direct[1]:+.2f} ({bridged[0] / direct[0]:.3f}x)",
    )
    table.add_row(
        "franky-sim loop, simulated s per wall s",
        "-" if franky_rate is None else f"{franky_rate:.3f}",
        "1.000 (a real arm: 1 kHz)",
    )
    Console().print(table)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    run_script(main)
