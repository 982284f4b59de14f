"""A stand-in for a franka_ros2 robot PC, for tests and for trying the bridge's ``ros2`` arm without
a robot.  It is a FAKE ROBOT, not a simulator: no dynamics, no contacts.

Over Cyclone DDS on ROS 2's wire conventions (`robot_drivers.bridge.ros2_wire`) it does what the
robot PC's graph does for the ``ros2`` arm:

- subscribes to ``/<controller>/commands`` (std_msgs/Float64MultiArray, the seven joints' velocities
  in rad/s, in the controller's joint order) and, like a ros2_controllers JointGroupVelocityController,
  applies each message as it comes and **holds it** (no timeout);
- integrates the commanded velocities into joint positions at ``--rate`` Hz (1 kHz, franka_ros2's
  controller-manager rate) and publishes sensor_msgs/JointState on ``--joint-states`` with the arm's
  joints **out of order** and the two finger joints merged in (as the merged ``/joint_states`` does), so a
  reader that maps by order instead of by name reads the wrong joints;
- stops like a reflex when a joint leaves the robot model's position range, or on SIGUSR1: velocities
  zero, commands ignored until SIGUSR2 (what franka_ros2's ErrorRecovery action does).

Run: ``.venv/bin/python tools/franka_ros2_standin.py --robot-model fr3 --domain-id 7 --loopback``;
it prints one JSON line ``{"ready": ...}`` once publishing, and a line per reflex on stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import numpy as np

from robot_drivers.bridge.ros2_wire import (
    CycloneOptions,
    Float64MultiArray,
    Header,
    JointState,
    Ros2Graph,
    loopback_options,
    newest_valid,
    stamp,
)
from safety.robot_model import robot_model as published_model

HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
"""Where the fake arm starts, rad (franka_ros2's usual start pose)."""
FINGER_OPENING_M = 0.04
"""Each finger joint's position, m (the gripper half open)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot-model", choices=("fr3", "panda"), default="fr3")
    parser.add_argument("--prefix", default="", help="prepended to every joint name (a namespaced bringup)")
    parser.add_argument("--domain-id", type=int, default=0)
    parser.add_argument("--loopback", action="store_true", help="Cyclone on 127.0.0.1 only, multicast off")
    parser.add_argument("--joint-states", default="/franka/joint_states")
    parser.add_argument("--controller", default="joint_velocity_controller")
    parser.add_argument("--rate", type=float, default=1000.0, help="integration and publishing rate, Hz")
    parser.add_argument("--home", type=float, nargs=7, default=HOME, help="start pose, rad")
    args = parser.parse_args(argv)

    model = published_model(args.robot_model)
    arm_joints = [f"{args.prefix}{args.robot_model}_joint{i}" for i in range(1, 8)]
    fingers = [f"{args.prefix}{args.robot_model}_finger_joint{i}" for i in (1, 2)]
    order = [3, 0, 6, 1, 5, 2, 4]  # the arm's joints as the message lists them: not 1..7
    names = [arm_joints[i] for i in order[:4]] + fingers + [arm_joints[i] for i in order[4:]]
    options = loopback_options(args.domain_id) if args.loopback else CycloneOptions(domain_id=args.domain_id)
    graph = Ros2Graph(options)
    publisher = graph.writer(args.joint_states, JointState)
    commands = graph.reader(f"/{args.controller}/commands", Float64MultiArray)

    q, velocity = np.array(args.home, dtype=np.float64), np.zeros(7)
    state = {"reflex": False, "stop": False}

    def reflex(reason: str) -> None:
        if not state["reflex"]:
            print(f"reflex: {reason}", file=sys.stderr, flush=True)
        state["reflex"] = True

    signal.signal(signal.SIGUSR1, lambda *_: reflex("requested (SIGUSR1)"))
    signal.signal(signal.SIGUSR2, lambda *_: state.update(reflex=False))
    signal.signal(signal.SIGTERM, lambda *_: state.update(stop=True))
    q_min, q_max = np.asarray(model.q_min), np.asarray(model.q_max)
    period = 1.0 / args.rate
    next_tick, last = time.monotonic(), time.monotonic()
    announced = False
    while not state["stop"]:
        now = time.monotonic()
        command = newest_valid(commands)
        if command is not None and len(command.data) == 7 and np.all(np.isfinite(command.data)):
            velocity = np.array(command.data, dtype=np.float64)
        dt, last = now - last, now
        if state["reflex"]:
            velocity = np.zeros(7)
        q = q + velocity * dt
        outside = (q < q_min) | (q > q_max)
        if np.any(outside):
            reflex(f"joint {int(np.argmax(outside)) + 1} position limit")
            q = np.clip(q, q_min, q_max)
        measured = np.zeros(7) if state["reflex"] else velocity
        by_name = dict(zip(arm_joints, zip(q, measured, strict=True), strict=True))
        by_name.update({finger: (FINGER_OPENING_M, 0.0) for finger in fingers})
        publisher.write(
            JointState(
                header=Header(stamp=stamp(time.time()), frame_id=""),
                name=names,
                position=[float(by_name[n][0]) for n in names],
                velocity=[float(by_name[n][1]) for n in names],
                effort=[0.0] * len(names),
            )
        )
        if not announced:
            print(json.dumps({"ready": True, "joint_names": arm_joints, "domain_id": args.domain_id}), flush=True)
            announced = True
        next_tick += period
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_tick = time.monotonic()
    graph.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
