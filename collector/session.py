"""The collector: one session of exploration on one arm, recorded episode by episode.

The step loop (DESIGN.md):

    state = safe.read_state()                      # q, dq, tool tip, images, privileged (sim)
    action = explorer.act(observation(state))      # task-agnostic: never rewards, never privileged
    command, events = safe.act(state, action)      # the safety filter, then driver.send
    recorder.append(step)                          # non-blocking: the store's writer thread persists it

An episode ends when it reaches its length (outcome ``complete``), when the violation monitor
finds the arm outside its limits, the simulator reports a collision or the arm's own collision
reflex stopped it (``safety_stop``, robot_drivers/collision_reflex.py), on another driver fault
(``fault``), or on an operator e-stop (``operator_stop``).  Then the explorer learns
from it, its state is checkpointed atomically, and the arm is reset (planned through the safety
filter on hardware, teleported in simulation).

Operator requests (ZMQ, `collector.control`) are answered once per step; SIGINT / SIGTERM act as
``stop`` (finish the episode, then exit) and a second SIGINT as an e-stop that ends the session
(the arm stops at once and is not moved home).  The store asking to
hold (disk nearly full, writer behind) stops the arm; nothing is dropped.  What the loop is doing
and why the arm is held is `collector.state.CollectorState` (``self.lifecycle``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import os
import pathlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import yaml

from collector.checkpoint import (
    DamagedCheckpointError,
    encode_explorer_checkpoint,
    load_explorer_checkpoint,
    quarantine_checkpoint,
)
from collector.config import ConfigError, SessionConfig, dump_session_config, parse_session_config
from collector.control import AddressUnavailable, ControlServer
from collector.explorers import Explorer, ExplorerSpec, make_explorer
from collector.frame_ages import FrameAges
from collector.state import Activity, CollectorState, HoldKind
from robot_drivers import ActionSpace, DriverFault, FaultReason, RobotState, create_driver
from robot_drivers.safe_driver import SafeDriver
from safety import ResetPlanningError, SafetyEvent, ViolationMonitor, Watchdog, contact_events
from safety.types import INCIDENT_KINDS
from store import (
    EpisodeRecorder,
    SessionLocked,
    SessionStore,
    SpecError,
    StoreWriteError,
    atomic_write_bytes,
    read_manifest,
    read_session_spec,
)

CHECKPOINT_PATH = pathlib.Path("explorer") / "checkpoint.pt"
"""Explorer checkpoint inside the session directory (`collector.checkpoint`: no pickle, checksummed)."""
LOGGED_EVENT_KINDS = INCIDENT_KINDS
"""Safety events written to events.jsonl one by one (incidents); the filter's routine interventions
(clips, limits, clearances) are counted per episode in its metadata and in `status` instead."""
RATE_WINDOW_S = 2.0
"""The step rate in `status` counts the steps of the last this many seconds (0 while paused)."""
TELEMETRY_PERIOD_S = 0.5
LINK_FAULTS = frozenset({FaultReason.connection_lost, FaultReason.timeout})
"""Driver faults that mean the robot does not answer: the collector holds until it does."""
LINK_CHECK_PERIOD_S = 1.0
MAX_LINK_LOSSES = 5
"""Link losses without a finished episode in between before the collector holds for the operator."""
"""While held for a lost link, how often the robot is asked whether it answers again, s."""
MAX_CONSECUTIVE_FAULTS = 3
"""Driver faults in a row (each followed by a failed recovery) before the collector gives up."""


class StartRefused(RuntimeError):
    """The session could not start (an address taken, the robot unreachable, the session open in
    another collector, an unusable explorer checkpoint); the message is one line for the operator.
    The arm was not moved and nothing new was created on disk (a refused resume of an existing
    session appends its reason to that session's events.jsonl)."""


def _rounded(value: Any) -> Any:
    """A magnitude for people: four significant digits."""
    return float(f"{value:.4g}") if isinstance(value, float) and np.isfinite(value) else value


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


@dataclasses.dataclass
class EpisodeResult:
    index: int
    steps: int
    outcome: str


class Collector:
    """Runs one collection session; `run` returns the process exit code."""

    def __init__(
        self,
        config: SessionConfig,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        install_signal_handlers: bool = True,
        fresh_explorer: bool = False,
    ) -> None:
        self.config = config
        self.fresh_explorer = fresh_explorer
        """Start a new explorer when the session's checkpoint is unusable (it is quarantined)."""
        self.session_id = config.session_id or time.strftime("%Y%m%d-%H%M%S")
        self.on_progress = on_progress
        self.install_signal_handlers = install_signal_handlers
        self.episode_steps = config.resolved_episode_steps
        self.realtime = config.resolved_realtime
        self.lifecycle = CollectorState()
        """Activity, hold, pause and the operator's stop requests (collector/state.py)."""
        self.steps = 0
        """Control steps recorded in finished episodes of this session (resumed runs included)."""
        self.episodes = 0
        self.episode_index: int | None = None
        self.episode_step = 0
        self.last_incident: dict[str, Any] | None = None
        """The last safety incident (a stop, a limit crossed, a contact), magnitudes rounded."""
        self.episode_interventions = 0
        """The filter's routine interventions in the current episode (clips, limits, clearances)."""
        self.frame_ages = FrameAges(config.control_rate_hz)
        """The current episode's image ages and drops per camera (collector/frame_ages.py)."""
        self.started_at = time.monotonic()
        self._step_times: collections.deque[float] = collections.deque(maxlen=200)
        self._link_checked_at = 0.0
        self._link_losses = 0
        """Robot link losses since the last finished episode."""
        self._last_telemetry = 0.0
        self._sigint_count = 0
        self.store: SessionStore | None = None
        self.control: ControlServer | None = None
        self.driver = None
        self.safe: SafeDriver | None = None
        self.explorer: Explorer | None = None

    # ---- set-up -------------------------------------------------------------------------------
    def _open(self) -> None:
        """Bind the operator sockets, connect the arm, then open the session folder: a start that
        is refused (address taken, robot unreachable, session open elsewhere) creates nothing on
        disk and raises `StartRefused` with one line saying why."""
        config = self.config
        try:
            self.control = ControlServer(config.control_address, config.telemetry_address)
        except AddressUnavailable as error:
            raise StartRefused(str(error)) from None
        options = config.driver_options() | {"action_space": ActionSpace.joint_velocity.value}
        try:
            self.driver = create_driver(config.robot.backend, options)
            self.driver.connect()
        except DriverFault as fault:
            raise StartRefused(f"robot {config.robot.backend} cannot be reached: {fault}") from None
        served = getattr(self.driver, "server_info", {}).get("robot_model", config.robot.model)
        if served != config.robot.model:
            self.driver.close()
            raise StartRefused(
                f"robot.model: the bridge at {options.get('server')} drives a {served}, the session says "
                f"{config.robot.model} (their limits differ)"
            )
        resolved = config.resolved(self.session_id)
        self.spec = resolved.session_spec()
        """What this session records (`store.spec.SessionSpec`), written as session_spec.json."""
        try:
            self.store = SessionStore.open(
                config.data_root,
                self.session_id,
                session_yaml_text=self._session_yaml_text(resolved),
                spec_text=self.spec.to_json(),
                flush_every_steps=config.store.flush_every_steps,
                free_space_floor_bytes=int(config.store.free_space_floor_mb * 1e6),
            )
        except SessionLocked:
            raise StartRefused(
                f"session {self.session_id} is already open in another collector ({config.data_root / self.session_id})"
            ) from None
        except OSError as error:
            raise StartRefused(
                f"session folder {config.data_root / self.session_id} cannot be opened: {error}"
            ) from None
        try:
            read_session_spec(self.store.session_dir)  # what the explorers and the trainer will read
        except SpecError as error:
            raise StartRefused(f"{error}; restore it, or record a new session") from None
        manifest = read_manifest(self.store.session_dir)
        self.episodes = len(manifest)
        self.steps = sum(info.steps for info in manifest)
        self.store.log_event(
            "session_start",
            resumed=bool(manifest),
            recovery=self.store.recovery.summary(),
            episodes=self.episodes,
            steps=self.steps,
            fsync=True,
        )
        watchdog = Watchdog(max_state_age_s=2.0 / config.control_rate_hz) if self.realtime else None
        self.safe = SafeDriver(self.driver, config.safety, config.action_space, watchdog=watchdog)
        self.monitor = ViolationMonitor(config.safety)
        self.explorer = self._build_explorer()

    def _session_yaml_text(self, resolved: SessionConfig) -> str:
        """session.yaml's text for this run: the resolved config, or, resuming a session whose
        session.yaml says the same once resolved (written before options were resolved, or by a
        version with fewer defaulted options), that file's own text, so the store does not record a
        config change that is none."""
        text = dump_session_config(resolved)
        existing = pathlib.Path(self.config.data_root) / self.session_id / "session.yaml"
        try:
            recorded = existing.read_text(encoding="utf-8")
            if recorded != text:
                earlier = parse_session_config(yaml.safe_load(recorded), str(existing))
                if dump_session_config(earlier.resolved(self.session_id)) == text:
                    return recorded
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError, ValueError, TypeError):
            pass  # no session.yaml yet, or one that does not parse: the store keeps it and records ours beside it
        return text

    def _observation_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        limits = self.config.safety
        low = [limits.q_lower, -limits.velocity_caps]
        high = [limits.q_upper, limits.velocity_caps]
        if self.config.explorer.observation == "proprio+object":
            low += [np.array([0.16, -0.4, limits.table_height]), -np.ones(4)]
            high += [np.array([0.96, 0.4, limits.table_height + 0.3]), np.ones(4)]
        return np.concatenate(low), np.concatenate(high)

    def _build_explorer(self) -> Explorer:
        low, high = self._observation_bounds()
        limit = self.safe.action_limit
        image_shape = self.spec.observation_shape() if self.spec.observation == "image" else None
        kind = "image" if image_shape else "vector"
        planned = self.config.stop.planned_steps(self.episode_steps)
        positions = position_indices(self.config.explorer.observation)
        spec = ExplorerSpec(low, high, limit, len(limit), self.episode_steps, kind, image_shape, planned, positions)
        settings = self.config.explorer
        explorer = make_explorer(settings.name, spec, settings.parameters, self.config.seed)
        checkpoint = self.store.session_dir / CHECKPOINT_PATH
        if not checkpoint.exists():
            return explorer
        try:
            state, after_episode = load_explorer_checkpoint(checkpoint)
            explorer.load_state_dict(state)
        except (DamagedCheckpointError, KeyError, TypeError, ValueError, RuntimeError) as error:
            # damaged, an old pickle, or the state of another explorer or of other explorer parameters
            if isinstance(error, DamagedCheckpointError):
                reason = error.reason
            else:
                detail = " ".join(str(error).split())
                reason = f"does not fit explorer {settings.name}: {type(error).__name__}: {detail}"
            if not self.fresh_explorer:
                self.store.log_event("explorer_checkpoint_refused", reason=reason, fsync=True)
                raise StartRefused(
                    f"explorer checkpoint {checkpoint} is unusable ({reason}); its state is part of the experiment: "
                    "to continue this session with a new explorer, start again with --fresh-explorer "
                    "(the checkpoint is then moved to quarantine/, never deleted)"
                ) from None
            moved = quarantine_checkpoint(checkpoint, self.store.session_dir)
            where = moved.relative_to(self.store.session_dir).as_posix()
            self.store.log_event("explorer_checkpoint_quarantined", reason=reason, moved_to=where, fsync=True)
            return make_explorer(settings.name, spec, settings.parameters, self.config.seed)
        self.store.log_event(
            "explorer_resumed", episodes_started=explorer.episodes_started, after_episode=after_episode
        )
        return explorer

    def observation(self, state: RobotState) -> np.ndarray:
        """What the explorer sees (`store.spec.SessionSpec.observation_from`): (q, dq), plus the
        cube pose in privileged experiments, or the first camera's image."""
        if self.spec.observation == "image":
            return state.images[self.spec.explorer_camera]
        fields = {"obs/q": state.q, "obs/dq": state.dq}
        fields.update((f"privileged/{key}", value) for key, value in state.privileged.items())
        return self.spec.observation_from(fields)

    # ---- operator requests ----------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The one state every report uses (`status`, telemetry, the panel, the log):
        `CollectorState.name`."""
        return self.lifecycle.name

    def step_rate_hz(self, now: float | None = None) -> float:
        """Control steps per second over the last `RATE_WINDOW_S` (falls to 0 when stepping stops)."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self._step_times if t > now - RATE_WINDOW_S]
        if not recent:
            return 0.0
        span = max(now - recent[0], 1e-6)
        return len(recent) / span if len(recent) > 1 else 0.0

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        rate = self.step_rate_hz(now)
        health = self.store.health() if self.store else None
        target = self.config.stop
        return {
            "session": self.session_id,
            "pid": os.getpid(),
            "state": self.state,
            "paused": self.lifecycle.paused,
            "hold_reason": self.lifecycle.hold_reason,
            "episode": self.episode_index,
            "episode_step": self.episode_step,
            "episode_steps": self.episode_steps,
            "episodes": self.episodes,
            "steps": self.steps,
            "step_rate_hz": round(rate, 2),
            "elapsed_s": round(now - self.started_at, 1),
            "stop_at": {
                "steps": target.steps,
                "episodes": target.episodes,
                "wall_time_s": target.wall_time_s,
            },
            "last_incident": self.last_incident,
            "interventions": self.episode_interventions,
            "camera_drops": self.frame_ages.drops(),
            "camera_age_s": self.frame_ages.last_ages(),
            "disk_free_gb": round(health.free_bytes / 1e9, 3) if health else None,
            "stop_requested": self.lifecycle.stop_requested,
        }

    def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request["command"]
        if command != "status":
            self.store.log_event("operator", command=command, reason=request.get("reason", ""), fsync=True)
        if command == "pause":
            self.lifecycle.pause()
        elif command == "resume":
            self.lifecycle.resume()
            self.monitor.release()
        elif command == "stop":
            self.lifecycle.request_stop()
        elif command == "estop":
            self.lifecycle.request_estop()
            self._estop_now()
        return self.status()

    def _estop_now(self) -> None:
        """Stop the arm now (the driver's stop, within the acceleration limits), from the loop's
        thread.  An operator e-stop (``ctl estop``) then holds until ``resume``; an e-stop by a
        second Ctrl-C / SIGINT ends the session instead (the operator at the keyboard wants out),
        leaving the arm where it stopped: it is not moved home afterwards."""
        with contextlib.suppress(DriverFault):
            self.safe.stop()
        self.lifecycle.estop_done()

    def _poll(self, force_telemetry: bool = False) -> None:
        self.control.poll(self.handle_request)
        now = time.monotonic()
        if force_telemetry or now - self._last_telemetry >= TELEMETRY_PERIOD_S:
            self._last_telemetry = now
            snapshot = self.status()
            self.control.publish(snapshot)
            if self.on_progress is not None:
                self.on_progress(snapshot)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self._sigint_count += 1
            if self._sigint_count >= 2:
                self.lifecycle.request_estop()
                return
        self.lifecycle.request_stop()

    # ---- the session ------------------------------------------------------------------------------
    def stop_condition_met(self) -> bool:
        target = self.config.stop
        return (
            (target.steps is not None and self.steps >= target.steps)
            or (target.episodes is not None and self.episodes >= target.episodes)
            or (target.wall_time_s is not None and time.monotonic() - self.started_at >= target.wall_time_s)
        )

    def run(self) -> int:
        """Run until the stop condition, a ``stop`` request or a signal; returns the exit code."""
        previous_handlers = {}
        if self.install_signal_handlers and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous_handlers[signum] = signal.signal(signum, self._on_signal)
        try:
            self._open()
            return self._loop()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            self._close()

    def _loop(self) -> int:
        faults = 0
        lifecycle = self.lifecycle
        lifecycle.needs_reset = True  # a (re)started collector never continues into a moving arm
        while not (lifecycle.stop_requested or self.stop_condition_met()):
            if not self._wait_while_held():
                break
            try:
                if lifecycle.needs_reset:
                    self._recover_arm()
                    if lifecycle.hold is not None:
                        continue
                result = self.run_episode()
                waited_for = lifecycle.hold is not None and lifecycle.hold.kind in (HoldKind.link, HoldKind.camera)
                if result.outcome == "complete":
                    self._link_losses = 0
                faults = 0 if result.outcome != "fault" else faults + (0 if waited_for else 1)
            except DriverFault as fault:
                lifecycle.needs_reset = True
                self.store.log_event("driver_fault", reason=fault.reason.value, message=fault.message, fsync=True)
                # a lost link or camera is waited for, not counted toward giving up
                if not (self._hold_for_link(fault) or self._hold_for_camera(fault)):
                    faults += 1
            if faults >= MAX_CONSECUTIVE_FAULTS:
                self.store.log_event("giving_up", faults=faults, fsync=True)
                return 1
        if lifecycle.needs_reset and lifecycle.may_move_home():
            with contextlib.suppress(DriverFault):
                self._recover_arm()  # leave the arm at home, at rest
        elif lifecycle.needs_reset:
            with contextlib.suppress(DriverFault):
                self.safe.stop()  # at rest where it is: e-stopped, or held for the operator
            self.store.log_event("not_moved_home", reason=lifecycle.hold_reason or "e-stop", fsync=True)
        lifecycle.enter(Activity.stopped)
        self.store.log_event("session_stop", episodes=self.episodes, steps=self.steps, fsync=True)
        self._poll(force_telemetry=True)
        return 0

    def _recover_arm(self) -> None:
        """Bring the arm to rest, then to home (planned through the filter on hardware).

        When no safe path home can be planned (a folded pose the planner refuses), the arm stays
        stopped and the collector holds for the operator to guide it back by hand."""
        self.lifecycle.enter(Activity.resetting)
        self.safe.stop()
        try:
            self.safe.reset(np.array(self.config.home_q), planned=not self.config.simulated)
            self.lifecycle.needs_reset = False
        except ResetPlanningError as error:
            self.safe.stop()
            self.lifecycle.hold_for(
                HoldKind.reset, f"no safe reset path ({error}): guide the arm near home by hand, then resume"
            )
            self.store.log_event("reset_refused", message=str(error), fsync=True)

    def _wait_while_held(self, recorder: EpisodeRecorder | None = None) -> bool:
        """Idle with the arm stopped while paused or held; False if a stop came meanwhile.

        A hold for free space (``store:``) clears by itself once space is back; a failed write
        (``disk:``) needs the operator's ``resume``, after which the writes are retried (the
        episode's unwritten steps, held events) and the hold comes back if they fail again."""
        stopped, lifecycle = False, self.lifecycle
        while True:
            while lifecycle.keeps_arm_still:
                if not stopped:
                    with contextlib.suppress(DriverFault):
                        self.safe.stop()
                    stopped = True
                self._poll()
                if lifecycle.stop_requested:
                    return False
                # a store hold clears once the writer caught up / space was freed, a link hold once
                # the robot answers again
                lifecycle.clear_hold_if_recovered(self._hold_recovered)
                time.sleep(0.02)
            failed = self._retry_writes(recorder)
            if failed is None:
                break
            self._hold_for_disk(*failed)
        if stopped:
            self.safe.filter.notify_stopped()
        return True

    def _hold_recovered(self) -> bool:
        hold = self.lifecycle.hold
        if hold is not None and hold.kind is HoldKind.link:
            now = time.monotonic()
            if now - self._link_checked_at < LINK_CHECK_PERIOD_S:
                return False
            self._link_checked_at = now
            reachable = getattr(self.driver, "reachable", None)
            if reachable is not None and reachable():
                self.store.log_event("link_back", fsync=True)
                return True
            return reachable is None
        return not self.store.health().hold

    def _hold_for_link(self, fault: DriverFault) -> bool:
        """Hold for a lost robot link (True) when ``fault`` is one (the robot does not answer).

        The hold clears by itself when the robot answers again; after `MAX_LINK_LOSSES` losses with
        no episode finished in between it waits for the operator instead.  A hold that already waits
        for the operator is kept (a link hold would clear by itself)."""
        if fault.reason not in LINK_FAULTS:
            return False
        self.lifecycle.needs_reset = True
        self._link_losses += 1
        current = self.lifecycle.hold
        if current is not None and not current.clears_by_itself:
            return True
        if self._link_losses >= MAX_LINK_LOSSES:
            self.lifecycle.hold_for(
                HoldKind.safety,
                f"the robot link was lost {self._link_losses} times without a finished episode ({fault.message}): "
                "check the robot and the network, then resume",
            )
            self._link_losses = 0
            return True
        self.lifecycle.hold_for(HoldKind.link, f"the robot does not answer ({fault.message}); waiting for it")
        self._link_checked_at = time.monotonic()
        return True

    def _hold_for_camera(self, fault: DriverFault) -> bool:
        """Hold for the operator (True) when ``fault`` is a camera that stopped delivering: the
        episode ended as ``fault``; the bridge stopped the arm and reopens the camera by itself
        (its ``reopen_after_s``); after ``resume`` the arm is recovered and brought home, and a
        camera still lost then holds again."""
        if fault.reason is not FaultReason.camera_error:
            return False
        self.lifecycle.needs_reset = True
        self.lifecycle.hold_for(HoldKind.camera, f"{fault.message}; reconnect it, then resume")
        return True

    def _writes_pending(self, recorder: EpisodeRecorder) -> bool:
        """Whether a failed write waits for its retry (a resume may have come in through any poll:
        the retry must happen before the next step, not only in the wait that set the hold)."""
        return recorder.write_error is not None or self.store.events_pending

    def _retry_writes(self, recorder: EpisodeRecorder | None) -> tuple[str, OSError] | None:
        """Retry what a full disk left unwritten; (what, error) when it still fails."""
        if not self.store.retry_events():
            return "writing events.jsonl", OSError(errno.ENOSPC, self.store.health().reason)
        if recorder is not None and recorder.write_error is not None:
            try:
                recorder.flush(timeout=30.0)
            except (StoreWriteError, TimeoutError) as error:
                return f"recording episode {recorder.index}", error
        return None

    def _hold_for_disk(self, what: str, error: OSError) -> None:
        """A write failed (ENOSPC, EIO, ...): stop the arm and hold until the operator resumes.
        Nothing is lost: unwritten steps stay in memory, flushed ones in the `.partial`."""
        with contextlib.suppress(DriverFault):
            self.safe.stop()
        why = getattr(error, "strerror", None) or str(error)
        hold = self.lifecycle.hold_for(
            HoldKind.disk, f"{what} failed: {why}; free space on {self.config.data_root}, then resume"
        )
        self.store.log_event("store_error", reason=hold.reason, fsync=True)

    def run_episode(self) -> EpisodeResult:
        """Record one episode, then let the explorer learn and reset the arm."""
        explorer, safe = self.explorer, self.safe
        explorer_info = explorer.begin_episode()
        try:
            recorder = self.store.begin_episode(
                {"explorer": self.config.explorer.name, **explorer_info},
                seeds={"session": self.config.seed, "episode_index": self.store.next_index},
            )
        except OSError as error:  # StoreWriteError, or the index file: no room for a new episode
            self._hold_for_disk(f"starting episode {self.store.next_index}", error)
            return EpisodeResult(-1, 0, "not_started")
        self.episode_index, self.episode_step = recorder.index, 0
        self.episode_interventions = 0
        self.frame_ages.start_episode()
        self.lifecycle.enter(Activity.running)
        observations, loop_periods, counts = [], [], collections.Counter()
        missed_deadlines, outcome = 0, "complete"
        period = 1.0 / self.config.control_rate_hz
        state = safe.read_state()
        next_deadline = time.monotonic() + period
        previous_start = None
        try:
            for step in range(self.episode_steps):
                started = time.monotonic()
                if previous_start is not None:
                    loop_periods.append(started - previous_start)
                previous_start = started
                self._step_times.append(started)
                self._poll()
                if self.lifecycle.take_estop_request():
                    outcome = "operator_stop"
                    self._estop_now()
                    break
                if self.lifecycle.keeps_arm_still or self._writes_pending(recorder):
                    if not self._wait_while_held(recorder):
                        outcome = "operator_stop"  # stopped while paused: the episode ends here
                        break
                    state = safe.read_state()
                    next_deadline = time.monotonic() + period
                observation = self.observation(state)
                action = np.asarray(explorer.act(observation), dtype=np.float64)
                command, events = safe.act(state, action, deadline=next_deadline if self.realtime else None)
                observations.append(observation)
                self.frame_ages.add(state)
                try:
                    healthy = recorder.append(self._step_record(state, action, command.values, len(events)))
                except StoreWriteError as error:  # the step is kept in memory; the chunk is retried
                    self._hold_for_disk(f"recording episode {recorder.index}", error)
                    healthy = True
                if not healthy:
                    health = self.store.health()
                    if health.state == "error":
                        self._hold_for_disk(
                            f"recording episode {recorder.index}", health.error or OSError(health.reason)
                        )
                    else:
                        self.safe.stop()
                        hold = self.lifecycle.hold_for(HoldKind.store, health.reason)
                        self.store.log_event("store_hold", reason=hold.reason, fsync=True)
                self._count_events(events, counts)
                self.episode_step = step + 1
                state = safe.read_state()
                verdict = self.monitor.check(state, now=time.monotonic())
                collisions = contact_events(self.driver.arm_contacts()) if hasattr(self.driver, "arm_contacts") else []
                if not verdict.ok or collisions:
                    self._count_events(list(verdict.events) + collisions, counts, log_all=True)
                    outcome = "safety_stop"
                    if verdict.action == "hold":
                        why = "repeated safety violations: inspect the arm, then resume"
                        self.lifecycle.hold_for(HoldKind.safety, why)
                    break
                if self.realtime:
                    delay = next_deadline - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    elif -delay > period / 2:
                        missed_deadlines += 1
                    next_deadline += period
                    now = time.monotonic()
                    if next_deadline < now:  # after a stall: re-pace from now, never a burst of late steps
                        next_deadline = now + period
        except DriverFault as fault:
            if fault.reason is FaultReason.collision_reflex:  # the arm stopped itself: a safety stop
                outcome = "safety_stop"
                self._count_events([SafetyEvent("collision_reflex", None, 1.0, fault.message)], counts, log_all=True)
            else:
                outcome = "fault"
                self.store.log_event("driver_fault", reason=fault.reason.value, message=fault.message, fsync=True)
                if not self._hold_for_link(fault):
                    self._hold_for_camera(fault)
        if outcome != "complete":
            with contextlib.suppress(DriverFault):
                safe.stop()
        return self._end_episode(recorder, outcome, observations, loop_periods, missed_deadlines, counts)

    def _step_record(self, state: RobotState, action: np.ndarray, command: np.ndarray, n_events: int) -> dict:
        step = {
            "time": np.float64(state.time),
            "obs/q": state.q,
            "obs/dq": state.dq,
            "obs/tip_pos": state.tip_pos,
            "obs/gripper_width": np.float64(state.gripper_width),
            "action": action,
            "command": command,
            "safety/interventions": np.int16(n_events),
        }
        for name, image in state.images.items():
            step[f"obs/images/{name}"] = image
        for key, value in state.privileged.items():
            step[f"privileged/{key}"] = value
        return step

    def _count_events(self, events: list[SafetyEvent], counts: collections.Counter, log_all: bool = False) -> None:
        for event in events:
            counts[event.kind] += 1
            if log_all or event.kind in LOGGED_EVENT_KINDS:
                record = event.to_dict()
                self.last_incident = {**record, "magnitude": _rounded(record.get("magnitude")), "at": _now_iso()}
                # The event's own kind travels as "event": the store's record already has a "kind" ("safety").
                fields = {("event" if key == "kind" else key): value for key, value in record.items()}
                self.store.log_event("safety", episode=self.episode_index, **fields, fsync=True)
            else:
                self.episode_interventions += 1

    def _end_episode(self, recorder, outcome, observations, loop_periods, missed, counts) -> EpisodeResult:
        periods = np.array(loop_periods) if loop_periods else np.zeros(1)
        timing = {
            "loop_period_mean_s": float(periods.mean()),
            "loop_period_p99_s": float(np.percentile(periods, 99)),
            "loop_period_max_s": float(periods.max()),
            "missed_deadlines": missed,
            "realtime": self.realtime,
        }
        steps = recorder.steps
        index = recorder.index
        metadata = {"timing": timing, "safety_event_counts": dict(counts), "camera_frames": self.frame_ages.summary()}
        finished, info = self._finish(recorder, outcome, metadata)
        if not finished:  # stopped while the disk was full: the .partial is salvaged by the next start
            recorder.abandon()
            self.lifecycle.needs_reset = True
            return EpisodeResult(index, steps, "unfinished")
        if info is not None:
            self.episodes += 1
            self.steps += steps
        self.lifecycle.enter(Activity.training)
        with contextlib.suppress(DriverFault):  # a lost link: the loop holds for it after training
            self.safe.stop()  # the arm is held still while the explorer trains
        self.explorer.on_episode_end(np.array(observations))
        started = time.monotonic()
        stats = self.explorer.train(self.store)
        train_s = time.monotonic() - started
        self._save_checkpoint(index)
        self.store.log_event(
            "episode_end", episode=index, steps=steps, outcome=outcome, train_s=round(train_s, 4), **stats
        )
        self.lifecycle.needs_reset = True
        return EpisodeResult(index, steps, outcome)

    def _finish(self, recorder: EpisodeRecorder, outcome: str, metadata: dict) -> tuple[bool, Any]:
        """Finish the episode, holding (arm stopped) and retrying after ``resume`` while the disk
        refuses; (False, None) when a stop came while held."""
        while True:
            try:
                return True, recorder.finish(outcome, metadata)
            except StoreWriteError as error:
                self._hold_for_disk(f"finishing episode {recorder.index}", error)
                if not self._wait_while_held():
                    return False, None

    def _save_checkpoint(self, after_episode: int) -> None:
        """Replace the explorer checkpoint atomically, holding and retrying while the disk refuses
        (on a stop meanwhile the previous checkpoint stays, whole)."""
        data = encode_explorer_checkpoint(self.explorer.state_dict(), after_episode)
        while True:
            try:
                atomic_write_bytes(self.store.session_dir / CHECKPOINT_PATH, data)
                return
            except OSError as error:
                self._hold_for_disk("saving the explorer checkpoint", error)
                if not self._wait_while_held():
                    return

    def _close(self) -> None:
        if self.safe is not None:
            with contextlib.suppress(DriverFault):
                self.safe.stop()
        if self.driver is not None:
            with contextlib.suppress(DriverFault):
                self.driver.close()
        if self.control is not None:
            self.control.close()
        if self.store is not None:
            self.store.close()


def position_indices(observation: str) -> tuple[int, ...] | None:
    """The components of a vector observation of kind ``observation`` that are positions (every field
    but the joint velocities ``obs/dq``; `store.spec.OBSERVATION_FIELDS` gives the layout); None for
    image observations."""
    from store.spec import FIELD_SIZES, OBSERVATION_FIELDS

    if observation not in OBSERVATION_FIELDS:
        return None
    indices, start = [], 0
    for field in OBSERVATION_FIELDS[observation]:
        size = FIELD_SIZES[field]
        if field != "obs/dq":
            indices.extend(range(start, start + size))
        start += size
    return tuple(indices)
