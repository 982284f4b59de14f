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

import contextlib
import dataclasses
import importlib
import inspect
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

EXPORTS: dict[str, str] = {
    "rosbag2": "pandalab.exports.rosbag2:export_rosbag2",
    "lerobot": "pandalab.exports.lerobot:export_lerobot",
    "minari": "pandalab.exports.minari:export_minari",
}
"""Export name -> ``"module:function"``."""
ROBOT_MODELS = ("panda", "fr3")
"""The robot models whose joints the exports name (``<model>_joint1..7``)."""


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


def one_line(text: object) -> str:
    """``text`` on one line: every run of white space (newlines too) becomes one space."""
    return " ".join(str(text).split())


class SkipEpisode(Exception):
    """An episode that cannot be exported (found before anything of it is written)."""


def readable_episodes(
    session_dir: Path, warn: Callable[[str], None], skipped: list[str], required_keys: tuple[str, ...]
) -> Iterator[Any]:
    """The session's readable episodes in order (`store.iter_episodes`); each damaged one is
    reported through ``warn`` (one line naming the file) and appended to ``skipped``."""
    from store import DamagedEpisodeWarning, ManifestWarning, iter_episodes

    others: list[warnings.WarningMessage] = []

    def relay(caught: list[warnings.WarningMessage]) -> None:
        for w in caught:
            if not issubclass(w.category, DamagedEpisodeWarning | ManifestWarning):
                others.append(w)
                continue
            line = one_line(w.message)
            if line.startswith("skipping damaged episode "):
                skipped.append(line.removeprefix("skipping damaged episode "))
            warn(line)
        caught.clear()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for episode in iter_episodes([session_dir], required_keys=required_keys):
            relay(caught)
            yield episode
        relay(caught)
    for w in others:  # not the store's damage reports: passed on as they came
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def skip(episode: Any, reason: str, warn: Callable[[str], None], skipped: list[str]) -> None:
    """Report ``episode`` as skipped for ``reason``: one ``warn`` line naming its file, and in ``skipped``."""
    line = f"{episode.path}: {reason}"
    skipped.append(line)
    warn(f"skipping damaged episode {line}")


def read_spec(session_dir: Path) -> Any:
    """The session's description (`store.read_session_spec`); `ExportError` when it cannot be read."""
    from store import SpecError, read_session_spec

    try:
        return read_session_spec(session_dir)
    except SpecError as error:
        raise ExportError(f"cannot read the session's description: {one_line(error)}") from None


def robot_model(session_dir: Path, spec: Any, refusal: str = "unknown robot model {model!r} (known: {known})") -> str:
    """The session's robot.model (one of `ROBOT_MODELS`; session.yaml's when the description has
    none, ``panda`` by default); otherwise `ExportError` "<session_dir>: " + ``refusal`` (a format
    string of ``model`` and ``known``)."""
    from store import read_session_yaml

    model = getattr(spec, "robot_model", None)
    if model is None:
        config, _ = read_session_yaml(session_dir)
        robot = config.get("robot") if isinstance(config, dict) else None
        model = robot.get("model", "panda") if isinstance(robot, dict) else "panda"
    if model not in ROBOT_MODELS:
        raise ExportError(f"{session_dir}: " + refusal.format(model=model, known=", ".join(ROBOT_MODELS)))
    return str(model)


def make_scratch(out: Path) -> Path:
    """A new folder beside ``out`` (its parents made) for an export to write in before renaming
    into place; `ExportError` when it cannot be made."""
    scratch = out.parent / f".{out.name}.export-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch.mkdir()
    except OSError as error:
        raise ExportError(f"{scratch}: cannot create: {one_line(error.strerror or error)}") from None
    return scratch


@contextlib.contextmanager
def writing(out: Path, scratch: Path, abort: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Around an export's writing in ``scratch`` (`make_scratch`): on a failure ``abort()`` runs
    first and an `OSError` becomes `ExportError` naming ``out``; ``scratch`` is removed at the end."""
    try:
        yield
    except OSError as error:
        abort()
        raise ExportError(f"{out}: cannot write: {one_line(error.strerror or error)}") from None
    except BaseException:
        abort()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def put_in_place(built: Path, out: Path) -> None:
    """Rename the finished ``built`` to ``out``, never over something that appeared there meanwhile."""
    if out.exists() or out.is_symlink():
        raise ExportError(f"{out} appeared while exporting; not overwriting it")
    os.rename(built, out)


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
        raise ExportError(f"{session_dir}: cannot read: {one_line(error.strerror or error)}") from None
    if found != [session_dir]:
        held = f"; it holds the sessions {', '.join(p.name for p in found)}: name one" if found else ""
        raise ExportError(f"{session_dir} is not a pandalab session (no manifest.jsonl, no episodes/){held}")
    out = Path(out) if out is not None else default_out(session_dir, to)
    if out.exists() or out.is_symlink():
        raise ExportError(f"{out} exists already; not overwriting it (choose another --out)")
    return function(session_dir, out, warn=warn or (lambda line: None), **options)
