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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pandalab", description="Robot-lab data collection for the Franka Panda.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_sim(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
