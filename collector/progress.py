"""The live progress display of `pandalab collect` (foreground) and its plain-log twin (daemon)."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


def eta_seconds(status: dict[str, Any]) -> float | None:
    """Seconds to the nearest stop condition at the current step rate, or None if unknown."""
    rate = status.get("step_rate_hz") or 0.0
    target = status.get("stop_at") or {}
    estimates = []
    if target.get("wall_time_s"):
        estimates.append(max(0.0, target["wall_time_s"] - status["elapsed_s"]))
    if rate > 0 and target.get("steps"):
        estimates.append(max(0, target["steps"] - status["steps"]) / rate)
    if rate > 0 and target.get("episodes"):
        remaining = max(0, target["episodes"] - status["episodes"]) * status["episode_steps"] - status["episode_step"]
        estimates.append(max(0, remaining) / rate)
    return min(estimates) if estimates else None


def _format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _event_text(event: dict[str, Any] | None) -> str:
    if not event:
        return "none"
    where = "" if event.get("where") is None else f" {event['where']}"
    magnitude = event.get("magnitude")
    amount = f" ({magnitude:.3g})" if isinstance(magnitude, int | float) else ""
    when = f" at {event['at'][11:]}" if event.get("at") else ""
    return f"{event['kind']}{where}{amount}{when}"


def _state_text(status: dict[str, Any]) -> str:
    state = status["state"]
    if status.get("hold_reason"):
        return f"{state}: {status['hold_reason']}"
    if state == "stopping":
        return "stopping: finishing the episode (Ctrl-C again: stop the arm now and exit)"
    return state


def render_status(status: dict[str, Any]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("session", f"{status['session']}   state: {_state_text(status)}")
    table.add_row("episode", f"{status['episode']}  step {status['episode_step']}/{status['episode_steps']}")
    table.add_row("collected", f"{status['episodes']} episodes, {status['steps']} steps recorded")
    table.add_row("rate", f"{status['step_rate_hz']:.1f} steps/s   ETA {_format_duration(eta_seconds(status))}")
    table.add_row("safety", f"{status.get('interventions', 0)} filter interventions this episode")
    table.add_row("last incident", _event_text(status.get("last_incident")))
    drops, ages = status.get("camera_drops") or {}, status.get("camera_age_s") or {}
    if drops:  # frames older than two control periods at their step, this episode (collector/frame_ages.py)
        cameras = ", ".join(
            f"{name} {count} drops, {1000 * ages.get(name, 0.0):.0f} ms old" for name, count in drops.items()
        )
        table.add_row("cameras", cameras)
    table.add_row("disk free", f"{status.get('disk_free_gb')} GB")
    return table


class ProgressDisplay:
    """A rich live panel on a terminal; one plain line every ``log_every_s`` otherwise."""

    def __init__(self, log_every_s: float = 10.0) -> None:
        self.interactive = sys.stdout.isatty()
        self.console = Console()
        self.live = Live(console=self.console, refresh_per_second=4) if self.interactive else None
        self.log_every_s = log_every_s
        self._last_line = 0.0
        self._last_state: str | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def __call__(self, status: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.update(render_status(status))
            return
        now = time.monotonic()
        changed = status["state"] != self._last_state
        self._last_state = status["state"]
        if now - self._last_line >= self.log_every_s or changed:
            self._last_line = now
            print(
                f"[{time.strftime('%H:%M:%S')}] {_state_text(status)} | episode {status['episode']} "
                f"step {status['episode_step']} | {status['episodes']} episodes {status['steps']} steps "
                f"| {status['step_rate_hz']:.1f} steps/s ETA {_format_duration(eta_seconds(status))} "
                f"| last incident: {_event_text(status.get('last_incident'))}",
                flush=True,
            )
