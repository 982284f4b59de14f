"""`pandalab data export SESSION --to NAME`: a recorded session written in another tool's format.

A registry of export formats, each a function in its own module, imported only when that export
runs (exporting to one format never loads another's libraries).  Adding a format (LeRobot,
Minari, ...) is one module and one line of `EXPORTS`; the function is called as

    function(session_dir: Path, out: Path, *, warn: Callable[[str], None], **options) -> ExportResult

after `export_session` has checked what every export shares: the session directory exists and is
one session (not a data root), the output does not exist (nothing is ever overwritten).  The
function must leave nothing at ``out`` when it fails (write elsewhere and rename at the end), raise
`ExportError` (one line) for what the user can fix, and report each episode it skips through
``warn`` (one line naming the file).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXPORTS: dict[str, str] = {
    "rosbag2": "pandalab.exports.rosbag2:export_rosbag2",
    "lerobot": "pandalab.exports.lerobot:export_lerobot",
    "minari": "pandalab.exports.minari:export_minari",
}
"""Export name -> ``"module:function"``."""


class ExportError(ValueError):
    """An export that cannot be carried out; the message is one line naming the problem."""


@dataclasses.dataclass
class ExportResult:
    """What an export wrote."""

    out: Path
    format: str
    episodes: int
    steps: int
    messages: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)
    """One line per episode left out (damaged), naming its file."""

    def summary(self) -> str:
        skipped = f", {len(self.skipped)} damaged episode(s) skipped" if self.skipped else ""
        messages = f", {self.messages} messages" if self.messages else ""
        return f"wrote {self.out} ({self.format}): {self.episodes} episodes, {self.steps} steps{messages}{skipped}"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _export_function(to: str) -> Callable[..., ExportResult]:
    try:
        target = EXPORTS[to]
    except KeyError:
        raise ExportError(f"unknown export --to {to!r}; one of {', '.join(sorted(EXPORTS))}") from None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def default_out(session_dir: str | Path, to: str) -> Path:
    """``<session>/../<session name>.<to>``: beside the session, never inside it."""
    session_dir = Path(session_dir)
    return session_dir.absolute().parent / f"{session_dir.absolute().name}.{to}"


def export_session(
    session_dir: str | Path,
    to: str,
    out: str | Path | None = None,
    *,
    warn: Callable[[str], None] | None = None,
    **options: Any,
) -> ExportResult:
    """Export one session to format ``to`` at ``out`` (default `default_out`).  Raises
    `ExportError` (one line) for an unknown format or option, a path that is not one session,
    an output that exists, or a failure of the export itself; nothing is left at ``out`` then."""
    from store import find_sessions

    function = _export_function(to)
    accepted = inspect.signature(function).parameters
    for name in options:
        if name not in accepted or name in ("session_dir", "out", "warn"):
            raise ExportError(f"--{name.replace('_', '-')} does not apply to --to {to}")
    session_dir = Path(session_dir)
    if not session_dir.exists():
        raise ExportError(f"no such session directory: {session_dir}")
    if not session_dir.is_dir():
        raise ExportError(f"{session_dir} is not a directory")
    try:
        found = find_sessions(session_dir)
    except OSError as error:
        raise ExportError(f"{session_dir}: cannot read: {_one_line(error.strerror or error)}") from None
    if found != [session_dir]:
        held = f"; it holds the sessions {', '.join(p.name for p in found)}: name one" if found else ""
        raise ExportError(f"{session_dir} is not a pandalab session (no manifest.jsonl, no episodes/){held}")
    out = Path(out) if out is not None else default_out(session_dir, to)
    if out.exists() or out.is_symlink():
        raise ExportError(f"{out} exists already; not overwriting it (choose another --out)")
    return function(session_dir, out, warn=warn or (lambda line: None), **options)
