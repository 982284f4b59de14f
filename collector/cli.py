"""The `pandalab` command.

Subcommands are added by small `_add_*` functions; each imports what it needs lazily so that
starting one never loads the others (DESIGN.md: collecting never loads the trainer).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def _add_sim(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser("sim", help="simulator tools")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    check = sim_sub.add_parser(
        "check",
        help="build each simulated backend, step it, save a PNG of each camera, print steps/s",
        description="Run this first on a new machine: it builds every simulated backend, steps it "
        "through the safety filter, saves one PNG per camera and prints the speeds.",
    )
    check.add_argument("--backend", choices=["all", "robosuite", "pybullet"], default="all")
    check.add_argument("--steps", type=int, default=100, help="control steps to time per backend (default 100)")
    check.add_argument("--size", type=int, default=84, help="camera image width and height, pixels (default 84)")
    check.add_argument("--out", default="sim_check", help="folder for the PNGs (default ./sim_check)")
    check.set_defaults(handler=_run_sim_check)


def _run_sim_check(args: argparse.Namespace) -> int:
    from sim.check import run_sim_check

    backends = ["robosuite", "pybullet"] if args.backend == "all" else [args.backend]
    return run_sim_check(backends, steps=args.steps, image_size=args.size, out_dir=args.out)


def _add_collect(subparsers: argparse._SubParsersAction) -> None:
    collect = subparsers.add_parser("collect", help="run a collection session (foreground, or --detach)")
    collect.add_argument("--config", required=True, help="session YAML file (see configs/)")
    collect.add_argument("--detach", action="store_true", help="run as a background daemon writing a log file")
    collect.add_argument("--log", help="log file of the detached daemon (default: <data_root>/<session>.log)")
    collect.set_defaults(handler=_run_collect)


def _load_config_or_exit(path: str):
    from collector.config import ConfigError, load_session_config

    try:
        return load_session_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None


def _run_collect(args: argparse.Namespace) -> int:
    config = _load_config_or_exit(args.config)
    if args.detach:
        return _detach(args, config)
    from collector.progress import ProgressDisplay
    from collector.session import Collector

    with ProgressDisplay() as display:
        code = Collector(config, on_progress=display).run()
    return code


def _detach(args: argparse.Namespace, config) -> int:
    import pathlib
    import subprocess

    session = config.session_id or "session"
    log_path = pathlib.Path(args.log or config.data_root / f"{session}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "collect", "--config", args.config],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"collector started: pid {process.pid}, log {log_path}, control {config.control_address}")
    print(f"watch it with: pandalab ctl status --address {config.control_address}")
    return 0


def _add_ctl(subparsers: argparse._SubParsersAction) -> None:
    ctl = subparsers.add_parser("ctl", help="talk to a running collector over ZMQ")
    ctl.add_argument("command", choices=["status", "pause", "resume", "stop", "estop", "watch"])
    where = ctl.add_mutually_exclusive_group()
    where.add_argument("--config", help="the session's YAML file (its control/telemetry addresses)")
    where.add_argument("--address", help="control address (default tcp://127.0.0.1:5555); watch: telemetry")
    ctl.add_argument("--reason", default="", help="reason logged with the command")
    ctl.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer")
    ctl.set_defaults(handler=_run_ctl)


def _run_ctl(args: argparse.Namespace) -> int:
    import json

    from collector.control import send_request, subscribe_telemetry

    if args.config:
        config = _load_config_or_exit(args.config)
        control, telemetry = config.control_address, config.telemetry_address
    else:
        control = args.address or "tcp://127.0.0.1:5555"
        telemetry = args.address or "tcp://127.0.0.1:5556"
    try:
        if args.command == "watch":
            while True:
                print(json.dumps(subscribe_telemetry(telemetry, args.timeout)), flush=True)
        fields = {"reason": args.reason} if args.reason else {}
        reply = send_request(control, args.command, args.timeout, **fields)
    except TimeoutError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def _add_data(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="summarise, check, render and plot recorded sessions")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="sessions, episodes, transitions, outcomes, size")
    info.add_argument("paths", nargs="+", help="session directories or data roots")
    verify = data_sub.add_parser("verify", help="checksums and schema of every file; exit 1 on damage")
    verify.add_argument("paths", nargs="+", help="session directories or data roots")
    video = data_sub.add_parser("video", help="an mp4 of one camera of one episode")
    video.add_argument("session", help="session directory")
    video.add_argument("--episode", type=int, required=True, help="episode index")
    video.add_argument("--camera", help="camera name (default: the first recorded)")
    video.add_argument("--out", help="output file (default: <session>/episode_<N>_<camera>.mp4)")
    video.add_argument("--fps", type=float, default=20.0, help="frames per second (default 20, the control rate)")
    coverage = data_sub.add_parser("coverage", help="PNG of tool-tip and cube positions (seed 003 Fig. 5)")
    coverage.add_argument("paths", nargs="+", help="session directories or data roots")
    coverage.add_argument("--out", default="coverage.png", help="PNG to write (default coverage.png)")
    data.set_defaults(handler=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from collector import datatools

    try:
        if args.data_command == "info":
            datatools.info(args.paths)
        elif args.data_command == "verify":
            return 0 if datatools.verify(args.paths) else 1
        elif args.data_command == "video":
            print(datatools.video(args.session, args.episode, args.out, args.camera, args.fps))
        else:
            datatools.coverage(args.paths, args.out)
    except (datatools.DataToolError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pandalab", description="Robot-lab data collection for the Franka Panda.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_collect(subparsers)
    _add_ctl(subparsers)
    _add_data(subparsers)
    _add_sim(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
