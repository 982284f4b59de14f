"""`pandalab data info|verify|video|coverage`: summarise, check, render and plot recorded sessions.

Every command takes session directories or data roots holding several sessions
(`collector.store.find_sessions`), reads through the store's API, and skips a damaged episode with
a warning naming the file instead of crashing.
"""

from __future__ import annotations

import collections
import json
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from collector.store import (
    DamagedEpisodeError,
    find_sessions,
    iter_episodes,
    open_episode,
    read_manifest,
    verify_session,
)

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


def _directory_bytes(path: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def info(paths: Sequence[str | pathlib.Path], console: Console | None = None) -> list[dict]:
    """Per session: episodes, transitions, outcomes, size on disk, action space, cameras."""
    console = console or Console()
    rows = []
    for session in _sessions(paths):
        manifest = read_manifest(session)
        config = yaml.safe_load((session / "session.yaml").read_text()) if (session / "session.yaml").exists() else {}
        cameras = [c["name"] for c in (config.get("robot", {}).get("options", {}).get("cameras") or [])]
        rows.append(
            {
                "session": str(session),
                "episodes": len(manifest),
                "transitions": sum(e.steps for e in manifest),
                "outcomes": dict(collections.Counter(e.outcome for e in manifest)),
                "bytes": _directory_bytes(session),
                "backend": config.get("robot", {}).get("backend", "?"),
                "action_space": config.get("action_space", "?"),
                "explorer": config.get("explorer", {}).get("name", "?"),
                "cameras": cameras,
            }
        )
    table = Table(title="pandalab sessions")
    for column in (
        "session",
        "backend",
        "action space",
        "explorer",
        "cameras",
        "episodes",
        "transitions",
        "outcomes",
        "size",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            pathlib.Path(row["session"]).name,
            row["backend"],
            row["action_space"],
            row["explorer"],
            ",".join(row["cameras"]) or "-",
            str(row["episodes"]),
            str(row["transitions"]),
            ", ".join(f"{k}: {v}" for k, v in sorted(row["outcomes"].items())),
            f"{row['bytes'] / 1e6:.1f} MB",
        )
    if len(rows) > 1:
        table.add_row(
            "total",
            "",
            "",
            "",
            "",
            str(sum(r["episodes"] for r in rows)),
            str(sum(r["transitions"] for r in rows)),
            "",
            f"{sum(r['bytes'] for r in rows) / 1e6:.1f} MB",
        )
    console.print(table)
    console.print("in: " + ", ".join(sorted({str(pathlib.Path(r["session"]).parent) for r in rows})))
    return rows


def verify(paths: Sequence[str | pathlib.Path], console: Console | None = None) -> bool:
    """Checksums, schema and readability of every file; True when every session is clean."""
    console = console or Console()
    clean = True
    for session in _sessions(paths):
        report = verify_session(session)
        clean &= report.clean
        style = "green" if report.clean else "red"
        console.print(f"[{style}]{'OK' if report.clean else 'PROBLEMS'}[/{style}] {report.summary()}")
    return clean


def video(
    session: str | pathlib.Path, episode: int, out: str | pathlib.Path | None, camera: str | None, fps: float
) -> pathlib.Path:
    """Write an mp4 of one camera of one episode (OpenCV, mp4v)."""
    import cv2

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
    height, width = frames.shape[1:3]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise DataToolError(f"OpenCV cannot write {out}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return out


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
    result = {"transitions": len(tip), "tip_cells": _occupied_cells(tip, TIP_GRID_BOUNDS, TIP_GRID_CELL_M)}
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
