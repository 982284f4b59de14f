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
  (only where .venv-franky-sim exists: `make test` builds it);
- **the ros2 arm** against the franka_ros2 stand-in (tools/franka_ros2_standin.py, a fake robot;
  Cyclone DDS on loopback): the state round trip through the bridge, and what the bridge publishes
  to the velocity controller while a 20 Hz client drives it (commands per second against
  `publish_rate_hz`, the p99 gap between two), next to a bare Cyclone echo between two
  participants (the transport's floor).

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


def _cyclone_echo_floor(samples: int, domain_id: int) -> tuple[float, float]:
    """A bare Cyclone DDS ping -> echo -> pong between two participants of this process (threads)."""
    import threading

    from robot_drivers.bridge.ros2_wire import Float64MultiArray, Ros2Graph, loopback_options, newest_valid

    here, there = Ros2Graph(loopback_options(domain_id)), Ros2Graph(loopback_options(domain_id))
    ping_out, pong_in = here.writer("/ping", Float64MultiArray), here.reader("/pong", Float64MultiArray, 8, True)
    ping_in, pong_out = there.reader("/ping", Float64MultiArray, 8, True), there.writer("/pong", Float64MultiArray)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            sample = newest_valid(ping_in)
            if sample is not None:
                pong_out.write(sample)
            time.sleep(0)  # let the other thread have the GIL: two spinning threads would swap every 5 ms

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    time.sleep(1.0)  # discovery
    trips = []
    for i in range(samples):
        t0 = time.perf_counter()
        ping_out.write(Float64MultiArray(data=[float(i)] * 7))
        while True:
            sample = newest_valid(pong_in)
            if sample is not None and sample.data[0] == float(i):
                break
            time.sleep(0)
        trips.append(time.perf_counter() - t0)
    stop.set()
    thread.join(timeout=5)
    here.close()
    there.close()
    return _ms(trips)


def _ros2(folder: Path, samples: int) -> dict:
    """The ros2 arm against the stand-in: state round trips, and the command stream it publishes."""
    import threading

    from robot_drivers import ActionSpace, Command
    from robot_drivers.bridge.client import BridgeDriver
    from robot_drivers.bridge.ros2_wire import Float64MultiArray, Ros2Graph, loopback_options

    domain_id = 150 + os.getpid() % 80
    dds = loopback_options(domain_id)
    standin = subprocess.Popen(
        [sys.executable, "tools/franka_ros2_standin.py", "--domain-id", str(domain_id), "--loopback"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    standin.stdout.readline()
    address = f"ipc://{folder}/bridge_ros2"
    config = folder / "bridge_ros2.yaml"
    config.write_text(
        yaml.safe_dump(
            {"address": address, "arm": "ros2", "robot_model": "fr3", "options": {"dds": dds.model_dump(mode="json")}}
        )
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "pandalab", "bridge", "serve", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    graph = Ros2Graph(dds)
    commands = graph.reader("/joint_velocity_controller/commands", Float64MultiArray, depth=20000, reliable=True)
    stamps: list[float] = []
    stop = threading.Event()

    def record() -> None:
        while not stop.is_set():
            for sample in commands.take(N=20000):
                if isinstance(sample, Float64MultiArray):
                    stamps.append(sample.sample_info.source_timestamp / 1e9)
            time.sleep(0.005)

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    driver = BridgeDriver({"server": address, "connect_timeout_s": 30})
    try:
        driver.connect()
        reads = []
        for _ in range(samples):
            t0 = time.perf_counter()
            driver.read_state()
            reads.append(time.perf_counter() - t0)
        period, deadline = 1.0 / driver.control_rate_hz, time.monotonic()
        started = time.time()
        for step in range(60):  # 3 s of a slow back-and-forth on joint 1
            velocity = 0.1 if (step // 20) % 2 == 0 else -0.1
            driver.send(Command(ActionSpace.joint_velocity, np.array([velocity, 0, 0, 0, 0, 0, 0])))
            deadline += period
            time.sleep(max(0.0, deadline - time.monotonic()))
        ended = time.time()
        driver.stop()
    finally:
        driver.close()
        stop.set()
        recorder.join(timeout=5)
        graph.close()
        server.terminate()
        server.wait(timeout=30)
        standin.terminate()
        standin.wait(timeout=30)
    during = np.array([t for t in stamps if started + 0.2 <= t <= ended])
    gaps = np.diff(during)
    return {
        "state": _ms(reads),
        "rate": len(during) / (during[-1] - during[0]) if len(during) > 1 else 0.0,
        "gap_p99_ms": 1000.0 * float(np.percentile(gaps, 99)) if len(gaps) else float("nan"),
    }


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
        ros2 = _ros2(folder, min(args.samples, 1000))
    cyclone_floor = _cyclone_echo_floor(min(args.samples, 1000), 140 + os.getpid() % 8)
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
    cyclone = f"Cyclone echo {pair(cyclone_floor, 3)}"
    table.add_row("ros2 arm: state round trip through the bridge, ms", pair(ros2["state"]), cyclone)
    table.add_row("ros2 arm: commands published per s while driven", f"{ros2['rate']:.0f}", "1000 (publish_rate_hz)")
    table.add_row("ros2 arm: p99 gap between two published commands, ms", f"{ros2['gap_p99_ms']:.2f}", "1.00")
    Console().print(table)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MUJOCO_GL", "egl")
    run_script(main)
