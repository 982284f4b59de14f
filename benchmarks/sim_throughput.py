"""Control steps/s of each simulated backend through our driver vs the raw simulator.

The raw loop steps the very same scene (the model our driver built) directly with the same
settings: set the joint-velocity servo targets, advance one control period of physics, read the
joint state and (with a camera) render one 84x84 frame with the same renderer settings.  Our loop
is `driver.send(Command)` + `driver.read_state()` (which also computes the tool tip by forward
kinematics, the cube pose and its top face).  Target: our wrapper costs under 10%.

    .venv/bin/python benchmarks/sim_throughput.py [--steps 2000] [--camera-steps 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/_cli.py: both ways to run it
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks._cli import run_script
from robot_drivers import ActionSpace, Command, create_driver
from sim.config import SimConfig
from sim.quiet_pybullet import pybullet
from sim.scene import DEFAULT_HOME_Q

CAMERA = {"name": "front", "width": 84, "height": 84}


def commands(n: int) -> np.ndarray:
    """A smooth joint-velocity pattern, rad/s, inside the 0.5 rad/s cap."""
    t = np.arange(n)[:, None] / 40.0
    return 0.3 * np.sin(2 * np.pi * t + np.arange(7))


def driver_loop(driver, cmds: np.ndarray) -> float:
    driver.reset(DEFAULT_HOME_Q)
    started = time.perf_counter()
    for v in cmds:
        driver.send(Command(ActionSpace.joint_velocity, v))
        driver.read_state()
    return len(cmds) / (time.perf_counter() - started)


def raw_mujoco_loop(driver, cmds: np.ndarray, camera: bool) -> float:
    driver.reset(DEFAULT_HOME_Q)
    model, data = driver.model, driver.data
    n = driver._substeps_per_period()
    servo, qpos, dof = driver._servo, driver._arm_qpos, driver._arm_dof
    renderer = driver._renderers[(84, 84)] if camera else None  # same renderer, same fast settings
    camera_id = driver._camera_ids["front"]
    started = time.perf_counter()
    for v in cmds:
        data.ctrl[servo] = v
        mujoco.mj_step(model, data, nstep=n)
        data.qpos[qpos].copy(), data.qvel[dof].copy()
        if renderer is not None:
            renderer.update_scene(data, camera=camera_id, scene_option=driver._scene_option)
            renderer.render()
    return len(cmds) / (time.perf_counter() - started)


def raw_pybullet_loop(driver, cmds: np.ndarray, camera: bool) -> float:
    driver.reset(DEFAULT_HOME_Q)
    cid, robot, joints = driver.client, driver.robot_id, driver.arm_joints
    forces = [87.0] * 4 + [12.0] * 3
    n = driver._substeps_per_period()
    if camera:
        view, projection = driver._camera_matrices["front"]
    started = time.perf_counter()
    for v in cmds:
        pybullet.setJointMotorControlArray(
            robot, joints, pybullet.VELOCITY_CONTROL, targetVelocities=v.tolist(), forces=forces, physicsClientId=cid
        )
        for _ in range(n):
            pybullet.stepSimulation(physicsClientId=cid)
        pybullet.getJointStates(robot, joints, physicsClientId=cid)
        if camera:
            pybullet.getCameraImage(
                84,
                84,
                viewMatrix=view,
                projectionMatrix=projection,
                renderer=pybullet.ER_TINY_RENDERER,
                flags=pybullet.ER_NO_SEGMENTATION_MASK,
                physicsClientId=cid,
            )
    return len(cmds) / (time.perf_counter() - started)


RAW_LOOPS = {"robosuite": raw_mujoco_loop, "pybullet": raw_pybullet_loop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="control steps per run without camera")
    parser.add_argument("--camera-steps", type=int, default=200, help="control steps per run with a camera")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the best is reported")
    args = parser.parse_args()
    print(
        f"timing {args.repeats} runs of {args.steps} steps without and {args.camera_steps} with a camera per "
        "backend (robosuite, pybullet)...",
        file=sys.stderr,
        flush=True,
    )
    table = Table(title="Control steps/s at 20 Hz: raw simulator vs our driver (best of repeats)")
    for column in ("backend", "camera", "raw steps/s", "driver steps/s", "driver / raw", "wrapper cost"):
        table.add_column(column, justify="right")
    for backend in ("robosuite", "pybullet"):
        for camera in (False, True):
            cameras = (CAMERA,) if camera else ()
            driver = create_driver(backend, SimConfig(backend=backend, cameras=cameras))
            driver.connect()
            cmds = commands(args.camera_steps if camera else args.steps)
            raw = ours = 0.0
            for _ in range(args.repeats):  # interleaved, so background load hits both alike
                raw = max(raw, RAW_LOOPS[backend](driver, cmds, camera))
                ours = max(ours, driver_loop(driver, cmds))
            driver.close()
            print(f"  {backend}, {'camera' if camera else 'no camera'}: done", file=sys.stderr, flush=True)
            table.add_row(
                backend,
                "84x84 front" if camera else "none",
                f"{raw:.0f}",
                f"{ours:.0f}",
                f"{ours / raw:.2f}",
                f"{100 * (raw / ours - 1):.1f}%",
            )
    Console().print(table)


if __name__ == "__main__":
    run_script(main)
