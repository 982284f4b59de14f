"""`pandalab fleet`: many simulated collectors at once, as Ray actors (a local Ray, or a cluster).

Each worker is one ordinary collector session (`collector.session.Collector`) running in its own Ray
actor process, derived from one session config (`worker_configs`):

- session ``<session_id>_w<k>`` under the same ``data_root`` (shared storage on a cluster), seed
  ``seed + k``, and its own control and telemetry addresses: ``tcp://HOST:PORT`` moves by ``k``
  times a stride that keeps every worker's two ports apart (5555/5556 -> 5557/5558 -> ...), an
  ``ipc://PATH`` gets ``_w<k>`` appended;
- the worker writes its own session; only small status dictionaries and paths cross Ray (never a
  frame or an episode), so Ray's object store carries no data;
- rendering: each actor is its own process (no fork of a live EGL context) whose ``runtime_env``
  sets ``MUJOCO_GL`` / ``PYOPENGL_PLATFORM`` to ``egl`` before the simulator is imported there;
- a worker whose process dies (kill -9, out of memory, a segfault) is restarted by Ray (actor
  ``max_restarts``), and the driver starts its session again: the store salvages the interrupted
  episode and the numbering continues, exactly as after `pandalab collect` is run again after a crash.
  A worker that *returns* (its stop condition, ``ctl stop``, a refused start, a failure it reports) is
  not restarted.

The driver writes ``<data_root>/<session_id>.fleet.json`` (`FleetState`): every worker's session,
seed, addresses as reachable from elsewhere (a wildcard host becomes the worker's node IP), pid,
node and restarts. ``pandalab ctl status|pause|resume|stop|estop --fleet FILE_OR_DATA_ROOT`` sends
the request to every worker listed there (`fleet_request`); ``stop`` also leaves
``<session_id>.fleet.stop`` beside it, so that a worker restarting at that moment is not started
again. Only simulated backends form a fleet: a fleet of real arms is refused.

Ray is imported only by `run_fleet`; `fleet_request` (``ctl``) never loads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

GL_ENV = {"MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
"""Headless rendering in every worker process (PLATFORM.md: MuJoCo needs it before it is imported)."""
STATE_SUFFIX = ".fleet.json"
STOP_SUFFIX = ".fleet.stop"
DEFAULT_MAX_RESTARTS = 3
"""Restarts per worker after its process died, before the driver gives that worker up."""
REPORT_EVERY_S = 10.0
RETRY_S = 1.0
"""While a worker restarts, how often the driver asks it again, s."""
WILDCARD_HOSTS = ("*", "0.0.0.0")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
EXIT_CONFIG = 2
EXIT_START_REFUSED = 3


class FleetError(ValueError):
    """Bad input for a fleet (a real arm, a bad worker count, an address out of range, no state
    file); the message is one line for the operator."""


class Unreachable(FleetError):
    """A Ray cluster address nothing answers on."""


# --------------------------------------------------------------------------------- worker configs


_TCP = re.compile(r"^tcp://(?P<host>.+):(?P<port>\d+)$")


def _port(address: str) -> int | None:
    match = _TCP.match(address)
    return int(match.group("port")) if match else None


def worker_address(address: str, index: int, stride: int) -> str:
    """Worker ``index``'s copy of a control or telemetry address: the TCP port moved by
    ``index * stride``, or ``_w<index>`` appended to an ``ipc://`` path."""
    match = _TCP.match(address)
    if match:
        port = int(match.group("port")) + index * stride
        if port > 65535:
            raise FleetError(f"{address}: worker {index} would need port {port} (> 65535); choose lower ports")
        return f"tcp://{match.group('host')}:{port}"
    return f"{address}_w{index}"


def port_stride(control: str, telemetry: str) -> int:
    """How far apart consecutive workers' ports lie: one more than the distance between the two
    ports, so that no worker's control port is another's telemetry port."""
    ports = [p for p in (_port(control), _port(telemetry)) if p is not None]
    return abs(ports[0] - ports[1]) + 1 if len(ports) == 2 else 1


def fleet_id(config) -> str:
    """The fleet's name: the config's session id, or the start time when it has none (as `collect`)."""
    return config.session_id or time.strftime("%Y%m%d-%H%M%S")


def worker_configs(config, workers: int, base: str | None = None) -> list:
    """The `SessionConfig` of each of ``workers`` workers (module docstring), each validated as a
    config file would be; `FleetError` (one line) when the config cannot form a fleet."""
    from collector.config import MAX_SEED, ConfigError, parse_session_config

    if not config.simulated:
        raise FleetError(
            f"robot.backend {config.robot.backend!r} is not simulated: a fleet runs simulated collectors only "
            "(run one `pandalab collect` per real arm)"
        )
    if workers < 1:
        raise FleetError(f"--workers {workers}: at least 1")
    if config.seed + workers - 1 > MAX_SEED:
        raise FleetError(f"seed {config.seed} + {workers - 1} workers exceeds {MAX_SEED}")
    base = base or fleet_id(config)
    stride = port_stride(config.control_address, config.telemetry_address)
    data_root = pathlib.Path(config.data_root).expanduser().absolute()  # the workers' cwd may differ
    out = []
    for k in range(workers):
        data = config.model_dump(mode="json")
        addresses = {}
        for field in ("control_address", "telemetry_address"):
            address = worker_address(data[field], k, stride)
            if address.startswith("ipc://") and not address.startswith("ipc:///"):
                address = "ipc://" + str(pathlib.Path(address[len("ipc://") :]).absolute())
            addresses[field] = address
        data |= addresses | {"session_id": f"{base}_w{k}", "seed": config.seed + k, "data_root": str(data_root)}
        try:
            out.append(parse_session_config(data, source=f"worker {k}"))
        except ConfigError as error:
            raise FleetError(" ".join(str(error).split())) from None
    return out


# ------------------------------------------------------------------------------------ state file


def state_path(data_root: pathlib.Path | str, base: str) -> pathlib.Path:
    return pathlib.Path(data_root) / f"{base}{STATE_SUFFIX}"


def stop_path(state: pathlib.Path) -> pathlib.Path:
    return state.with_name(state.name[: -len(STATE_SUFFIX)] + STOP_SUFFIX)


def write_state(path: pathlib.Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically (a reader sees the old or the new one, whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def find_state(where: str | pathlib.Path) -> pathlib.Path:
    """The fleet state file ``where`` names: the file itself, or a data root holding one or more
    (the most recently started fleet's). `FleetError` when there is none."""
    path = pathlib.Path(where)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob(f"*{STATE_SUFFIX}"), key=_started_at)
        if found:
            return found[-1]
        raise FleetError(f"--fleet {where}: no *{STATE_SUFFIX} here (does a `pandalab fleet` write to this data root?)")
    raise FleetError(f"--fleet {where}: no such file or folder")


def _started_at(path: pathlib.Path) -> float:
    try:
        return float(json.loads(path.read_text()).get("started_at", 0.0))
    except (OSError, ValueError, AttributeError):
        return 0.0


def read_state(path: pathlib.Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FleetError(f"{path}: not a readable fleet state file: {error}") from None
    if not isinstance(state, dict) or not isinstance(state.get("workers"), list):
        raise FleetError(f"{path}: not a fleet state file (no workers list)")
    return state


# ---------------------------------------------------------------------------------- ctl --fleet


def fleet_request(where: str | pathlib.Path, command: str, timeout_s: float = 3.0, **fields: Any) -> dict[str, Any]:
    """`pandalab ctl COMMAND --fleet WHERE`: the request sent to every worker listed in the fleet's
    state file, at once. Returns ``{"ok": every worker answered ok, "fleet", "state_file", "workers":
    [{"worker", "session", "control_address", "ok", "reply" | "error"}], totals}``; `FleetError` when
    there is no state file."""
    from collector.control import send_request

    path = find_state(where)
    state = read_state(path)
    if command == "stop":  # a worker restarting right now must not start again (the driver reads this)
        with contextlib.suppress(OSError):
            stop_path(path).write_text(json.dumps({"time": time.time(), "reason": fields.get("reason", "")}) + "\n")

    def ask(worker: dict[str, Any]) -> dict[str, Any]:
        row = {k: worker.get(k) for k in ("worker", "session", "control_address")}
        try:
            reply = send_request(worker["control_address"], command, timeout_s, **fields)
        except (TimeoutError, KeyError, TypeError) as error:
            return row | {"ok": False, "error": str(error) or "no control_address"}
        return row | {"ok": bool(reply.get("ok")), "reply": reply}

    workers = state["workers"]
    with ThreadPoolExecutor(max_workers=max(1, min(32, len(workers)))) as pool:
        rows = list(pool.map(ask, workers))
    replies = [row["reply"] for row in rows if row.get("ok")]
    return {
        "ok": bool(rows) and all(row["ok"] for row in rows),
        "fleet": state.get("fleet"),
        "state_file": str(path),
        "driver_state": state.get("state"),
        "answered": len(replies),
        "workers": rows,
        "episodes": sum(int(r.get("episodes") or 0) for r in replies),
        "steps": sum(int(r.get("steps") or 0) for r in replies),
        "step_rate_hz": round(sum(float(r.get("step_rate_hz") or 0.0) for r in replies), 2),
    }


def run_fleet_ctl(args) -> int:
    """`pandalab ctl COMMAND --fleet STATE`: print the fleet's answers as one JSON document; exit 0
    when every worker answered ok, 1 when one did not, 2 on bad input (one line)."""
    if args.command == "watch":
        print(
            "pandalab ctl watch: one collector at a time; give a worker's --address (ctl status --fleet lists them)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    reason = getattr(args, "reason", "")
    try:
        reply = fleet_request(args.fleet, args.command, args.timeout, **({"reason": reason} if reason else {}))
    except FleetError as error:
        print(f"pandalab ctl: {error}", file=sys.stderr)
        return EXIT_CONFIG
    print(json.dumps(reply, indent=2))
    return 0 if reply["ok"] else 1


# ------------------------------------------------------------------------------ the Ray actor


class CollectorWorker:
    """One worker: a collector session in this actor's own process (wrapped by `ray.remote` in
    `Fleet.run`, with ``max_concurrency=4`` so that `info`, `status` and `stop` are answered while
    `run` records)."""

    def __init__(self, index: int, config_json: str) -> None:
        for name, value in GL_ENV.items():  # also in the actor's runtime_env; set before any simulator import
            os.environ.setdefault(name, value)
        self.index = index
        self.config_json = config_json
        self.collector = None
        self.stop_requested = False
        self._running = threading.Lock()
        self._last_result: dict[str, Any] | None = None

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "pid": os.getpid(),
            "node_ip": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname(),
            "reconstructed": ray.get_runtime_context().was_current_actor_reconstructed,
        }

    def run(self) -> dict[str, Any]:
        """Record (or resume) this worker's session until its stop condition or a stop request;
        returns a small summary, never data. A second call while one runs (the driver asking again
        after a lost connection) waits for the running one and returns its summary."""
        if not self._running.acquire(blocking=False):
            with self._running:
                return dict(self._last_result or {"worker": self.index, "exit": 1, "error": "no result"})
        try:
            self._last_result = self._run()
            return self._last_result
        finally:
            self._running.release()

    def _run(self) -> dict[str, Any]:
        from collector.config import parse_session_config
        from collector.session import Collector, StartRefused

        config = parse_session_config(json.loads(self.config_json), source=f"worker {self.index}")
        collector = Collector(config, install_signal_handlers=False)  # not the main thread: no signals here
        self.collector = collector
        if self.stop_requested:
            collector.lifecycle.request_stop()
        started = time.monotonic()
        try:
            code = collector.run()
            error = None
        except StartRefused as refused:
            code, error = EXIT_START_REFUSED, f"start refused: {refused}"
        return {
            "worker": self.index,
            "exit": code,
            "error": error,
            "episodes": collector.episodes,
            "steps": collector.steps,
            "elapsed_s": time.monotonic() - started,
            "session_dir": str(pathlib.Path(config.data_root) / collector.session_id),
        }

    def status(self) -> dict[str, Any] | None:
        collector = self.collector
        if collector is None or collector.store is None:
            return None
        try:
            return collector.status()
        except Exception:  # a snapshot taken mid-change: the next report has it
            return None

    def stop(self, estop: bool = False) -> None:
        self.stop_requested = True
        if self.collector is not None:
            if estop:
                self.collector.lifecycle.request_estop()
            else:
                self.collector.lifecycle.request_stop()


# ------------------------------------------------------------------------------------ the driver


def reachable(address: str, node_ip: str) -> str:
    """``address`` as another machine reaches it: a wildcard host is the worker's node IP."""
    match = _TCP.match(address)
    if match and match.group("host") in WILDCARD_HOSTS:
        return f"tcp://{node_ip}:{match.group('port')}"
    return address


class Fleet:
    """The driver: starts the workers, restarts dead ones, keeps the state file, reports."""

    def __init__(
        self,
        configs: list,
        base: str,
        state_file: pathlib.Path,
        max_restarts: int = DEFAULT_MAX_RESTARTS,
        cpus_per_worker: float = 1.0,
        report_every_s: float = REPORT_EVERY_S,
        say: Callable[[str], None] = print,
    ) -> None:
        self.configs, self.base, self.state_file = configs, base, state_file
        self.max_restarts, self.cpus_per_worker = max_restarts, cpus_per_worker
        self.report_every_s = report_every_s
        self.say = say
        self.actors: list = []
        self.rows: list[dict[str, Any]] = []
        self.results: dict[int, dict[str, Any]] = {}
        self.started_at = time.time()
        self.stopping = False
        self.ray_address = "local"

    # -- state
    def _write_state(self, state: str = "running") -> None:
        write_state(
            self.state_file,
            {
                "fleet": self.base,
                "state": state,
                "started_at": self.started_at,
                "driver_pid": os.getpid(),
                "driver_host": socket.gethostname(),
                "ray_address": self.ray_address,
                "workers": self.rows,
            },
        )

    def _update_row(self, k: int, info: dict[str, Any]) -> None:
        row = self.rows[k]
        row.update(pid=info["pid"], node_ip=info["node_ip"], hostname=info["hostname"])
        for field in ("control_address", "telemetry_address"):
            row[field] = reachable(getattr(self.configs[k], field), info["node_ip"])
        if info["hostname"] != socket.gethostname() and (
            row["control_address"].startswith("ipc://")
            or _TCP.match(row["control_address"]).group("host") in LOOPBACK_HOSTS
        ):
            self.say(
                f"note: worker {k} runs on {info['hostname']}: its control address {row['control_address']} is "
                "reachable there only (use tcp://*:PORT in the config for `ctl --fleet` from here)"
            )

    # -- the run
    def run(self) -> int:
        import ray

        remote = ray.remote(CollectorWorker)
        stop_file = stop_path(self.state_file)
        stop_file.unlink(missing_ok=True)  # a stop meant for an earlier fleet of this name
        for k, config in enumerate(self.configs):
            actor = remote.options(
                max_restarts=self.max_restarts,
                max_task_retries=0,  # the driver starts `run` again itself, and counts
                max_concurrency=4,
                num_cpus=self.cpus_per_worker,
                runtime_env={"env_vars": dict(GL_ENV)},
            ).remote(k, config.model_dump_json())
            self.actors.append(actor)
            self.rows.append(
                {
                    "worker": k,
                    "session": config.session_id,
                    "session_dir": str(pathlib.Path(config.data_root) / config.session_id),
                    "seed": config.seed,
                    "control_address": config.control_address,
                    "telemetry_address": config.telemetry_address,
                    "pid": None,
                    "node_ip": None,
                    "restarts": 0,
                    "state": "starting",
                }
            )
        self._write_state()
        self.pending: dict[Any, tuple[int, str]] = {}
        self.scheduled: list[tuple[float, int, str]] = []
        for k in range(len(self.actors)):
            self._submit(k, "run")
            self._submit(k, "info")
        self.say(f"state file {self.state_file}; operate every worker with:")
        self.say(f"  {_ctl_hint(self.state_file)}")
        last_report = time.monotonic()
        while any(kind == "run" for _, kind in self.pending.values()) or any(
            kind == "run" for _, _, kind in self.scheduled
        ):
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=0.5) if self.pending else ([], [])
            if not self.stopping and stop_file.exists():
                self.say("fleet stop requested (ctl stop --fleet): the workers finish their episodes")
                self.stop()
            for ref in ready:
                k, kind = self.pending.pop(ref)
                if kind == "info":
                    self._on_info(k, ref)
                else:
                    self._on_run(k, ref)
            now = time.monotonic()
            for when, k, kind in [s for s in self.scheduled if s[0] <= now]:
                self.scheduled.remove((when, k, kind))
                self._submit(k, kind)
            if self.report_every_s and time.monotonic() - last_report >= self.report_every_s:
                last_report = time.monotonic()
                self._report()
        self._write_state("finished")
        stop_file.unlink(missing_ok=True)
        return self._summary()

    def _submit(self, k: int, kind: str) -> None:
        actor = self.actors[k]
        ref = actor.run.remote() if kind == "run" else actor.info.remote()
        self.pending[ref] = (k, kind)

    def _on_info(self, k: int, ref) -> None:
        import ray

        row = self.rows[k]
        try:
            info = ray.get(ref)
        except ray.exceptions.ActorDiedError:
            return  # for good: `run` reports it
        except ray.exceptions.RayActorError:  # restarting: ask again shortly
            if row["state"] in ("starting", "restarting"):
                self.scheduled.append((time.monotonic() + RETRY_S, k, "info"))
            return
        previous = row["pid"]
        self._update_row(k, info)
        if row["state"] == "restarting" or (previous is not None and info["pid"] != previous):
            row["restarts"] += 1  # a new process: one restart
        if row["state"] in ("starting", "restarting"):
            row["state"] = "running"
        self._write_state()
        self.say(
            f"worker {k}: session {row['session_dir']}, seed {row['seed']}, control {row['control_address']}, "
            f"pid {info['pid']}" + (f" (restart {row['restarts']})" if row["restarts"] else "")
        )

    def _on_run(self, k: int, ref) -> None:
        import ray

        row = self.rows[k]
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as error:  # the process died: Ray restarts it, its session resumes
            cause = " ".join(str(error).split())[:200]
            permanently = isinstance(error, ray.exceptions.ActorDiedError)
            if self.stopping or stop_path(self.state_file).exists():
                row["state"] = "died"
                self.results[k] = {"worker": k, "exit": 1, "error": f"died while stopping: {cause}"}
                self.say(f"worker {k} died while the fleet stops; not restarted (its session resumes next time)")
            elif permanently:
                row["state"] = "failed"
                self.results[k] = {"worker": k, "exit": 1, "error": f"died after {row['restarts']} restarts: {cause}"}
                self.say(
                    f"worker {k} died after {row['restarts']} restarts (--max-restarts {self.max_restarts}): given up"
                )
            else:
                if row["state"] != "restarting":  # once per death: a call to a restarting actor fails the same way
                    self.say(
                        f"worker {k} died (pid {row['pid'] or '?'}): restarting it ({row['restarts'] + 1} of "
                        f"{self.max_restarts}); its session resumes by salvage"
                    )
                    row["state"] = "restarting"
                    if not any(kind == "info" and i == k for i, kind in self.pending.values()):
                        self.scheduled.append((time.monotonic() + RETRY_S, k, "info"))
                self.scheduled.append((time.monotonic() + RETRY_S, k, "run"))
            self._write_state()
            return
        except ray.exceptions.RayTaskError as error:  # a failure the worker raised: reported, not retried
            cause = " ".join(str(getattr(error, "cause", None) or error).split())[:300]
            result = {"worker": k, "exit": 1, "error": cause}
        self.results[k] = result
        row["state"] = "finished" if result.get("exit") == 0 else "failed"
        self._write_state()
        if result.get("exit") == 0:
            self.say(f"worker {k} finished: {result['episodes']} episodes, {result['steps']} steps")
        else:
            self.say(f"worker {k} failed (exit {result.get('exit')}): {result.get('error')}")

    def _report(self) -> None:
        import ray

        live = [k for k, row in enumerate(self.rows) if row["state"] == "running"]
        try:
            replies = ray.get([self.actors[k].status.remote() for k in live], timeout=5.0)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            return
        statuses = [s for s in replies if s]
        steps = sum(s["steps"] for s in statuses)
        rate = sum(s["step_rate_hz"] for s in statuses)
        states = ", ".join(f"w{k} {s['state'] if s else 'starting'}" for k, s in zip(live, replies, strict=True))
        states = states or "none running"
        self.say(f"fleet: {steps} recorded steps, {rate:.1f} steps/s ({states})")

    def stop(self, estop: bool = False) -> None:
        import ray

        self.stopping = True
        for actor in self.actors:
            with contextlib.suppress(ray.exceptions.RayActorError):
                actor.stop.remote(estop)

    def _summary(self) -> int:
        elapsed = time.time() - self.started_at
        done = [r for r in self.results.values() if r.get("exit") == 0]
        steps = sum(r.get("steps", 0) for r in self.results.values())
        episodes = sum(r.get("episodes", 0) for r in self.results.values())
        self.say(
            f"fleet {self.base}: {len(done)} of {len(self.configs)} workers done, {episodes} episodes, {steps} "
            f"recorded steps in {elapsed:.1f} s"
        )
        return 0 if len(done) == len(self.configs) else 1


def _ctl_hint(state_file: pathlib.Path) -> str:
    from pandalab.cli import command_line

    with contextlib.suppress(ValueError):
        state_file = state_file.relative_to(pathlib.Path.cwd())
    return command_line("pandalab", "ctl", "status", "--fleet", state_file)


def _driver_alive(state: dict[str, Any]) -> bool:
    pid = state.get("driver_pid")
    if state.get("state") != "running" or state.get("driver_host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse at once (`FleetError`, one line) a cluster address that nothing answers on: Ray itself
    keeps retrying an unreachable head for minutes. ``auto`` is left to Ray (it fails fast)."""
    if address == "auto":
        return
    match = re.match(r"^(?:ray://)?(?P<host>[^:/\s]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$", address)
    if not match or not 0 < int(match.group("port")) < 65536:
        raise FleetError(f"--address {address!r}: HOST:PORT (the head's GCS port), ray://HOST:PORT or auto")
    try:
        socket.create_connection((match.group("host").strip("[]"), int(match.group("port"))), timeout_s).close()
    except OSError as error:
        raise Unreachable(f"--address {address}: no Ray head answers there ({error})") from None


def run_fleet(
    config_path: str,
    workers: int,
    address: str | None = None,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    cpus_per_worker: float = 1.0,
    report_every_s: float = REPORT_EVERY_S,
) -> int:
    """`pandalab fleet`: the exit code (0 every worker done, 1 a worker failed, 2 bad input, 3 the
    fleet could not start). Every refusal is one line on stderr."""
    from collector.config import ConfigError, load_session_config

    def fail(code: int, line: str) -> int:
        print(f"pandalab fleet: {line}", file=sys.stderr)
        return code

    try:
        config = load_session_config(config_path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return EXIT_CONFIG
    if max_restarts < 0:
        return fail(EXIT_CONFIG, f"--max-restarts {max_restarts}: 0 or more")
    if cpus_per_worker <= 0:
        return fail(EXIT_CONFIG, f"--cpus-per-worker {cpus_per_worker}: more than 0")
    base = fleet_id(config)
    try:
        configs = worker_configs(config, workers, base)
    except FleetError as error:
        return fail(EXIT_CONFIG, str(error))
    state_file = state_path(configs[0].data_root, base)
    if state_file.is_file():
        with contextlib.suppress(FleetError):
            earlier = read_state(state_file)
            if _driver_alive(earlier):
                return fail(EXIT_START_REFUSED, f"fleet {base} is already running (driver pid {earlier['driver_pid']})")

    if address:
        try:
            check_ray_address(address)
        except Unreachable as error:
            return fail(EXIT_START_REFUSED, str(error))
        except FleetError as error:
            return fail(EXIT_CONFIG, str(error))

    import logging

    import ray

    init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        init["address"] = address
    else:
        init["num_cpus"] = max(os.cpu_count() or 1, int(workers * cpus_per_worker + 0.999))
    try:
        ray.init(**init)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        return fail(
            EXIT_START_REFUSED,
            f"Ray at {address or 'local'} cannot be started or reached: " + " ".join(str(error).split())[:300],
        )
    fleet = Fleet(configs, base, state_file, max_restarts, cpus_per_worker, report_every_s, say=_say)
    try:
        fleet.ray_address = address or "local"
        where = f"Ray at {address}" if address else f"a local Ray ({init['num_cpus']} CPUs)"
        _say(f"fleet {base}: {workers} simulated collectors on {where}, data root {configs[0].data_root}")
        return _run_with_signals(fleet)
    finally:
        if fleet.rows:
            with contextlib.suppress(OSError):
                state = read_state(state_file)
                if state.get("state") == "running":
                    fleet._write_state("finished")
        ray.shutdown()


def _say(line: str) -> None:
    print(line, flush=True)


def _run_with_signals(fleet: Fleet) -> int:
    """Ctrl-C or SIGTERM: every worker finishes its episode and stops; a second Ctrl-C: e-stop them
    all (the sessions resume next time)."""
    presses: list[int] = []

    def on_signal(signum, frame) -> None:
        presses.append(signum)
        if len(presses) == 1:
            _say("stopping: every worker finishes its episode (Ctrl-C again: e-stop them all)")
            fleet.stop()
        else:
            _say("e-stop: every worker stops now")
            fleet.stop(estop=True)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        return fleet.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
