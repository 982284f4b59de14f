"""Export a session as a LeRobotDataset v3.0 (the layout LeRobot 0.4's ``LeRobotDataset`` reads).

Written with pyarrow (Parquet) and PyAV (mp4), without LeRobot itself; tests/pandalab/
test_export_lerobot.py loads the result with LeRobot's own ``LeRobotDataset`` (PyAV video backend).

Layout (``<out>/``)::

    meta/info.json                              codebase_version "v3.0", fps, features, totals,
                                                chunk settings, path templates, "pandalab" (provenance)
    meta/stats.json                             per feature: min, max, mean, std, count, q01..q99
    meta/tasks.parquet                          task -> task_index (one task, below)
    meta/episodes/chunk-000/file-000.parquet    one row per episode (below)
    data/chunk-CCC/file-FFF.parquet             one row per step, episodes in order
    videos/observation.images.<camera>/chunk-CCC/file-FFF.mp4   the camera's frames, episodes in order

A data file holds up to ``DATA_FILE_MB`` MB and a video file up to ``VIDEO_FILE_MB`` MB (then the
next file begins), ``CHUNKS_SIZE`` files a chunk folder: LeRobot's own defaults.

Features (one row per recorded step; ``<j>`` = ``<model>_joint1..7``, the session's robot.model):

=============================== ============ ====================================================
feature                         dtype, shape from the episode's
=============================== ============ ====================================================
observation.state               float32 (14) obs/q then obs/dq (``<j>.pos`` rad, then ``<j>.vel`` rad/s)
action                          float32 (7)  command: the joint velocities sent after the safety
                                             filter, rad/s (``<j>.vel``)
observation.images.<camera>     video        obs/images/<camera>, (H, W, 3)
observation.<name>              float32 (n)  every other obs/<name> (tip_pos: x, y, z in m; ...)
explorer_action                 float32 (n)  action: what the explorer chose, before the filter (7
                                             joint velocities, or 3 tool-tip displacements in m)
recorded_time_ns                int64 (1)    time: the step's recorded time stamp in ns (driver
                                             clock on hardware, simulated time in simulation)
privileged.<name>, <a>.<b>      as recorded  privileged/<name> (cube_pos xyz, cube_quat wxyz,
                                             cube_top_face), <a>/<b> (safety/interventions)
timestamp                       float32 (1)  recorded time minus the episode's first: s since its start
frame_index, episode_index,     int64 (1)    LeRobot's indices (episode_index counts exported
index, task_index                            episodes from 0; the session's own index is below)
=============================== ============ ====================================================

Floats become float32 (LeRobot's dtype for states and actions; ~1e-7 relative), integers int64;
the recorded time is kept exactly as integer nanoseconds (LeRobot's loader hands floats to torch
as float32, which would round a clock reading to ms).  Fields of more than one dimension that are not
camera images, and a salvaged episode's ``step_index``, are not exported.

Time stamps.  ``timestamp`` is each step's recorded time since the episode's first step, not a
grid of 1 / fps: the video frames carry the same times (variable frame rate mp4, time base
1/100000 s), so LeRobot finds each step's frame at its timestamp (its lookup tolerance is 1e-4 s)
even when the recorded steps jitter; ``fps`` is the session's control rate (rounded).  Episodes
follow each other in a video file, each starting one control period after the previous one's last
frame (``videos/<key>/from_timestamp`` and ``to_timestamp`` in the episode rows).

Video.  H.264 (libx264) in yuv444p at CRF 0, keyframe every 2 frames (LeRobot's random-access
choice), no B-frames: lossless in YUV, so a decoded frame differs from the recorded RGB only by
the colour conversion's rounding (mean |error| 0.2-0.4 of 255, at most 2, on PyBullet and
robosuite renders; any frame size, odd ones too).  yuv444p is not the yuv420p browsers play: it
keeps the colours of small renders that 4:2:0 subsampling smears (mean error 1.3-1.6 at CRF 0).

Episodes.  One LeRobot episode per readable episode, in order; an episode salvaged with steps
missing becomes one LeRobot episode per run of consecutive steps (no frame sequence crosses a
gap, as in training).  The episode rows (meta/episodes) carry LeRobot's columns (episode_index,
tasks, length, data/..., videos/..., dataset_from_index, dataset_to_index, meta/episodes/...,
stats/...) and ours: ``outcome`` (complete, safety_stop, fault, operator_stop, crash_salvaged),
``pandalab/episode`` (the session's episode index), ``pandalab/file``, ``pandalab/first_step``
(the segment's first original step) and ``pandalab/started_at``.  The task (LeRobot's language
instruction) is ``"task-agnostic exploration (<explorer> explorer)"``: the data has no task until
one is chosen for training.

Damage.  A damaged episode file (checksum, HDF5, schema, missing obs/q, obs/dq or command), one
whose arrays do not match the first exported episode's, or whose time stamps are not finite or do
not increase, is skipped with a one-line warning naming it and listed in info.json's
``pandalab.skipped``; a session with no readable episode is an error.  The dataset is written into
a temporary folder beside the output and renamed into place when complete: a failure leaves
nothing at the output path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from pandalab.exports import (
    ExportError,
    ExportResult,
    SkipEpisode,
    make_scratch,
    one_line,
    put_in_place,
    read_spec,
    readable_episodes,
    robot_model,
    skip,
    writing,
)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
VIDEO_CODEC = "libx264"
PIX_FMT = "yuv444p"
CRF = 0
GOP = 2
TICKS_PER_S = 100_000
TIME_BASE = Fraction(1, TICKS_PER_S)
"""The mp4 time base: presentation times are integer ticks of 10 us."""
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_PREFIX = "obs/images/"
BLOCK_BYTES = 64 << 20
"""Frames are read in blocks of about this many bytes (bounded memory for any camera size)."""
STATS_FRAMES = 100
"""Image statistics use at most this many evenly spaced frames of an episode (as LeRobot samples)."""
DEFAULT_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
XYZ = ["x", "y", "z"]
NAMES = {
    "obs/tip_pos": XYZ,
    "privileged/cube_pos": XYZ,
    "privileged/cube_quat": ["w", "x", "y", "z"],
}
"""Names of the components of known extra fields."""


# ------------------------------------------------------------------------------------------ schema


class _Column:
    """One data column: a LeRobot feature and the episode keys it comes from."""

    def __init__(
        self, name: str, keys: list[str], dtype: str, shape: tuple[int, ...], names: Any, scale: float = 1.0
    ) -> None:
        self.name, self.keys, self.dtype, self.shape, self.names = name, keys, dtype, shape, names
        self.scale = scale

    def feature(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "names": self.names}

    def values(self, arrays: dict[str, np.ndarray], rows: int) -> np.ndarray:
        parts = [arrays[k].reshape(rows, -1) for k in self.keys]
        out = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        if self.scale != 1.0:
            out = np.rint(out.astype(np.float64) * self.scale)
        return out.astype(self.dtype).reshape(rows, -1)


def _feature_name(key: str) -> str:
    if key == "action":
        return "explorer_action"
    if key == "time":
        return "recorded_time_ns"
    if key.startswith("obs/"):
        return "observation." + key.removeprefix("obs/").replace("/", ".")
    return key.replace("/", ".")


def _dtype(field: Any) -> str | None:
    kind = np.dtype(field.dtype).kind
    return {"f": "float32", "i": "int64", "u": "int64", "b": "bool"}.get(kind)


def _schema(episode: Any, model: str) -> tuple[list[_Column], list[str]]:
    """(data columns, camera names) of the export, from the first exported episode."""
    joints = [f"{model}_joint{i}" for i in range(1, 8)]
    columns = [
        _Column(
            "observation.state",
            ["obs/q", "obs/dq"],
            "float32",
            (14,),
            [f"{j}.pos" for j in joints] + [f"{j}.vel" for j in joints],
        ),
        _Column("action", ["command"], "float32", (7,), [f"{j}.vel" for j in joints]),
    ]
    cameras = sorted(k.removeprefix(IMAGE_PREFIX) for k in episode.fields if k.startswith(IMAGE_PREFIX))
    ignored = {"obs/q", "obs/dq", "command", episode.step_index_key}
    for key in sorted(episode.fields):
        field = episode.fields[key]
        if key in ignored or key.startswith(IMAGE_PREFIX) or len(field.shape) > 1:
            continue
        dtype = "int64" if key == "time" else _dtype(field)
        if dtype is None:
            continue
        size = int(np.prod(field.shape)) if field.shape else 1
        scale = 1e9 if key == "time" else 1.0
        columns.append(_Column(_feature_name(key), [key], dtype, (size,), NAMES.get(key), scale))
    return columns, cameras


def _check(episode: Any, columns: list[_Column], cameras: list[str], frame_shapes: dict[str, tuple]) -> None:
    """Raise SkipEpisode when the episode's arrays do not fit the export's columns."""
    fields = episode.fields
    for key, size in (("obs/q", 7), ("obs/dq", 7), ("command", 7)):
        if tuple(fields[key].shape) != (size,):
            raise SkipEpisode(f"{key} holds {tuple(fields[key].shape)} values per step, not {size}")
    for column in columns[2:]:
        (key,) = column.keys
        if key not in fields:
            raise SkipEpisode(f"it has no {key}, which the first exported episode has")
        size = int(np.prod(fields[key].shape)) if fields[key].shape else 1
        if len(fields[key].shape) > 1 or (size,) != column.shape:
            raise SkipEpisode(
                f"{key} is {tuple(fields[key].shape)} per step, the first exported episode's {column.shape}"
            )
    for name in cameras:
        key = IMAGE_PREFIX + name
        if key not in fields:
            raise SkipEpisode(f"it has no {key}, which the first exported episode has")
        shape, dtype = tuple(fields[key].shape), np.dtype(fields[key].dtype)
        if len(shape) != 3 or shape[2] != 3 or dtype != np.uint8:
            raise SkipEpisode(f"{key} is {shape} {dtype}, not uint8 HxWx3")
        if name in frame_shapes and shape != frame_shapes[name]:
            raise SkipEpisode(f"{key} frames are {shape}, the first exported episode's {frame_shapes[name]}")


def _times(episode: Any, rate_hz: float) -> np.ndarray:
    try:
        if "time" in episode.fields:
            time_s = np.asarray(episode.load("time"), dtype=np.float64).reshape(-1)
        else:  # never written by the collector; then the control period stands in
            time_s = episode.step_index() / rate_hz
    except Exception as error:  # h5py may raise anything on damaged data
        raise SkipEpisode(f"time cannot be read: {one_line(error)}") from None
    if time_s.shape != (episode.steps,) or not np.all(np.isfinite(time_s)):
        raise SkipEpisode("its time stamps are not all finite")
    return time_s


# ------------------------------------------------------------------------------------------ stats


def _stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's per-feature statistics of ``values`` (N, D): each (D,), count (1,)."""
    values = values.astype(np.float64, copy=False)
    out = {
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "mean": values.mean(axis=0),
        "std": values.std(axis=0),
        "count": np.array([len(values)]),
    }
    quantiles = np.quantile(values, QUANTILES, axis=0)
    for q, row in zip(QUANTILES, quantiles, strict=True):
        out[f"q{round(q * 100):02d}"] = row
    return out


def _image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of uint8 frames (N, H, W, 3) in [0, 1], each (3, 1, 1), as LeRobot's."""
    stats = _stats(frames.reshape(-1, 3) / 255.0)
    count = np.array([len(frames)])
    return {k: (count if k == "count" else v.reshape(3, 1, 1)) for k, v in stats.items()}


def _aggregate(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Dataset statistics from per-episode ones: min, max, mean and std exact (weighted by count),
    quantiles the count-weighted mean of the episodes' (LeRobot's aggregation)."""
    counts = np.array([s["count"][0] for s in stats], dtype=np.float64)
    total = counts.sum()
    shape = (-1,) + (1,) * stats[0]["mean"].ndim
    weights = (counts / total).reshape(shape)
    means = np.stack([s["mean"] for s in stats])
    mean = (weights * means).sum(axis=0)
    variance = (weights * (np.stack([s["std"] for s in stats]) ** 2 + (means - mean) ** 2)).sum(axis=0)
    out = {
        "min": np.min(np.stack([s["min"] for s in stats]), axis=0),
        "max": np.max(np.stack([s["max"] for s in stats]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(total)]),
    }
    for key in stats[0]:
        if key.startswith("q"):
            out[key] = (weights * np.stack([s[key] for s in stats])).sum(axis=0)
    return out


def _listed(stats: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: (v.astype(np.int64) if k == "count" else v.astype(np.float64)).tolist() for k, v in stats.items()}


# ------------------------------------------------------------------------------------------ files


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


class _Video:
    """The mp4 files of one camera: episodes appended in order, a new file past VIDEO_FILE_MB."""

    def __init__(self, root: Path, key: str, height: int, width: int, fps: int) -> None:
        self.root, self.key, self.height, self.width, self.fps = root, key, height, width, fps
        self.chunk, self.file = 0, 0
        self.container: Any = None
        self.stream: Any = None
        self.end_pts = 0
        """First free presentation time of the open file, in TIME_BASE units."""
        self.path: Path | None = None

    def _open(self) -> None:
        import av

        self.path = self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), mode="w", format="mp4")
        stream = self.container.add_stream(VIDEO_CODEC, rate=self.fps)
        stream.height, stream.width = self.height, self.width
        stream.pix_fmt = PIX_FMT
        stream.time_base = TIME_BASE
        stream.codec_context.time_base = TIME_BASE
        stream.options = {"crf": str(CRF), "g": str(GOP), "bf": "0"}
        self.stream = stream
        self.end_pts = 0

    def begin_episode(self) -> tuple[int, int, int]:
        """(chunk, file, first pts) where the next episode goes."""
        if self.container is not None and self.path.stat().st_size >= VIDEO_FILE_MB * 2**20:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
        if self.container is None:
            self._open()
        return self.chunk, self.file, self.end_pts

    def write(self, frames: np.ndarray, pts: np.ndarray) -> None:
        import av

        for frame, stamp in zip(frames, pts, strict=True):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts = int(stamp)
            picture.time_base = TIME_BASE
            self.container.mux(self.stream.encode(picture))

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.mux(self.stream.encode(None))
            finally:
                self.container.close()
                self.container = None

    def abort(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # already failing: the scratch folder goes anyway
                pass
            self.container = None


class _Data:
    """The data Parquet files: episodes appended in order, a new file past DATA_FILE_MB."""

    def __init__(self, root: Path, schema: Any) -> None:
        self.root, self.schema = root, schema
        self.chunk, self.file = 0, 0
        self.writer: Any = None
        self.bytes = 0

    def write(self, table: Any) -> tuple[int, int]:
        import pyarrow.parquet as pq

        if self.writer is not None and self.bytes >= DATA_FILE_MB * 2**20:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
        if self.writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, self.schema, compression="snappy")
            self.bytes = 0
        self.writer.write_table(table)
        self.bytes += table.nbytes
        return self.chunk, self.file

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _arrow_type(pa: Any, column: _Column) -> Any:
    scalar = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}[column.dtype]
    return scalar if column.shape == (1,) else pa.list_(scalar, column.shape[0])


def _arrow_array(pa: Any, values: np.ndarray, column: _Column) -> Any:
    arrow_type = _arrow_type(pa, column)
    if column.shape == (1,):
        return pa.array(values.reshape(-1), type=arrow_type)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=arrow_type.value_type), column.shape[0])


def _default_columns() -> list[_Column]:
    return [_Column("timestamp", [], "float32", (1,), None)] + [
        _Column(name, [], "int64", (1,), None) for name in DEFAULT_FEATURES[1:]
    ]


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet: the task strings as the index of a ``task_index`` column (what pandas
    writes for LeRobot's DataFrame; the index column is named ``task``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_metadata = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    table = table.replace_schema_metadata({"pandas": json.dumps(pandas_metadata)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


# ------------------------------------------------------------------------------------------ export


def export_lerobot(session_dir: Path, out: Path, *, warn: Callable[[str], None] = lambda line: None) -> ExportResult:
    """Write the session at ``session_dir`` as a LeRobotDataset v3.0 at ``out`` (module docstring)."""
    try:
        import av  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise ExportError(f"the lerobot export needs pyarrow and PyAV (av): {one_line(error)}") from None
    spec = read_spec(session_dir)
    model = robot_model(session_dir, spec)
    fps = round(spec.control_rate_hz)
    if fps < 1:
        raise ExportError(f"{session_dir}: control rate {spec.control_rate_hz} Hz is below LeRobot's 1 fps")
    scratch = make_scratch(out)
    writer = _Writer(scratch / out.name, spec, model, fps, warn)
    with writing(out, scratch, writer.abort):
        writer.write_session(session_dir)
        if not writer.episodes:
            raise ExportError(f"{session_dir}: no readable episode to export")
        writer.finish(session_dir)
        put_in_place(scratch / out.name, out)
    steps = sum(row["length"] for row in writer.episodes)
    return ExportResult(out, "lerobot/v3.0", len(writer.episodes), steps, skipped=writer.skipped)


class _Writer:
    """A LeRobot v3.0 dataset being written at ``root`` (a scratch folder)."""

    def __init__(self, root: Path, spec: Any, model: str, fps: int, warn: Callable[[str], None]) -> None:
        self.root, self.spec, self.model, self.fps, self.warn = root, spec, model, fps, warn
        self.task = f"task-agnostic exploration ({spec.explorer} explorer)"
        self.columns: list[_Column] | None = None
        self.cameras: list[str] = []
        self.frame_shapes: dict[str, tuple] = {}
        self.videos: dict[str, _Video] = {}
        self.data: _Data | None = None
        self.episodes: list[dict[str, Any]] = []
        self.stats: list[dict[str, dict[str, np.ndarray]]] = []
        self.skipped: list[str] = []
        self.frames = 0

    def abort(self) -> None:
        for video in self.videos.values():
            video.abort()
        if self.data is not None and self.data.writer is not None:
            try:
                self.data.close()
            except Exception:  # already failing: the scratch folder goes anyway
                pass

    def write_session(self, session_dir: Path) -> None:
        for episode in readable_episodes(session_dir, self.warn, self.skipped, ("obs/q", "obs/dq", "command")):
            try:
                if self.columns is None:
                    columns, cameras = _schema(episode, self.model)
                    _check(episode, columns, cameras, {})
                else:
                    columns, cameras = self.columns, self.cameras
                    _check(episode, columns, cameras, self.frame_shapes)
                time_s = _times(episode, self.spec.control_rate_hz)
                segments = episode.segments()
                for a, b in segments:
                    relative = time_s[a:b] - time_s[a]
                    if np.any(np.diff(np.rint(relative * TICKS_PER_S)) <= 0):
                        raise SkipEpisode("its time stamps do not increase (by at least 10 us a step)")
            except SkipEpisode as reason:
                skip(episode, str(reason), self.warn, self.skipped)
                episode.close()
                continue
            if self.columns is None:
                self._start(columns, cameras, episode)
            try:
                relative_file = episode.path.relative_to(session_dir).as_posix()
            except ValueError:
                relative_file = episode.path.name
            for a, b in segments:
                self._write_segment(episode, relative_file, time_s, a, b)
            episode.close()
        for video in self.videos.values():
            video.close()
        if self.data is not None:
            self.data.close()

    def _start(self, columns: list[_Column], cameras: list[str], episode: Any) -> None:
        import pyarrow as pa

        self.columns, self.cameras = columns, cameras
        for name in cameras:
            shape = tuple(episode.fields[IMAGE_PREFIX + name].shape)
            self.frame_shapes[name] = shape
            key = f"observation.images.{name}"
            self.videos[name] = _Video(self.root, key, shape[0], shape[1], self.fps)
        everything = columns + _default_columns()
        schema = pa.schema([pa.field(c.name, _arrow_type(pa, c), nullable=False) for c in everything])
        self.data = _Data(self.root, schema)

    def _write_segment(self, episode: Any, relative_file: str, time_s: np.ndarray, a: int, b: int) -> None:
        import pyarrow as pa

        rows = b - a
        index = len(self.episodes)
        try:
            arrays = {k: np.asarray(episode.load(k, slice(a, b))) for c in self.columns for k in c.keys}
        except Exception as error:  # the file changed or is damaged past its checksum: abort
            raise ExportError(f"{episode.path}: cannot be read: {one_line(error)}") from None
        relative = time_s[a:b] - time_s[a]
        values = {c.name: c.values(arrays, rows) for c in self.columns}
        values["timestamp"] = relative.astype(np.float32).reshape(rows, 1)
        values["frame_index"] = np.arange(rows, dtype=np.int64).reshape(rows, 1)
        values["episode_index"] = np.full((rows, 1), index, dtype=np.int64)
        values["index"] = np.arange(self.frames, self.frames + rows, dtype=np.int64).reshape(rows, 1)
        values["task_index"] = np.zeros((rows, 1), dtype=np.int64)
        everything = self.columns + _default_columns()
        table = pa.table([_arrow_array(pa, values[c.name], c) for c in everything], schema=self.data.schema)
        chunk, file = self.data.write(table)
        stats = {c.name: _stats(values[c.name]) for c in everything}
        row: dict[str, Any] = {
            "episode_index": index,
            "tasks": [self.task],
            "length": rows,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": self.frames,
            "dataset_to_index": self.frames + rows,
        }
        for name in self.cameras:
            video = self.videos[name]
            v_chunk, v_file, first_pts = video.begin_episode()
            pts = first_pts + np.rint(relative * TICKS_PER_S).astype(np.int64)
            key = IMAGE_PREFIX + name
            h, w, _ = self.frame_shapes[name]
            block = max(1, BLOCK_BYTES // (h * w * 3))
            sample = set(np.linspace(a, b - 1, min(rows, STATS_FRAMES)).round().astype(int).tolist())
            sampled = []
            for start in range(a, b, block):
                stop = min(b, start + block)
                try:
                    frames = np.asarray(episode.load(key, slice(start, stop)))
                except Exception as error:
                    raise ExportError(f"{episode.path}: cannot be read: {one_line(error)}") from None
                video.write(frames, pts[start - a : stop - a])
                sampled += [frames[i - start] for i in range(start, stop) if i in sample]
            video.end_pts = int(pts[-1]) + round(TICKS_PER_S / self.fps)
            from_s = first_pts / TICKS_PER_S
            feature = f"observation.images.{name}"
            row[f"videos/{feature}/chunk_index"] = v_chunk
            row[f"videos/{feature}/file_index"] = v_file
            row[f"videos/{feature}/from_timestamp"] = from_s
            row[f"videos/{feature}/to_timestamp"] = video.end_pts / TICKS_PER_S
            stats[feature] = _image_stats(np.stack(sampled))
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        row["outcome"] = episode.outcome
        row["pandalab/episode"] = int(episode.index)
        row["pandalab/file"] = relative_file
        row["pandalab/first_step"] = int(episode.step_index()[a])
        row["pandalab/started_at"] = episode.started_at or ""
        for feature, feature_stats in stats.items():
            for stat, value in _listed(feature_stats).items():
                row[f"stats/{feature}/{stat}"] = value
        self.episodes.append(row)
        self.stats.append(stats)
        self.frames += rows

    def _features(self) -> dict[str, Any]:
        features = {c.name: c.feature() for c in self.columns}
        for name in self.cameras:
            h, w, c = self.frame_shapes[name]
            features[f"observation.images.{name}"] = {
                "dtype": "video",
                "shape": [h, w, c],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": h,
                    "video.width": w,
                    "video.codec": "h264",
                    "video.pix_fmt": PIX_FMT,
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": c,
                    "has_audio": False,
                },
            }
        features.update({c.name: c.feature() for c in _default_columns()})
        return features

    def finish(self, session_dir: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = self.root / "meta"
        (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        columns = {key: [row[key] for row in self.episodes] for key in self.episodes[0]}
        pq.write_table(pa.table(columns), self.root / EPISODES_PATH)
        _write_tasks(meta / "tasks.parquet", [self.task])
        features = list(self.stats[0])
        stats = {f: _listed(_aggregate([s[f] for s in self.stats])) for f in features}
        (meta / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": f"franka_{self.model}",
            "total_episodes": len(self.episodes),
            "total_frames": self.frames,
            "total_tasks": 1,
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": VIDEO_FILE_MB,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.cameras else None,
            "features": self._features(),
            "pandalab": {
                "session_id": self.spec.session_id,
                "session": str(Path(session_dir).absolute()),
                "action_space": self.spec.action_space,
                "control_rate_hz": self.spec.control_rate_hz,
                "video": {"codec": VIDEO_CODEC, "pix_fmt": PIX_FMT, "crf": CRF, "g": GOP, "time_base": str(TIME_BASE)},
                "skipped": self.skipped,
            },
        }
        (meta / "info.json").write_text(json.dumps(info, indent=1) + "\n")
