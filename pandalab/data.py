"""`pandalab data info|verify|video|coverage`: summarise, check, render and plot recorded sessions.

Every command takes session directories or data roots holding several sessions
(`store.find_sessions`), reads through the store's API, and skips a damaged episode with
a warning naming the file instead of crashing.  Damage is reported, never a traceback: `info`
counts missing, damaged (by size), unlisted and partial episode files and a damaged session.yaml
or explorer checkpoint per session; `verify` checks every byte (checksums, HDF5, schema), that
session.yaml is a YAML mapping and that the explorer checkpoint loads, and fails on any of them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import pathlib
import re
import warnings
from collections.abc import Sequence

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from collector.checkpoint import DamagedCheckpointError, check_explorer_checkpoint, load_explorer_checkpoint
from store import (
    SESSION_YAML,
    SPEC_FILE,
    DamagedEpisodeError,
    SpecError,
    find_sessions,
    iter_episodes,
    open_episode,
    read_manifest,
    read_session_spec,
    read_session_yaml,
    verify_session,
)

EPISODE_FILE = re.compile(r"^episode_\d+\.(h5|partial|partial\.damaged)$")
"""Episode file names inside ``<session>/episodes/`` (the store's documented layout)."""
CUBE_FACE_COLOURS = ("red", "cyan", "green", "blue", "yellow", "magenta")
"""Face index -> colour, as `sim.scene.CUBE_FACES` orders them (the collector does not import sim)."""
TIP_GRID_CELL_M = 0.05
"""Cell size of the tool-tip coverage grid, m."""
TIP_GRID_BOUNDS = ((0.0, 1.0), (-0.6, 0.6), (-0.15, 0.75))
"""Extent (x, y, z) of the fixed tool-tip grid, base frame, m: the Panda's reach in front of it."""
CUBE_GRID_CELL_M = 0.02
"""Cell size of the cube x-y coverage grid, m."""
CUBE_GRID_BOUNDS = ((0.16, 0.96), (-0.4, 0.4))
"""Extent (x, y) of the cube grid: the table top, base frame, m."""


class DataToolError(ValueError):
    """A request that cannot be carried out (no sessions, no such episode or camera)."""


def _sessions(paths: Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
    sessions = find_sessions(paths)
    if not sessions:
        raise DataToolError(f"no pandalab sessions under {', '.join(map(str, paths))}")
    return sessions


CHECKPOINT = pathlib.Path("explorer") / "checkpoint.pt"
"""The explorer checkpoint inside a session (`collector.session.CHECKPOINT_PATH`)."""
QUARANTINE = "quarantine"
"""Where the collector moves a damaged explorer checkpoint (`collector.checkpoint.quarantine_checkpoint`)."""
WIDE = 10_000
"""Console width when the output is not a terminal (a file, a pipe): never cut a line."""


def _console() -> Console:
    """Rich console on stdout: the terminal's width, or unlimited when piped / redirected."""
    console = Console()
    return console if console.is_terminal else Console(width=WIDE)


def _directory_bytes(path: pathlib.Path) -> int:
    total = 0
    for f in path.rglob("*"):
        with contextlib.suppress(OSError):  # a file that vanished or cannot be read meanwhile
            if f.is_file():
                total += f.stat().st_size
    return total


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _setting(config: dict | None, *keys: str):
    """config[k1][k2]... or None when any level is missing or not a mapping."""
    value = config
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _cameras(config: dict | None) -> list[str]:
    cameras = _setting(config, "robot", "options", "cameras")
    if not isinstance(cameras, list):
        return []
    return [str(c.get("name", "?")) if isinstance(c, dict) else "?" for c in cameras]


def _episode_files(session: pathlib.Path, manifest: list) -> dict[str, list[str]]:
    """A quick look at the episode files (no checksums: `verify` reads every byte): listed files
    that are missing or whose size differs from the manifest, .h5 files the manifest does not
    list, and .partial files of interrupted episodes."""
    damaged, missing = [], []
    for entry in manifest:
        try:
            size = entry.path.stat().st_size
        except FileNotFoundError:
            missing.append(entry.file)
            continue
        except OSError as error:
            damaged.append(f"{entry.file}: cannot read: {error.strerror}")
            continue
        if not entry.path.is_file():
            damaged.append(f"{entry.file}: not a regular file")
        elif size != entry.bytes:
            damaged.append(f"{entry.file}: {size} bytes, the manifest says {entry.bytes}")
    listed = {pathlib.Path(entry.file).name for entry in manifest}
    episodes = session / "episodes"
    names = sorted(p.name for p in episodes.iterdir()) if episodes.is_dir() else []
    unlisted = [f"episodes/{n}" for n in names if EPISODE_FILE.match(n) and n.endswith(".h5") and n not in listed]
    partial = [f"episodes/{n}" for n in names if EPISODE_FILE.match(n) and ".partial" in n]
    return {"damaged": damaged, "missing": missing, "unlisted": unlisted, "partial": partial}


def _checkpoint_problem(session: pathlib.Path, full: bool) -> str | None:
    """None when the session has no explorer checkpoint or a sound one, else what is wrong."""
    path = session / CHECKPOINT
    if not path.exists():
        return None
    try:
        if full:
            load_explorer_checkpoint(path)
        else:
            check_explorer_checkpoint(path)
    except DamagedCheckpointError as error:
        return error.reason
    except FileNotFoundError:
        return None
    return None


def _quarantined(session: pathlib.Path) -> list[str]:
    folder = session / QUARANTINE
    with contextlib.suppress(OSError):
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return []


def session_health(session: pathlib.Path) -> dict:
    """What `info` reports on one session: its settings (None when unknown), counts, and every
    problem found, each a line naming the file (``problems``; empty when healthy)."""
    session = pathlib.Path(session)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest = read_manifest(session)
    manifest_problems = [_one_line(w.message) for w in caught]
    config, yaml_problem = read_session_yaml(session)
    files = _episode_files(session, manifest)
    checkpoint_problem = _checkpoint_problem(session, full=False)
    problems = [f"manifest.jsonl: {p}" for p in manifest_problems]
    problems += [f"{SESSION_YAML}: {yaml_problem}"] if yaml_problem else []
    problems += [f"damaged {d}" for d in files["damaged"]]
    problems += [f"missing {m} (listed in the manifest)" for m in files["missing"]]
    problems += [f"unlisted {u} (not in the manifest)" for u in files["unlisted"]]
    problems += [f"partial {p} (an interrupted episode; resuming the session salvages it)" for p in files["partial"]]
    problems += [f"{CHECKPOINT.as_posix()}: {checkpoint_problem}"] if checkpoint_problem else []
    return {
        "session": str(session),
        "session_id": _setting(config, "session_id") or session.name,
        "episodes": len(manifest),
        "steps": sum(e.steps for e in manifest),
        "outcomes": dict(collections.Counter(e.outcome for e in manifest)),
        "bytes": _directory_bytes(session),
        "backend": _setting(config, "robot", "backend"),
        "action_space": _setting(config, "action_space"),
        "explorer": _setting(config, "explorer", "name"),
        "cameras": _cameras(config),
        "damage": {
            "episode_files_damaged": len(files["damaged"]),
            "episode_files_missing": len(files["missing"]),
            "episode_files_unlisted": len(files["unlisted"]),
            "episode_files_partial": len(files["partial"]),
            "manifest_lines_skipped": len(manifest_problems),
            "session_yaml": yaml_problem,
            "checkpoint": checkpoint_problem,
        },
        "checkpoint": (session / CHECKPOINT).exists(),
        "quarantined": _quarantined(session),
        "problems": problems,
    }


def _health_text(row: dict) -> str:
    damage = row["damage"]
    parts = [
        f"{damage[key]} {label}"
        for key, label in (
            ("episode_files_damaged", "damaged"),
            ("episode_files_missing", "missing"),
            ("episode_files_unlisted", "unlisted"),
            ("episode_files_partial", "partial"),
            ("manifest_lines_skipped", "bad manifest lines"),
        )
        if damage[key]
    ]
    if damage["session_yaml"]:
        parts.append("session.yaml missing" if damage["session_yaml"] == "missing" else "session.yaml damaged")
    if damage["checkpoint"]:
        parts.append("checkpoint unusable")
    if row["quarantined"]:
        parts.append(f"{len(row['quarantined'])} quarantined")
    return ", ".join(parts) or "ok"


def info(paths: Sequence[str | pathlib.Path], console: Console | None = None, as_json: bool = False) -> list[dict]:
    """Per session: episodes, recorded steps, outcomes, size on disk, action space, cameras, and its
    damage (episode files missing, damaged by size, unlisted or partial; session.yaml or the
    explorer checkpoint damaged).  Prints a table (full width when not on a terminal), or with
    ``as_json`` one JSON document ``{"sessions": [...], "total": {...}}``.  Checksums are not
    read here: `verify` does that."""
    rows = []
    for session in _sessions(paths):
        try:
            rows.append(session_health(session))
        except OSError as error:
            raise DataToolError(f"{session}: cannot read: {error.strerror or error}") from None
    total = {
        "sessions": len(rows),
        "episodes": sum(r["episodes"] for r in rows),
        "steps": sum(r["steps"] for r in rows),
        "bytes": sum(r["bytes"] for r in rows),
        "sessions_with_problems": sum(bool(r["problems"]) for r in rows),
    }
    if as_json:
        print(json.dumps({"sessions": rows, "total": total}, indent=2))
        return rows
    console = console or _console()
    table = Table(title="pandalab sessions")
    for column in (
        "session",
        "backend",
        "action space",
        "explorer",
        "cameras",
        "episodes",
        "steps",
        "outcomes",
        "size",
        "health",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        health = _health_text(row)
        table.add_row(
            escape(pathlib.Path(row["session"]).name),
            escape(str(row["backend"] or "?")),
            escape(str(row["action_space"] or "?")),
            escape(str(row["explorer"] or "?")),
            escape(",".join(row["cameras"]) or "-"),
            str(row["episodes"]),
            str(row["steps"]),
            escape(", ".join(f"{k}: {v}" for k, v in sorted(row["outcomes"].items()))),
            f"{row['bytes'] / 1e6:.1f} MB",
            f"[red]{escape(health)}[/red]" if row["problems"] else health,
        )
    if len(rows) > 1:
        table.add_row(
            "total",
            "",
            "",
            "",
            "",
            str(total["episodes"]),
            str(total["steps"]),
            "",
            f"{total['bytes'] / 1e6:.1f} MB",
            f"{total['sessions_with_problems']} with problems" if total["sessions_with_problems"] else "ok",
        )
    console.print(table)
    console.print("in: " + escape(", ".join(sorted({str(pathlib.Path(r["session"]).parent) for r in rows}))))
    for row in rows:
        for problem in row["problems"]:
            console.print(f"[red]PROBLEM[/red] {escape(row['session'])}: {escape(problem)}")
    if total["sessions_with_problems"]:
        from pandalab.cli import runnable

        console.print(f"(sizes checked, not checksums: `{runnable()} data verify` reads every byte)")
    return rows


def _config_problem(session: pathlib.Path) -> str | None:
    """Whether session.yaml validates as a session config of this pandalab (None when it does)."""
    try:
        from collector.config import ConfigError, load_session_config
    except Exception as error:  # the config module failing to import is not the data's fault
        return f"not validated (collector.config: {_one_line(error)})"
    try:
        load_session_config(session / SESSION_YAML)
    except ConfigError as error:
        lines = [line.split(": ", 1)[-1] for line in str(error).splitlines() if line.strip()]
        more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
        return _one_line(lines[0] if lines else error) + more
    except Exception as error:
        return f"not validated: {type(error).__name__}: {_one_line(error)}"
    return None


def verify(paths: Sequence[str | pathlib.Path], console: Console | None = None) -> bool:
    """Checksums, schema and readability of every file; True when every session is clean.

    Besides the episode files (`store.verify_session`): session.yaml must be readable
    YAML holding a mapping, the session's description must read (`store.read_session_spec`:
    session_spec.json, or for an older session the one derived from session.yaml), and the
    explorer checkpoint, when there is one, must load
    (`collector.checkpoint.load_explorer_checkpoint`).  A session.yaml that parses but does not
    validate as this version's session config is reported (CONFIG) without failing: a config
    written by an older pandalab may not validate, and the data is still sound."""
    console = console or _console()
    clean = True
    for session in _sessions(paths):
        report = verify_session(session)
        lines = [report.summary()]
        _, yaml_problem = read_session_yaml(session)
        if yaml_problem == "missing":
            lines.append(f"  MISSING  {SESSION_YAML} (the trainer needs it for the action scale)")
        elif yaml_problem:
            lines.append(f"  DAMAGED  {SESSION_YAML}: {yaml_problem}")
        else:
            config_problem = _config_problem(session)
            if config_problem:
                lines.append(f"  CONFIG   {SESSION_YAML} does not validate with this pandalab: {config_problem}")
        spec_problem = None
        if not yaml_problem or (session / SPEC_FILE).exists():
            try:
                read_session_spec(session)  # session_spec.json, or derived from session.yaml
            except SpecError as error:
                spec_problem = str(error)
                lines.append(f"  DAMAGED  {spec_problem}")
        checkpoint_problem = _checkpoint_problem(session, full=True)
        if checkpoint_problem:
            lines.append(f"  DAMAGED  {CHECKPOINT.as_posix()}: {checkpoint_problem}")
        quarantined = _quarantined(session)
        if quarantined:
            lines.append(
                f"  NOTE     {QUARANTINE}/ holds {len(quarantined)} file(s) set aside: {', '.join(quarantined)}"
            )
        ok = report.clean and not yaml_problem and not spec_problem and not checkpoint_problem
        clean &= ok
        style = "green" if ok else "red"
        console.print(f"[{style}]{'OK' if ok else 'PROBLEMS'}[/{style}] " + escape("\n".join(lines)))
    return clean


def video(
    session: str | pathlib.Path, episode: int, out: str | pathlib.Path | None, camera: str | None, fps: float
) -> pathlib.Path:
    """Write an H.264 mp4 of one camera of one episode (`store.video.write_mp4`)."""
    from store.video import VideoError, write_mp4

    session = pathlib.Path(session)
    listed = {e.index: e for e in read_manifest(session)}
    if episode not in listed:
        raise DataToolError(f"{session}: no finished episode {episode}; listed: {sorted(listed) or 'none'}")
    try:
        recorded = open_episode(listed[episode].path, expected_sha256=listed[episode].sha256)
    except DamagedEpisodeError as error:
        raise DataToolError(f"{error.path}: damaged episode: {error.reason}") from None
    cameras = sorted(key.removeprefix("obs/images/") for key in recorded.keys if key.startswith("obs/images/"))
    if not cameras:
        raise DataToolError(f"{recorded.path}: this episode was recorded without cameras")
    camera = camera or cameras[0]
    if camera not in cameras:
        raise DataToolError(f"{recorded.path}: no camera {camera!r}; recorded: {', '.join(cameras)}")
    frames = recorded.load(f"obs/images/{camera}")
    out = pathlib.Path(out or session / f"episode_{episode:06d}_{camera}.mp4")
    try:
        return write_mp4(out, frames, fps)
    except VideoError as error:
        raise DataToolError(str(error)) from None
    except OSError as error:
        raise DataToolError(f"{out}: cannot write: {error.strerror or error}") from None


def _occupied_cells(points: np.ndarray, bounds, cell: float) -> int:
    if len(points) == 0:
        return 0
    lows = np.array([b[0] for b in bounds])
    counts = np.array([int(np.ceil((b[1] - b[0]) / cell)) for b in bounds])
    index = np.floor((points - lows) / cell).astype(int)
    inside = np.all((index >= 0) & (index < counts), axis=1)
    return len({tuple(i) for i in index[inside]})


def coverage(paths: Sequence[str | pathlib.Path], out: str | pathlib.Path, console: Console | None = None) -> dict:
    """Plot tool-tip positions and (cube scene) cube x-y positions by top-face colour, as seed 003
    Fig. 5, and count occupied cells of fixed grids; returns the counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    console = console or Console()
    tips, cubes, faces = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        for recorded in iter_episodes(_sessions(paths)):
            tips.append(recorded.load("obs/tip_pos"))
            if "privileged/cube_pos" in recorded.keys:
                cubes.append(recorded.load("privileged/cube_pos")[:, :2])
                faces.append(recorded.load("privileged/cube_top_face"))
    if not tips:
        raise DataToolError("no readable episodes")
    tip = np.concatenate(tips)
    result = {"steps": len(tip), "tip_cells": _occupied_cells(tip, TIP_GRID_BOUNDS, TIP_GRID_CELL_M)}
    has_cube = bool(cubes)
    columns = 2 + (len(CUBE_FACE_COLOURS) if has_cube else 0)
    figure, axes = plt.subplots(1, columns, figsize=(3.2 * columns, 3.4))
    axes[0].scatter(tip[:, 0], tip[:, 1], s=1, alpha=0.3)
    axes[0].set(title=f"tool tip x-y ({result['tip_cells']} cells)", xlabel="x (m)", ylabel="y (m)", aspect="equal")
    axes[1].scatter(tip[:, 0], tip[:, 2], s=1, alpha=0.3)
    axes[1].set(title="tool tip x-z", xlabel="x (m)", ylabel="z (m)", aspect="equal")
    if has_cube:
        cube, face = np.concatenate(cubes), np.concatenate(faces).astype(int)
        result["cube_cells"] = _occupied_cells(cube, CUBE_GRID_BOUNDS, CUBE_GRID_CELL_M)
        result["top_face_counts"] = {c: int(np.sum(face == i)) for i, c in enumerate(CUBE_FACE_COLOURS)}
        for i, colour in enumerate(CUBE_FACE_COLOURS):
            ax = axes[2 + i]
            chosen = cube[face == i]
            ax.scatter(chosen[:, 0], chosen[:, 1], s=2, color=colour if colour != "yellow" else "gold")
            ax.set(title=f"cube, {colour} up ({len(chosen)})", xlim=CUBE_GRID_BOUNDS[0], ylim=CUBE_GRID_BOUNDS[1])
            ax.set_aspect("equal")
    figure.tight_layout()
    out = pathlib.Path(out)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    result["png"] = str(out)
    console.print(json.dumps(result, indent=2))
    return result
