"""The `pandalab` command.

Subcommands are added by small `_add_*` functions; each imports what it needs lazily so that
starting one never loads the others (DESIGN.md: collecting never loads the trainer).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def runnable(tool: str = "pandalab") -> str:
    """How to run ``tool``, a program of this Python environment (``pandalab``, ``tensorboard``),
    from the current directory: its bare name when PATH finds this environment's copy (an activated
    venv), else its path, relative when it lies below the current directory (``.venv/bin/pandalab``
    in the repository root after `make demo`). Every command the tools print starts with this, so
    it runs as printed."""
    import pathlib
    import shutil

    script = pathlib.Path(sys.executable).parent / tool
    if not script.exists():
        return tool
    found = shutil.which(tool)
    if found and pathlib.Path(found).resolve() == script.resolve():
        return tool
    local = pathlib.Path(".venv", "bin", tool)  # the Makefile's venv, here (perhaps a link to this one)
    if local.exists() and local.resolve() == script.resolve():
        return str(local)
    try:
        return str(script.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(script)


def command_line(tool: str, *args: object) -> str:
    """A runnable, shell-quoted command line: `runnable` (tool) followed by ``args``."""
    import shlex

    return shlex.join([runnable(tool), *map(str, args)])


def _add_sim(subparsers: argparse._SubParsersAction) -> None:
    sim = subparsers.add_parser("sim", help="simulator tools")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    check = sim_sub.add_parser(
        "check",
        help="build each simulated backend, step it, save a PNG of each camera, print steps/s",
        description="Run this first on a new machine: it builds every simulated backend, steps it "
        "through the safety filter, saves one PNG per camera and prints the speeds.",
    )
    check.add_argument("--backend", default="all", help="a simulated backend (robosuite, pybullet) or all (default)")
    check.add_argument("--steps", type=int, default=100, help="control steps to time per backend (default 100)")
    check.add_argument("--size", type=int, default=84, help="camera image width and height, pixels (default 84)")
    check.add_argument("--out", default="sim_check", help="folder for the PNGs (default ./sim_check)")
    check.set_defaults(handler=_run_sim_check)


def _run_sim_check(args: argparse.Namespace) -> int:
    from sim.check import run_sim_check
    from sim.config import SIM_BACKENDS

    if args.backend not in ("all", *SIM_BACKENDS):
        print(f"pandalab sim check: --backend {args.backend!r}: one of all, {', '.join(SIM_BACKENDS)}", file=sys.stderr)
        return 2
    backends = list(SIM_BACKENDS) if args.backend == "all" else [args.backend]
    return run_sim_check(backends, steps=args.steps, image_size=args.size, out_dir=args.out)


def _add_collect(subparsers: argparse._SubParsersAction) -> None:
    collect = subparsers.add_parser("collect", help="run a collection session (foreground, or --detach)")
    collect.add_argument("--config", required=True, help="session YAML file (see configs/)")
    collect.add_argument("--detach", action="store_true", help="run as a background daemon writing a log file")
    collect.add_argument("--log", help="log file of the detached daemon (default: <data_root>/<session>.log)")
    collect.add_argument(
        "--fresh-explorer",
        action="store_true",
        help="when the session's explorer checkpoint is unusable, move it to quarantine/ and start a new explorer",
    )
    collect.add_argument(
        "--start-timeout",
        type=float,
        default=120.0,
        help="--detach: seconds to wait for the daemon to be collecting (default 120)",
    )
    collect.set_defaults(handler=_run_collect)


def _load_config_or_exit(path: str):
    from collector.config import ConfigError, load_session_config

    try:
        return load_session_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


EXIT_CONFIG = 2
"""Exit code of a refused config (every bad field named on stderr)."""
EXIT_START_REFUSED = 3
"""Exit code of a start refused before the arm moved: an address taken, the robot unreachable, the
session open in another collector, a damaged explorer checkpoint. Nothing was created on disk."""


def _run_collect(args: argparse.Namespace) -> int:
    config = _load_config_or_exit(args.config)
    if args.detach:
        return _detach(args, config)
    from collector.progress import ProgressDisplay
    from collector.session import Collector, StartRefused

    try:
        with ProgressDisplay() as display:
            code = Collector(config, on_progress=display, fresh_explorer=args.fresh_explorer).run()
    except StartRefused as refused:
        print(f"collect refused: {refused}", file=sys.stderr)
        return EXIT_START_REFUSED
    return code


def _detach(args: argparse.Namespace, config) -> int:
    """Start the daemon in the background and wait until it is collecting (it answers ``status``
    with its own pid) or has failed (then its one-line reason and exit code are passed on)."""
    import pathlib
    import subprocess
    import time

    from collector.control import send_request

    session = config.session_id or "session"
    log_path = pathlib.Path(args.log or config.data_root / f"{session}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start_offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pandalab", "collect", "--config", args.config]
            + (["--fresh-explorer"] if args.fresh_explorer else []),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + args.start_timeout
    while True:
        code = process.poll()
        if code is not None:
            reason = _last_line(log_path, start_offset) or "no output"
            print(f"collector failed to start (exit {code}): {reason} [log {log_path}]", file=sys.stderr)
            return code or 1
        try:
            status = send_request(config.control_address, "status", timeout_s=0.5)
        except TimeoutError:
            status = {}
        if status.get("pid") == process.pid and status.get("state") not in (None, "starting"):
            break
        if time.monotonic() > deadline:
            print(
                f"collector pid {process.pid} did not answer on {config.control_address} within "
                f"{args.start_timeout:.0f} s; it is still running: see {log_path}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.2)
    print(f"collector started: pid {process.pid}, {status['state']}, log {log_path}, control {config.control_address}")
    print(f"watch it with: {command_line('pandalab', 'ctl', 'status', '--config', args.config)}")
    return 0


def _last_line(path, offset: int) -> str:
    """The last non-empty line written to ``path`` after ``offset`` (a failed daemon's reason)."""
    with open(path, "rb") as log:
        log.seek(offset)
        lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


CTL_COMMANDS = {
    "status": (
        "print one JSON snapshot of the collector",
        "Print one JSON snapshot of a running collector: state (starting, resetting, running, training, paused, "
        "held, stopping, stopped), hold_reason, episode and step, recorded steps, step rate, stop condition, "
        "filter interventions, the last safety incident, free disk. Exit 1 when no collector answers.",
    ),
    "watch": (
        "stream telemetry, one JSON line per update, until Ctrl-C",
        "Subscribe to the collector's telemetry (the same fields as status, a few times per second) and print "
        "each update as one JSON line until Ctrl-C (exit 0). Exit 1 when nothing arrives within --timeout. "
        "With --rerun: into a Rerun viewer instead (spawned, or the one at --connect), or an .rrd file (--save).",
    ),
    "pause": (
        "stop the arm and hold it mid-episode until resume",
        "Stop the arm (within its acceleration limits) and hold it where it is, mid-episode; the episode "
        "continues after `resume`. The reply is the new status (state paused).",
    ),
    "resume": (
        "continue after pause, an e-stop or a hold",
        "Continue after `pause`, `estop` or a hold (disk, writer, repeated violations, no reset path) once its "
        "cause is fixed. The reply is the new status.",
    ),
    "stop": (
        "finish the current episode, move the arm home and exit",
        "Finish the current episode (state stopping), reset the arm to home and exit 0, like Ctrl-C or SIGTERM.",
    ),
    "estop": (
        "software e-stop: stop the arm now, end the episode, hold until resume",
        "Stop the arm at once (within its acceleration limits), end the episode as operator_stop and hold "
        "until `resume`. Not a substitute for the robot's hardware e-stop button.",
    ),
}
"""`pandalab ctl` subcommands: (one-line help, description)."""


def _add_ctl(subparsers: argparse._SubParsersAction) -> None:
    ctl = subparsers.add_parser(
        "ctl",
        help="talk to a running collector over ZMQ (status, watch, pause, resume, stop, estop)",
        description="Talk to a running collector. Each subcommand has its own --help.",
    )
    where = argparse.ArgumentParser(add_help=False)
    addresses = where.add_mutually_exclusive_group()
    addresses.add_argument("--config", help="the session's YAML file (its control and telemetry addresses)")
    addresses.add_argument(
        "--address",
        help="control address (default tcp://127.0.0.1:5555); for watch: the telemetry address "
        "(default tcp://127.0.0.1:5556)",
    )
    addresses.add_argument(
        "--fleet",
        metavar="STATE",
        help="every worker of a `pandalab fleet`: its state file (<data_root>/<session>.fleet.json) or the data "
        "root (its newest fleet); not for watch",
    )
    where.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for an answer (default 3)")
    ctl_sub = ctl.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, description) in CTL_COMMANDS.items():
        command = ctl_sub.add_parser(name, parents=[where], help=summary, description=description)
        if name not in ("status", "watch"):
            command.add_argument("--reason", default="", help="reason logged with the command (events.jsonl)")
        if name == "watch":
            _add_watch_rerun(command)
    ctl.set_defaults(handler=_run_ctl)


def _add_watch_rerun(watch: argparse.ArgumentParser) -> None:
    """`ctl watch --rerun [--connect ADDR | --save FILE.rrd]` (pandalab/view.py)."""
    watch.add_argument("--rerun", action="store_true", help="stream the telemetry into Rerun (spawns the viewer)")
    sink = watch.add_mutually_exclusive_group()
    sink.add_argument(
        "--connect",
        metavar="ADDR",
        help="with --rerun: a running viewer instead: HOST:PORT (`rerun` listens on 127.0.0.1:9876) "
        "or a rerun+http:// URL",
    )
    sink.add_argument("--save", metavar="FILE.rrd", help="with --rerun: write an .rrd file instead (headless machines)")
    watch.add_argument("--count", type=int, help=argparse.SUPPRESS)  # stop after N messages (tests)


def _run_ctl(args: argparse.Namespace) -> int:
    import json

    from collector.control import send_request, subscribe_telemetry

    if args.fleet:
        from pandalab.fleet import run_fleet_ctl

        return run_fleet_ctl(args)
    if args.config:
        config = _load_config_or_exit(args.config)
        control, telemetry = config.control_address, config.telemetry_address
    else:
        from collector.config import check_zmq_address

        control = args.address or "tcp://127.0.0.1:5555"
        telemetry = args.address or "tcp://127.0.0.1:5556"
        try:
            check_zmq_address(control)
        except ValueError as error:
            print(f"pandalab ctl: --address {error}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        if args.command == "watch" and (args.rerun or args.connect or args.save):
            from pandalab.view import watch

            return watch(telemetry, args.timeout, args.save, args.connect, args.count)
        if args.command == "watch":
            while True:
                print(json.dumps(subscribe_telemetry(telemetry, args.timeout)), flush=True)
        reason = getattr(args, "reason", "")
        fields = {"reason": reason} if reason else {}
        reply = send_request(control, args.command, args.timeout, **fields)
    except TimeoutError as error:
        print(error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1


def _add_fleet(subparsers: argparse._SubParsersAction) -> None:
    fleet = subparsers.add_parser(
        "fleet",
        help="run N simulated collectors at once as Ray actors (a local Ray, or a cluster at --address)",
        description="Run N simulated collectors, each its own session of the config (<session_id>_w<k>, seed + k, "
        "its own control and telemetry addresses) under the config's data_root, as Ray actors; a worker whose "
        "process dies is restarted and its session resumes. Operate them all with `pandalab ctl ... --fleet "
        "<data_root>/<session_id>.fleet.json`. Ctrl-C: every worker finishes its episode and stops.",
    )
    fleet.add_argument("--config", required=True, help="session YAML file (a simulated backend)")
    fleet.add_argument("--workers", type=int, required=True, help="collectors to run")
    fleet.add_argument("--address", help="a Ray cluster (auto, HOST:PORT or ray://HOST:PORT); default: a local Ray")
    fleet.add_argument(
        "--max-restarts", type=int, default=3, help="restarts per worker after its process died (default 3)"
    )
    fleet.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray CPUs reserved per worker (default 1)")
    fleet.add_argument(
        "--report-every", type=float, default=10.0, help="seconds between progress lines (default 10; 0: none)"
    )
    fleet.set_defaults(handler=_run_fleet)


def _run_fleet(args: argparse.Namespace) -> int:
    from pandalab.fleet import run_fleet

    return run_fleet(
        args.config, args.workers, args.address, args.max_restarts, args.cpus_per_worker, args.report_every
    )


def _add_data(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="summarise, check, render, plot and export recorded sessions")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    info = data_sub.add_parser("info", help="sessions, episodes, recorded steps, outcomes, size, damage")
    info.add_argument("paths", nargs="+", help="session directories or data roots")
    info.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
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
    view = data_sub.add_parser(
        "view",
        help="show episodes in Rerun: cameras, joint series, tool-tip path, cube pose, safety events",
        description="Show one episode (or every readable one) of a session in Rerun (rerun-sdk), on the recorded "
        "time line: camera images, q, dq, command and action as time series, the tool-tip path in 3-D, the cube "
        "pose (simulation), and the session's safety events as markers (pandalab/view.py lists the entities). "
        "Spawns the Rerun viewer, or with --save writes an .rrd file instead (headless machines; open it with "
        "`rerun FILE.rrd`). A damaged episode is skipped with a warning.",
    )
    view.add_argument("session", help="session directory")
    view.add_argument("--episode", type=int, help="episode index (default: every readable episode)")
    view.add_argument("--save", metavar="FILE.rrd", help="write a Rerun recording to FILE.rrd instead of a viewer")
    export = data_sub.add_parser(
        "export",
        help="write a session in another format: rosbag2 (ROS 2 bag), lerobot (LeRobotDataset v3.0), minari",
        description="Write one session's episodes in another tool's format. rosbag2: joint states, commands, "
        "tool tip and camera images as standard ROS 2 messages stamped with the recorded times "
        "(pandalab/exports/rosbag2.py lists the topics). lerobot: a LeRobotDataset v3.0 (Parquet + mp4; "
        "pandalab/exports/lerobot.py lists the features). minari: a Minari dataset for one --task, rewards "
        "relabelled as for training, with the evaluation environment (pandalab/exports/minari.py). "
        "A damaged episode is skipped with a warning; an existing output is never overwritten.",
    )
    export.add_argument("session", help="session directory")
    from pandalab.exports import EXPORTS  # the registry only: each format's module loads when it runs

    export.add_argument("--to", required=True, help=f"format: {', '.join(EXPORTS)}")
    export.add_argument("--storage", help="rosbag2 storage: mcap (default) or sqlite3")
    export.add_argument("--task", help="minari: the task the rewards are relabelled for (reach:0, push, flip:red, ...)")
    export.add_argument(
        "--dataset-id", help="minari: the dataset id, (namespace/)name-vN (default pandalab/<session>-<task>-v0)"
    )
    export.add_argument(
        "--out",
        help="output path (default: <session>/../<session name>.<format>); minari: the Minari datasets root the "
        "dataset goes into as <root>/<dataset id> (default $MINARI_DATASETS_PATH, else ~/.minari/datasets)",
    )
    data.set_defaults(handler=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    if args.data_command == "export":  # before pandalab.data: an export loads only its own format
        from pandalab.exports import ExportError, export_session

        given = {"storage": args.storage, "task": args.task, "dataset_id": args.dataset_id}
        options = {name: value for name, value in given.items() if value is not None}
        out = args.out
        if args.to == "minari":  # --out is Minari's datasets root; the dataset is <root>/<dataset id>
            from pandalab.exports.minari import cli_out

            out, options["dataset_id"] = cli_out(args.session, args.out, args.task, args.dataset_id)
        try:
            result = export_session(
                args.session, args.to, out, warn=lambda line: print(f"warning: {line}", file=sys.stderr), **options
            )
        except ExportError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(result.summary())
        return 0
    if args.data_command == "view":  # before pandalab.data: viewing loads only rerun and the store
        from pandalab.view import ViewError, view

        try:
            print(view(args.session, args.episode, args.save))
        except ViewError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    from pandalab import data as datatools

    try:
        if args.data_command == "info":
            datatools.info(args.paths, as_json=args.json)
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


class _Renamed(argparse.Action):
    """An old spelling of a flag, still accepted (hidden from --help) with a one-line note on stderr."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"note: {option_string} is now {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


DEVICE_HELP = "auto (default: CUDA when present, else CPU), cpu, cuda or cuda:N"


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train an offline policy on recorded sessions for a task chosen now",
        description="Relabel the sessions' transitions for TASK, train ALGO with atomic checkpoints, "
        "TensorBoard logs and periodic simulated evaluation. Re-running the same command (or --resume) "
        "continues from the last checkpoint.",
    )
    train.add_argument("--data", nargs="+", required=True, help="session directories or data roots")
    train.add_argument("--task", help="reach:K, push, flip:COLOUR, push+flip:COLOUR (default reach:0)")
    train.add_argument("--obs", default="proprio", choices=["proprio", "proprio+object", "image"])
    train.add_argument("--algo", default="td3bc", help="td3bc (default), bcq, drqbc, iql, cql or bc")
    train.add_argument(
        "--updates",
        type=int,
        default=100_000,
        help="gradient updates in total (default 100000; a resumed run continues to this)",
    )
    train.add_argument("--steps", type=int, dest="updates", action=_Renamed, new="--updates")
    train.add_argument(
        "--out",
        help="run directory (default runs/<algo>_<task>_<obs>_<seed>); with --seeds/--tasks the folder of the "
        "agents' run directories",
    )
    train.add_argument(
        "--resume", nargs="?", const=True, default=None, help="continue from the run's checkpoint (or this one)"
    )
    train.add_argument("--eval-every", type=int, help="updates between evaluations (default 10000; 0: at the end)")
    train.add_argument("--eval-episodes", type=int, help="episodes per evaluation (default 5; 0: none)")
    train.add_argument(
        "--eval-steps",
        type=int,
        help="control steps per evaluation episode (default: the data's episode_steps, <= 200)",
    )
    train.add_argument("--checkpoint-every", type=int, help="updates between checkpoints (default 5000)")
    train.add_argument("--seed", type=int, help="seed (default 0)")
    train.add_argument(
        "--seeds",
        help="train several seeds at once, stacked in one process, e.g. 0,1,2,3,4 (td3bc, bc, iql, bcq on "
        "proprio observations; one run directory per seed, as --seed names it, or under --out)",
    )
    train.add_argument(
        "--tasks", help="train several relabelled tasks of the same data at once, stacked, e.g. reach:0,reach:1"
    )
    train.add_argument("--device", default="auto", help=DEVICE_HELP)
    train.add_argument("--batch-size", type=int, help="batch size (default: the algorithm's)")
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.add_argument("--camera", help="camera of image observations (default: the first recorded)")
    train.add_argument("--upsample-alpha", type=float, help="share of batches from successful transitions")
    train.add_argument(
        "--reward-scale", type=float, help="factor on rewards (default 1000 / spread of episode returns, as IQL)"
    )
    train.add_argument(
        "--algo-config", help="JSON overrides of the algorithm config, e.g. '{\"hidden_dims\": [64, 64]}'"
    )
    train.add_argument("--no-progress", action="store_true", help="no live progress line")
    train.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from pandalab.train import main_train

    return main_train(args)


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="score a training checkpoint in simulation")
    ev.add_argument("--checkpoint", required=True, help="checkpoint.pt, or a run directory")
    ev.add_argument("--episodes", type=int, default=10, help="episodes (default 10)")
    ev.add_argument(
        "--episode-steps", type=int, help="control steps per episode (default: the run's evaluation length)"
    )
    ev.add_argument("--steps", type=int, dest="episode_steps", action=_Renamed, new="--episode-steps")
    ev.add_argument("--video", help="write an mp4 of the first episode here")
    ev.add_argument("--no-progress", action="store_true", help="no line per episode on stderr")
    ev.add_argument("--device", default="auto", help=DEVICE_HELP)
    ev.add_argument("--backend", help="simulator (default: the one the data came from)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the start-pose perturbations (default 0)")
    ev.add_argument("--algo", help="refuse a checkpoint of another algorithm")
    ev.add_argument("--obs", help="refuse a checkpoint of another observation kind")
    ev.add_argument("--json", help="also write the full result (per episode) to this JSON file")
    ev.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from pandalab.train import main_eval

    return main_eval(args)


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="collect in simulation, train TD3+BC and BC on reach:0, evaluate, print a table"
    )
    demo.add_argument("--config", default="configs/demo.yaml", help="collection config (default configs/demo.yaml)")
    demo.add_argument("--out", default="out/demo", help="folder for the runs (default out/demo)")
    demo.add_argument("--updates", type=int, default=None, help="gradient updates per algorithm (default 10000)")
    demo.add_argument("--steps", type=int, dest="updates", action=_Renamed, new="--updates")
    demo.add_argument("--eval-episodes", type=int, default=None, help="evaluation episodes (default: the demo's)")
    demo.add_argument(
        "--algos", help="comma-separated learners (default td3bc,bc; also iql, cql, bcq: each adds a minute or two)"
    )
    demo.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from pandalab.demo import main_demo

    return main_demo(args)


def _add_bridge(subparsers: argparse._SubParsersAction) -> None:
    bridge = subparsers.add_parser("bridge", help="the hardware bridge: serve an arm, check a cell")
    bridge_sub = bridge.add_subparsers(dest="bridge_command", required=True)
    serve = bridge_sub.add_parser(
        "serve",
        help="own the arm and serve it to collectors (run on the robot PC)",
        description="Connect the arm named in the config and serve it over ZMQ until SIGINT/SIGTERM; every "
        "command is filtered again here and a watchdog stops the arm when commands stop.",
    )
    serve.add_argument("--config", required=True, help="bridge config YAML (configs/bridge_sim.yaml, ...)")
    serve.set_defaults(handler=_run_bridge_serve)
    check = bridge_sub.add_parser(
        "check",
        help="connect to a bridge: robot, versions, state, limits, state rate, latency; --move to test motion",
        description="Run first on a new cell.  Without --move nothing moves.",
    )
    check.add_argument("--server", default="tcp://127.0.0.1:5600", help="bridge address (default tcp://127.0.0.1:5600)")
    check.add_argument("--samples", type=int, default=200, help="state requests to time (default 200)")
    check.add_argument("--move", action="store_true", help="move each joint 0.05 rad at 0.1 rad/s and back")
    check.add_argument("--yes", action="store_true", help="with --move: do not ask for confirmation")
    check.set_defaults(handler=_run_bridge_check)


def _run_bridge_serve(args: argparse.Namespace) -> int:
    import signal

    from robot_drivers.base import DriverFault
    from robot_drivers.bridge.config import BridgeConfigError, load_bridge_config
    from robot_drivers.bridge.server import BridgeServer

    try:
        config = load_bridge_config(args.config)
    except BridgeConfigError as error:
        print(error, file=sys.stderr)
        return 2
    stopping = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.append(True))
    try:
        return BridgeServer(config).serve(should_stop=lambda: bool(stopping))
    except DriverFault as fault:
        print(f"pandalab bridge serve: {fault.message}", file=sys.stderr)
        return 3


def _run_bridge_check(args: argparse.Namespace) -> int:
    from robot_drivers.bridge.check import run_bridge_check

    return run_bridge_check(args.server, samples=args.samples, move=args.move, assume_yes=args.yes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pandalab", description="Robot-lab data collection for the Franka Panda.")
    subparsers = parser.add_subparsers(dest="tool", required=True)
    _add_collect(subparsers)
    _add_ctl(subparsers)
    _add_data(subparsers)
    _add_sim(subparsers)
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_demo(subparsers)
    _add_bridge(subparsers)
    _add_fleet(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every non-zero exit says why on stderr in one line; an unexpected error
    also writes its traceback to a file named in that line (for a bug report)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what was run: `train` prints it as the command that resumes the run
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped (`| head`): not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # the interpreter flushes stdout at exit: quietly
        return 141
    except Exception as error:  # the last resort: one line for the operator, the traceback kept
        import tempfile
        import traceback

        summary = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        try:
            with tempfile.NamedTemporaryFile(
                "w", prefix="pandalab-error-", suffix=".txt", delete=False, dir=tempfile.gettempdir()
            ) as report:
                traceback.print_exc(file=report)
            where = f" (traceback in {report.name})"
        except OSError:
            where = ""
        print(f"pandalab {args.tool}: unexpected error: {summary}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
