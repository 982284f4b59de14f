"""`pandalab sim check`: the first thing an operator runs on a new machine.

Builds each simulated backend, resets it, steps it with a gentle joint motion through the safety
filter, saves one PNG per camera and prints a table of build time, reset time, control steps/s
without and with cameras, and milliseconds per camera frame.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from robot_drivers import ActionSpace, DriverFault, create_driver
from robot_drivers.safe_driver import SafeDriver
from sim.config import CameraConfig, SimConfig
from sim.scene import CAMERAS, DEFAULT_HOME_Q


def _gentle_motion(step: int) -> np.ndarray:
    """A smooth joint velocity pattern, rad/s, well inside the 0.5 rad/s operating cap."""
    phase = 2 * np.pi * step / 40.0
    return 0.3 * np.sin(phase + np.arange(7))


def _time_steps(driver, steps: int) -> float:
    """Control steps per second of read_state + filter + send."""
    safe = SafeDriver(driver)
    state = safe.reset(DEFAULT_HOME_Q)
    started = time.perf_counter()
    for i in range(steps):
        safe.act(state, _gentle_motion(i))
        state = safe.read_state()
    return steps / (time.perf_counter() - started)


def check_backend(backend: str, steps: int, image_size: int, out_dir: pathlib.Path) -> dict:
    """Measure one backend and save its camera images; returns the row of the report."""
    cameras = tuple(CameraConfig(name=name, width=image_size, height=image_size) for name in CAMERAS)
    row: dict = {"backend": backend}
    blind = create_driver(backend, SimConfig(backend=backend, cameras=()))
    started = time.perf_counter()
    blind.connect()
    row["build_s"] = time.perf_counter() - started
    try:
        row["steps_per_s_no_camera"] = _time_steps(blind, steps)
    finally:
        blind.close()

    seeing = create_driver(backend, SimConfig(backend=backend, cameras=cameras))
    seeing.connect()
    try:
        row["steps_per_s_cameras"] = _time_steps(seeing, max(steps // 4, 10))
        started = time.perf_counter()
        state = seeing.reset(DEFAULT_HOME_Q)
        row["reset_ms"] = 1000 * (time.perf_counter() - started)
        frame_times = []
        for camera in cameras:
            started = time.perf_counter()
            seeing._render(camera)
            frame_times.append(time.perf_counter() - started)
        row["ms_per_frame"] = 1000 * float(np.median(frame_times))
        out_dir.mkdir(parents=True, exist_ok=True)
        row["images"] = []
        for name, image in state.images.items():
            path = out_dir / f"{backend}_{name}.png"
            Image.fromarray(image).save(path)
            row["images"].append(str(path))
    finally:
        seeing.close()
    return row


def run_sim_check(backends: list[str], steps: int, image_size: int, out_dir: str) -> int:
    console = Console()
    table = Table(title=f"pandalab sim check ({len(CAMERAS)} cameras at {image_size}x{image_size})")
    for column in ("backend", "build s", "reset ms", "steps/s no camera", "steps/s all cameras", "ms/frame"):
        table.add_column(column, justify="right")
    failures = 0
    images: list[str] = []
    for backend in backends:
        try:
            row = check_backend(backend, steps, image_size, pathlib.Path(out_dir))
        except (DriverFault, OSError, RuntimeError, ImportError) as error:
            failures += 1
            console.print(f"[red]{backend}: FAILED[/red] {type(error).__name__}: {error}")
            continue
        images += row["images"]
        table.add_row(
            backend,
            f"{row['build_s']:.2f}",
            f"{row['reset_ms']:.1f}",
            f"{row['steps_per_s_no_camera']:.0f}",
            f"{row['steps_per_s_cameras']:.1f}",
            f"{row['ms_per_frame']:.1f}",
        )
    console.print(table)
    if images:
        console.print("camera images: " + ", ".join(images))
    console.print(f"action space checked: {ActionSpace.joint_velocity.value}, through the safety filter")
    return 1 if failures else 0
