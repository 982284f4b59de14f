"""`pandalab data view` and `pandalab ctl watch --rerun`: recorded episodes and live telemetry in Rerun.

Written against rerun-sdk 0.22 (the newest release that installs with numpy 1.x; 0.23 and later
need numpy 2): `rr.new_recording`, `rr.save` / `rr.connect_tcp` / `rr.connect_grpc`
with ``recording=``, `RecordingStream.set_time_sequence` / `set_time_seconds`, `rr.send_columns`
with `rr.Scalar.columns`, and the archetypes `rr.Image`, `rr.Points3D`, `rr.LineStrips3D`,
`rr.Transform3D`, `rr.Boxes3D`, `rr.TextLog`.

What an episode becomes (``E`` = ``episode_000042``), on two timelines: ``step`` (a sequence: the
step's number in its episode, `Episode.step_index`, so a salvaged episode keeps its gaps) and
``time`` (seconds: the step's recorded ``time``, the driver's clock; simulated time in simulation):

- ``E/camera/<name>``: each step's frame (`rr.Image`, RGB, exactly the recorded bytes);
- ``E/<key>/<component>``: every per-step numeric array as time series (`rr.Scalar`): ``obs/q``,
  ``obs/dq``, ``command``, ``action`` (components ``joint1..7``; ``x, y, z`` for 3 values; ``w, x,
  y, z`` for a quaternion), ``obs/gripper_width``, ``safety/interventions``, ``privileged/*``...;
- ``world/E/tip``: the tool tip at each step (`rr.Points3D`, base frame, m) and ``world/E/tip_path``
  its whole path in the episode (one `rr.LineStrips3D`, logged at the episode's first step);
- ``world/E/cube`` (simulation sessions): the cube's pose at each step (`rr.Transform3D` from
  ``privileged/cube_pos`` and ``privileged/cube_quat``, stored w, x, y, z) on a 5 cm box;
- ``E/events``: the session's events of the episode (events.jsonl, `store.read_events`: safety
  incidents, faults, operator commands) as `rr.TextLog` markers, and ``world/E/events`` as red
  points at the tool tip.  events.jsonl stamps the wall clock while steps carry the driver's clock,
  so an event is placed at the step its wall-clock time falls on, interpolated between the episode
  file's ``started_at`` and ``finished_at`` (microsecond resolution; a safety stop logged after
  the last step lands on the last step);
- ``E/episode``: one line at the first step: index, outcome, steps, file.

Telemetry (``ctl watch --rerun``): every number of each telemetry message as a time series under
``telemetry/<field>`` (nested fields joined by ``/``: ``telemetry/camera_drops/front``), the state
(and hold reason) as a `rr.TextLog` under ``telemetry/state`` whenever it changes and each new
incident under ``telemetry/incidents``; timelines ``time`` (wall clock at receipt) and ``message``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pathlib
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

APPLICATION_ID = "pandalab"
IMAGE_PREFIX = "obs/images/"
CUBE_EDGE_M = 0.05
"""Edge of the simulated cube (`sim.scene.CUBE_EDGE`; not imported: sim loads the simulators)."""
MAX_SCALAR_WIDTH = 16
"""Per-step arrays of at most this many values are shown as time series; wider ones are not."""
IMAGE_BATCH = 64
"""Frames read from the episode file at a time."""
TCP_DEFAULT = "127.0.0.1:9876"
"""Where a Rerun viewer started with plain ``rerun`` listens for SDKs (rerun-sdk 0.22: TCP)."""
VIEWER_PORT = 9876
"""Where a spawned viewer listens (rr.spawn's default); one already listening there is reused."""
VIEWER_START_S = 20.0
"""How long a spawned viewer may take to listen."""
HEADLESS_HINT = "write a file instead with --save FILE.rrd and open it where there is a screen: rerun FILE.rrd"
EVENT_LEVELS = {"safety": "WARN", "driver_fault": "ERROR", "giving_up": "ERROR", "store_error": "ERROR"}
"""`rr.TextLog` level of an event kind (others: INFO)."""
NOT_EPISODE_EVENTS = {"episode_end"}
"""Event kinds not shown as markers (the episode's outcome is its own line)."""


class ViewError(ValueError):
    """A request that cannot be carried out; one line for the operator."""


def _rerun():
    try:
        import rerun as rr
    except ImportError as error:  # pragma: no cover - rerun-sdk is in requirements.txt
        raise ViewError(f"rerun-sdk is not installed ({error}): pip install -r requirements.txt") from None
    return rr


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------- sinks


def _has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _viewer_executable() -> str | None:
    """rerun-sdk's viewer binary (what its ``rerun`` script runs), else ``rerun`` on PATH."""
    import shutil

    with contextlib.suppress(ImportError):
        import rerun_cli

        binary = pathlib.Path(rerun_cli.__file__).parent / "rerun"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    beside = pathlib.Path(sys.executable).parent / "rerun"  # the venv's, used by its path, not on PATH
    return shutil.which("rerun") or (str(beside) if beside.exists() else None)


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _last_line(log) -> str:
    log.seek(0)
    lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
    return _one_line(lines[-1])[:200] if lines else "no output"


def _spawn_viewer(port: int, wait_s: float = VIEWER_START_S):
    """Start a Rerun viewer listening on ``port`` (as `rr.spawn` does, but watched: a viewer that
    dies, e.g. on a display it cannot open, is a one-line `ViewError`); (process, its stderr), or
    (None, None) when a viewer already listens there."""
    import subprocess
    import tempfile

    if _port_taken(port):
        return None, None
    executable = _viewer_executable()
    if executable is None:
        raise ViewError(f"no Rerun viewer executable found (rerun-sdk's `rerun`): {HEADLESS_HINT}")
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--memory-limit", "75%", "--expect-data-soon"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "RERUN_APP_ONLY": "true"},
        start_new_session=True,  # the viewer outlives this command, and its Ctrl-C
    )
    deadline = time.monotonic() + wait_s
    while not _port_taken(port):
        if process.poll() is not None:
            raise ViewError(f"the Rerun viewer did not start ({_last_line(log)}): {HEADLESS_HINT}")
        if time.monotonic() > deadline:
            process.terminate()
            raise ViewError(f"the Rerun viewer did not listen on port {port} within {wait_s:g} s: {HEADLESS_HINT}")
        time.sleep(0.05)
    return process, log


class _Sink:
    """Where a recording goes: a file (written under a temporary name, renamed when complete), a
    viewer at ``connect`` (``HOST:PORT`` over TCP, or a ``rerun+http://`` gRPC URL), or a spawned
    viewer (refused in one line where there is no display)."""

    def __init__(self, rr, recording, save: str | os.PathLike | None, connect: str | None) -> None:
        self.rr, self.recording = rr, recording
        self.save = pathlib.Path(save) if save is not None else None
        self.temp: pathlib.Path | None = None
        self.viewer = self.viewer_log = None
        if self.save is not None:
            if self.save.is_dir():
                raise ViewError(f"--save {self.save}: is a directory; name a file, e.g. {self.save / 'view.rrd'}")
            try:
                self.save.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ViewError(f"--save {self.save}: cannot create its folder: {error.strerror or error}") from None
            self.temp = self.save.with_name(f".{self.save.name}.{os.getpid()}.tmp")
            try:
                rr.save(self.temp, recording=recording)
            except Exception as error:
                raise ViewError(f"--save {self.save}: cannot write: {_one_line(error)}") from None
            self.where = str(self.save)
        elif connect:
            try:
                if connect.startswith(("rerun://", "rerun+http://", "rerun+https://")):
                    rr.connect_grpc(connect, recording=recording)
                else:
                    host, _, port = connect.rpartition(":")
                    if not host or not port.isdigit():
                        raise ViewError(
                            f"--connect {connect}: expected HOST:PORT (a viewer started with `rerun`, "
                            f"default {TCP_DEFAULT}) or a rerun+http:// URL"
                        )
                    rr.connect_tcp(connect, recording=recording)
            except ViewError:
                raise
            except Exception as error:
                raise ViewError(f"--connect {connect}: {_one_line(error)}") from None
            self.where = f"the Rerun viewer at {connect}"
        else:
            if not _has_display():
                raise ViewError(f"no display to open the Rerun viewer on (DISPLAY is not set): {HEADLESS_HINT}")
            self.viewer, self.viewer_log = _spawn_viewer(VIEWER_PORT)
            try:
                rr.connect_tcp(f"127.0.0.1:{VIEWER_PORT}", recording=recording)
            except Exception as error:
                raise ViewError(f"cannot reach the Rerun viewer ({_one_line(error)}): {HEADLESS_HINT}") from None
            self.where = "a new Rerun viewer" if self.viewer is not None else f"the Rerun viewer on port {VIEWER_PORT}"

    def close(self, complete: bool = True) -> None:
        """Flush; a file is renamed into place (or, when not ``complete``, removed)."""
        with contextlib.suppress(Exception):
            self.recording.flush(blocking=True)
        with contextlib.suppress(Exception):
            self.recording.disconnect()  # closes the file sink
        if self.viewer is not None and self.viewer.poll():  # died while the data went to it
            raise ViewError(f"the Rerun viewer exited ({_last_line(self.viewer_log)}): {HEADLESS_HINT}")
        if self.temp is None:
            return
        if complete:
            try:
                os.replace(self.temp, self.save)
            except OSError as error:
                raise ViewError(f"--save {self.save}: cannot write: {error.strerror or error}") from None
        else:
            with contextlib.suppress(OSError):
                self.temp.unlink()


# ---------------------------------------------------------------------------------- episodes


def _labels(key: str, width: int) -> list[str]:
    if width == 7:
        return [f"joint{i}" for i in range(1, 8)]
    if width == 4 and key.endswith("quat"):
        return ["w", "x", "y", "z"]
    if width == 3:
        return ["x", "y", "z"]
    return [str(i) for i in range(width)]


def _epoch(iso: str) -> float | None:
    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


def _episode_events(events: list[dict[str, Any]], episode, steps: int) -> list[tuple[int, dict[str, Any]]]:
    """(row, event) for the events of ``episode``: its own (``episode`` field) and those without
    one stamped while it was recorded; row interpolated on the wall clock (module docstring)."""
    start, finish = _epoch(episode.started_at), _epoch(episode.finished_at)
    out = []
    for event in events:
        if event.get("kind") in NOT_EPISODE_EVENTS:
            continue
        stamp = event.get("time")
        stamp = float(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else None
        own = event.get("episode")
        if own is not None:
            if own != episode.index:
                continue
        elif stamp is None or start is None or finish is None or not start <= stamp <= finish:
            continue
        if stamp is None or start is None or finish is None or finish <= start:
            row = steps - 1
        else:
            row = round((stamp - start) / (finish - start) * (steps - 1))
        out.append((min(max(row, 0), steps - 1), event))
    return out


def _event_text(event: dict[str, Any]) -> str:
    kind = event.get("kind", "?")
    if kind == "safety":
        where = "" if event.get("where") is None else f" at {event['where']}"
        magnitude = event.get("magnitude")
        amount = f" ({magnitude:.3g})" if isinstance(magnitude, int | float) else ""
        detail = f": {event['detail']}" if event.get("detail") else ""
        return f"safety {event.get('event', '?')}{where}{amount}{detail}"
    extra = {k: v for k, v in event.items() if k not in ("time", "iso", "kind", "episode")}
    return _one_line(f"{kind} " + " ".join(f"{k}={v}" for k, v in extra.items()))


def log_episode(rr, rec, episode, events: list[dict[str, Any]]) -> int:
    """Log one episode (module docstring); returns its number of steps."""
    steps = len(episode)
    if steps == 0:
        return 0
    prefix = f"episode_{episode.index:06d}"
    fields = episode.fields
    numbers = np.asarray(episode.step_index(), dtype=np.int64)
    times = np.asarray(episode.load("time"), dtype=np.float64).reshape(steps) if "time" in fields else None

    def at(row: int) -> None:
        rec.set_time_sequence("step", int(numbers[row]))
        if times is not None:
            rec.set_time_seconds("time", float(times[row]))

    indexes = [rr.TimeSequenceColumn("step", numbers)]
    if times is not None:
        indexes.append(rr.TimeSecondsColumn("time", times))
    for key, spec in fields.items():
        if key == "time" or key.startswith(IMAGE_PREFIX) or key == episode.step_index_key:
            continue
        if spec.dtype.kind not in "biuf" or len(spec.shape) > 1 or int(np.prod(spec.shape)) > MAX_SCALAR_WIDTH:
            continue
        values = np.asarray(episode.load(key), dtype=np.float64).reshape(steps, -1)
        labels = _labels(key, values.shape[1]) if spec.shape else [None]
        for column, label in enumerate(labels):
            path = f"{prefix}/{key}" if label is None else f"{prefix}/{key}/{label}"
            rr.send_columns(path, indexes=indexes, columns=rr.Scalar.columns(scalar=values[:, column]), recording=rec)

    at(0)
    rec.log(
        f"{prefix}/episode",
        rr.TextLog(f"episode {episode.index}: {episode.outcome}, {steps} steps, {episode.path}", level="INFO"),
    )
    tip = np.asarray(episode.load("obs/tip_pos"), dtype=np.float64) if "obs/tip_pos" in fields else None
    if tip is not None:
        rec.log(f"world/{prefix}/tip_path", rr.LineStrips3D([tip]))
    if "privileged/cube_pos" in fields and "privileged/cube_quat" in fields:
        rec.log(f"world/{prefix}/cube", rr.Boxes3D(half_sizes=[CUBE_EDGE_M / 2] * 3), static=True)
        cube_pos = np.asarray(episode.load("privileged/cube_pos"), dtype=np.float64)
        cube_quat = np.asarray(episode.load("privileged/cube_quat"), dtype=np.float64)
    else:
        cube_pos = cube_quat = None
    for row in range(steps):
        at(row)
        if tip is not None:
            rec.log(f"world/{prefix}/tip", rr.Points3D([tip[row]], radii=0.005))
        if cube_pos is not None:
            w, x, y, z = cube_quat[row]  # stored w, x, y, z (sim/scene.py); Rerun takes x, y, z, w
            rec.log(
                f"world/{prefix}/cube",
                rr.Transform3D(translation=cube_pos[row], quaternion=rr.Quaternion(xyzw=[x, y, z, w])),
            )
    for camera in sorted(k.removeprefix(IMAGE_PREFIX) for k in fields if k.startswith(IMAGE_PREFIX)):
        dataset = episode[IMAGE_PREFIX + camera]
        for first in range(0, steps, IMAGE_BATCH):
            frames = dataset[first : first + IMAGE_BATCH]
            for offset, frame in enumerate(frames):
                at(first + offset)
                rec.log(f"{prefix}/camera/{camera}", rr.Image(frame, color_model="RGB"))
    for row, event in _episode_events(events, episode, steps):
        at(row)
        text = _event_text(event)
        rec.log(f"{prefix}/events", rr.TextLog(text, level=EVENT_LEVELS.get(event.get("kind"), "INFO")))
        if tip is not None:
            rec.log(
                f"world/{prefix}/events",
                rr.Points3D([tip[row]], radii=0.012, colors=[255, 40, 40], labels=[text[:60]]),
            )
    return steps


def _episodes(session: pathlib.Path, episode: int | None, warn: Callable[[str], None]) -> Iterator:
    """The episodes to show: the one asked for (its damage an error), or every readable one (a
    damaged one skipped with a warning naming the file)."""
    from store import DamagedEpisodeError, DamagedEpisodeWarning, ManifestWarning, iter_episodes, open_episode
    from store import read_manifest as _read_manifest

    def relay(caught: list[warnings.WarningMessage]) -> None:
        for w in caught:
            if issubclass(w.category, DamagedEpisodeWarning | ManifestWarning):
                warn(_one_line(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        caught.clear()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if episode is not None:
            listed = {e.index: e for e in _read_manifest(session)}
            relay(caught)
            if episode not in listed:
                raise ViewError(f"{session}: no finished episode {episode}; listed: {sorted(listed) or 'none'}")
            info = listed[episode]
            try:
                opened = open_episode(info.path, expected_sha256=info.sha256, info=info)
            except DamagedEpisodeError as error:
                raise ViewError(f"{error.path}: damaged episode: {error.reason}") from None
            try:
                yield opened
            finally:
                opened.close()
            return
        for opened in iter_episodes([session]):
            relay(caught)
            yield opened
        relay(caught)


def _check_session(session: str | os.PathLike) -> pathlib.Path:
    from store import find_sessions

    path = pathlib.Path(session)
    if not path.exists():
        raise ViewError(f"no such session directory: {path}")
    if not path.is_dir():
        raise ViewError(f"{path} is not a pandalab session (a directory with manifest.jsonl and episodes/)")
    try:
        found = find_sessions([path])
    except OSError as error:
        raise ViewError(f"{path}: cannot read: {error.strerror or error}") from None
    if found != [path]:
        inside = f"; sessions in it: {', '.join(p.name for p in found)}" if found else ""
        raise ViewError(f"{path} is not a pandalab session (no manifest.jsonl or episodes/){inside}")
    return path


def view(
    session: str | os.PathLike,
    episode: int | None = None,
    save: str | os.PathLike | None = None,
    warn: Callable[[str], None] | None = None,
) -> str:
    """Show one episode (or every readable one) of ``session`` in Rerun: saved to ``save`` (an
    .rrd, no viewer), else in a spawned viewer.  Returns the line to print; raises `ViewError`."""
    from store import read_events

    warn = warn or (lambda line: print(f"warning: {line}", file=sys.stderr))
    session = _check_session(session)
    rr = _rerun()
    recording = rr.new_recording(APPLICATION_ID)
    events = read_events(session)
    sink = None
    shown = steps = 0
    cameras: set[str] = set()
    complete = False
    try:
        for opened in _episodes(session, episode, warn):
            if sink is None:  # only once an episode reads: a bad request leaves no file behind
                sink = _Sink(rr, recording, save, None)
                recording.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
            steps += log_episode(rr, recording, opened, events)
            cameras.update(k.removeprefix(IMAGE_PREFIX) for k in opened.fields if k.startswith(IMAGE_PREFIX))
            shown += 1
        if not shown:
            raise ViewError(f"{session}: no readable episodes")
        complete = True
    finally:
        if sink is not None:
            sink.close(complete)
    from pandalab.cli import command_line

    what = f"{shown} episode{'s' if shown != 1 else ''}, {steps} steps, cameras: {', '.join(sorted(cameras)) or 'none'}"
    if save is not None:
        return f"wrote {save} ({what}); open it with: {command_line('rerun', save)}"
    return f"sent {what} to {sink.where}"


# ---------------------------------------------------------------------------------- telemetry


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, bool):
        out[prefix] = float(value)
    elif isinstance(value, int | float):
        if np.isfinite(value):
            out[prefix] = float(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}/{key}", item, out)


def log_telemetry(rr, rec, message: dict[str, Any], number: int, previous: dict[str, Any] | None) -> None:
    """Log one telemetry message (module docstring); ``previous`` is the one before (or None)."""
    rec.set_time_sequence("message", number)
    rec.set_time_seconds("time", time.time())
    if previous is None or message.get("session") != previous.get("session"):
        rec.log("telemetry/session", rr.TextLog(str(message.get("session")), level="INFO"))
    numbers: dict[str, float] = {}
    for key, value in message.items():
        if key not in ("pid", "last_incident", "session"):
            _flatten(f"telemetry/{key}", value, numbers)
    for path, value in numbers.items():
        rec.log(path, rr.Scalar(value))
    state = f"{message.get('state')}" + (f": {message['hold_reason']}" if message.get("hold_reason") else "")
    if previous is None or state != (
        f"{previous.get('state')}" + (f": {previous['hold_reason']}" if previous.get("hold_reason") else "")
    ):
        held = message.get("state") in ("held", "paused", "stopping")
        rec.log("telemetry/state", rr.TextLog(state, level="WARN" if held else "INFO"))
    incident = message.get("last_incident")
    if incident and (previous is None or incident != previous.get("last_incident")):
        rec.log("telemetry/incidents", rr.TextLog(_one_line(incident), level="WARN"))


def watch(
    address: str,
    timeout_s: float,
    save: str | os.PathLike | None = None,
    connect: str | None = None,
    count: int | None = None,
    receive: Callable[[str, float], dict[str, Any]] | None = None,
) -> int:
    """``pandalab ctl watch --rerun``: stream the collector's telemetry at ``address`` into Rerun
    until Ctrl-C (exit 0), ``count`` messages (exit 0) or ``timeout_s`` without one (exit 1, the
    recording kept).  A file given by ``save`` is complete when this returns."""
    if receive is None:
        from collector.control import subscribe_telemetry as receive
    rr = _rerun()
    recording = rr.new_recording(APPLICATION_ID)
    try:
        sink = _Sink(rr, recording, save, connect)
    except ViewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"telemetry from {address} into {sink.where} (Ctrl-C to stop)", flush=True)
    previous, received, code = None, 0, 0
    try:
        while count is None or received < count:
            message = receive(address, timeout_s)
            log_telemetry(rr, recording, message, received, previous)
            previous, received = message, received + 1
    except TimeoutError as error:
        print(error, file=sys.stderr)
        code = 1
    except KeyboardInterrupt:  # Ctrl-C is how an operator ends a watch: exit 0, the recording is kept
        code = 0
    finally:
        try:
            sink.close()
        except ViewError as error:
            print(f"error: {error}", file=sys.stderr)
            code = 1
    if save is not None:
        print(f"wrote {save} ({received} message{'s' if received != 1 else ''})")
    return code
