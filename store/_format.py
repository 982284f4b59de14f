"""Low-level formats of the episode store: names, the framed `.partial` file, the episode HDF5 file.

Nothing here knows about threads or sessions; `_session.py` (writing) and `_read.py` (reading)
build on it. See the package docstring (`store/__init__.py`) for the layout on disk and
the crash guarantees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import mmap
import os
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
"""Version of every on-disk format of the store (partial header, episode file, manifest line).
Bump it when a reader of the old version would misread a new file."""

OUTCOMES = ("complete", "safety_stop", "fault", "operator_stop", "crash_salvaged")
"""How an episode ended. `crash_salvaged` is set only by the store, for a `.partial` recovered on restart."""

FINISH_OUTCOMES = OUTCOMES[:-1]
"""The outcomes a caller may pass to `EpisodeRecorder.finish`."""

EPISODE_FORMAT = "pandalab-episode"
"""Value of the `format` attribute of every episode HDF5 file."""

EPISODES_DIR = "episodes"
MANIFEST_NAME = "manifest.jsonl"
EVENTS_NAME = "events.jsonl"
SESSION_YAML = "session.yaml"
LOCK_NAME = ".lock"
INDEX_HWM_NAME = ".last_index"
QUARANTINE_DIR = "quarantine"

_EPISODE_NAME_RE = re.compile(r"^episode_(\d+)\.(h5|partial|partial\.damaged)$")
_TEMP_NAME_RE = re.compile(r"^\..+\.tmp$")
_KEY_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

IN_MEMORY_MAX_BYTES = 512 << 20
"""Episodes whose arrays total at most this many bytes are assembled in memory at finish."""

IMAGE_CHUNK_MIN_BYTES = 4096
"""With compression on, per-step arrays of at least this many bytes (camera frames) are chunked one
step per HDF5 chunk and compressed, so a reader can still load single frames."""


class StoreError(Exception):
    """Base class of the store's own errors."""


class StepSchemaError(StoreError, ValueError):
    """A step whose keys, shapes or dtypes differ from the episode's first step (or are not storable)."""


class StoreWriteError(StoreError, OSError):
    """Writing to disk failed (ENOSPC, EIO, ...). `filename` names the file, `errno` the cause.

    Raised by `EpisodeRecorder.append` / `finish` after the writer thread hit the error; the steps
    are still held in memory and `finish` retries writing them."""


class ManifestPathError(StoreError, ValueError):
    """A manifest entry whose `file` lies outside its session directory (refused by every reader)."""


class SessionLocked(StoreError):
    """Another process (or another `SessionStore` in this one) has the session directory open."""


class DamagedEpisodeError(StoreError):
    """An episode file that cannot be trusted: missing, truncated, not HDF5, checksum mismatch, wrong schema."""

    def __init__(self, path: os.PathLike | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


# --------------------------------------------------------------------------------------------- names


def episode_name(index: int, suffix: str = "h5") -> str:
    """`episode_000042.h5` (six digits, more once past 999999)."""
    return f"episode_{index:06d}.{suffix}"


def parse_episode_name(name: str) -> tuple[int, str] | None:
    """(index, suffix) for an episode / partial file name, else None."""
    m = _EPISODE_NAME_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def is_temp_name(name: str) -> bool:
    """Temporary files of atomic writes: a dot, the final name, `.tmp` (possibly with a suffix)."""
    return bool(_TEMP_NAME_RE.match(name))


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not _SESSION_ID_RE.match(session_id):
        raise ValueError(f"session id {session_id!r} must be letters, digits, '_', '.', '-' (not starting with '.')")
    return session_id


def check_key(key: object) -> str:
    """A step key: '/'-separated segments of letters, digits, '_', '.', '-' (e.g. 'obs/images/front')."""
    if not isinstance(key, str) or not key:
        raise StepSchemaError(f"step key {key!r} must be a non-empty string such as 'obs/q'")
    for seg in key.split("/"):
        if not _KEY_SEGMENT_RE.match(seg):
            raise StepSchemaError(
                f"step key {key!r}: each '/'-separated part must be letters, digits, '_', '.', '-' "
                "(no leading '/', no empty part)"
            )
    return key


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def json_default(obj: Any) -> Any:
    """JSON encoder fallback for numpy scalars/arrays and paths in metadata and events."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any) -> str:
    """Compact JSON with numpy support; NaN/inf allowed (Python's json reads them back)."""
    return json.dumps(obj, default=json_default, separators=(",", ":"), ensure_ascii=False)


# ------------------------------------------------------------------------------------- durable I/O


def write_all(fd: int, pieces: Iterable[bytes | memoryview]) -> int:
    """Write every byte of `pieces` to `fd` (looping over short writes). Returns the byte count.

    Every write of the store's writer thread goes through this function, so tests can inject
    ENOSPC / EIO by replacing it."""
    total = 0
    for p in pieces:
        mv = memoryview(p).cast("B") if not isinstance(p, bytes) else memoryview(p)
        while mv:
            n = os.write(fd, mv)
            total += n
            mv = mv[n:]
    return total


def fsync_dir(path: os.PathLike | str) -> None:
    """fsync a directory so that a rename / create / unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: os.PathLike | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: os.PathLike | str, data: bytes | bytearray | memoryview) -> Path:
    """Replace `path` with `data` atomically and durably.

    Writes `.<name>.tmp` in the same directory, fsyncs it, renames it over `path` and fsyncs the
    directory: after a crash at any moment `path` holds either the old content or the new, never a
    mix, and once this returns the new content survives a power loss. Creates parent directories.
    Used for `session.yaml`, and by the explorer for `explorer/checkpoint.pt`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            write_all(fd, [data])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: os.PathLike | str, text: str) -> Path:
    """`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def append_line_durably(path: Path, line: str, *, fsync: bool = True) -> None:
    """Append one line (a single `write` on an O_APPEND descriptor) and fsync it.

    All or nothing: when the write fails part-way (ENOSPC), the file is cut back to its length
    before, so that a retry appends a whole line instead of gluing one onto a torn one."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            write_all(fd, [data])
            if fsync:
                os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def sha256_file(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def free_bytes(path: os.PathLike | str) -> int:
    """Bytes available to this (non-root-reserved) user on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------------------------------- fields


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One per-step array: its key ('obs/q'), dtype (native byte order) and per-step shape."""

    key: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def step_nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def to_json(self) -> list:
        return [self.key, self.dtype.str, list(self.shape)]

    @classmethod
    def from_json(cls, item: Sequence) -> FieldSpec:
        key, dtype, shape = item
        dt = np.dtype(str(dtype))
        if dt.kind not in "biufc" or not dt.isnative:
            raise ValueError(f"field {key!r}: unsupported dtype {dtype!r}")
        shp = tuple(int(s) for s in shape)
        if any(s < 0 for s in shp):
            raise ValueError(f"field {key!r}: negative dimension in {shp}")
        return cls(check_key(key), dt, shp)


def fields_from_first_step(step: Mapping[str, Any]) -> list[FieldSpec]:
    """Fix the episode's fields from its first step (sorted by key); rejects what cannot be stored."""
    if not isinstance(step, Mapping) or not step:
        raise StepSchemaError("a step must be a non-empty dict such as {'obs/q': array, 'time': 0.0, ...}")
    specs = []
    for key, value in step.items():
        check_key(key)
        if isinstance(value, Mapping):
            raise StepSchemaError(f"step key {key!r} holds a dict; flatten it (flatten_step) to keys like '{key}/x'")
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufc":
            raise StepSchemaError(
                f"step key {key!r}: dtype {arr.dtype} is not numeric (bool, int, uint, float, complex)"
            )
        if not arr.dtype.isnative:
            raise StepSchemaError(f"step key {key!r}: dtype {arr.dtype.str} is not in native byte order")
        specs.append(FieldSpec(key, arr.dtype, tuple(arr.shape)))
    specs.sort(key=lambda s: s.key)
    keys = {s.key for s in specs}
    for s in specs:
        parts = s.key.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in keys:
                raise StepSchemaError(f"step key {s.key!r} lies under key {'/'.join(parts[:i])!r}, which is an array")
    return specs


def flatten_step(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'obs': {'q': a, 'images': {'front': im}}, 'time': t} -> {'obs/q': a, 'obs/images/front': im, 'time': t}."""
    flat: dict[str, Any] = {}
    for k, v in nested.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            flat.update(flatten_step(v, key))
        else:
            flat[key] = v
    return flat


# ----------------------------------------------------------------------------- the .partial file
#
# An append-only sequence of records. Each record is
#     magic b"PLEP" | kind u8 | schema_version u8 | reserved u16 | payload length u64 | crc32 u32 | payload
# (20-byte little-endian header); the CRC-32 covers header bytes 4..16 (kind, version, reserved,
# length) and the payload. Record 0 (kind HEADER) is the episode header as UTF-8 JSON. Every other
# record but the last (kind CHUNK) holds consecutive steps:
#     descriptor length u32 | descriptor JSON {"start": s, "n": n, "fields": [[key, dtype, shape], ...]}
#     | for each field in order: the raw C-order bytes of its (n, *shape) array
# `finish` closes the file with an END record (JSON {"outcome", "metadata"}) before converting it,
# so an episode whose conversion is interrupted is salvaged with its real outcome.
#
# Strict reading (the default of `scan_partial` / `load_partial`; what `finish` uses): the reader
# stops at the first record that is incomplete, fails its CRC, or does not continue the step
# sequence (start != steps so far, or fields differ): what comes before is exactly the data that
# was fsynced, whatever byte a crash cut the file at.
#
# Reading with resync (`resync=True`; what salvage on `SessionStore.open` uses): after a bad record
# the reader searches forward, byte by byte, for the next RECORD_MAGIC that starts a record which
# validates (complete, CRC ok, a known kind; for a chunk: its descriptor parses, its fields equal
# the earlier chunks' fields and its steps start at or after the steps read so far), and goes on
# from there, so a damaged byte costs the record that holds it, not the rest of the file. Chunk
# descriptors carry their `start` step, so the steps lost between two intact chunks are known
# exactly (`PartialScan.missing_steps`); the skipped byte ranges are `PartialScan.damaged`. A
# damaged header record (record 0) costs the metadata and seeds, not the chunks after it
# (`PartialScan.header_lost`). Nothing is accepted after an END record. A false match (bytes that
# happen to form a valid record) needs the magic, a plausible length and a matching CRC-32 (a
# 2**-32 chance for each candidate with the magic).

RECORD_MAGIC = b"PLEP"
REC_HEADER = 1
REC_CHUNK = 2
REC_END = 3
_REC = struct.Struct("<4sBBHQI")
_U32 = struct.Struct("<I")
_MAX_JSON = 64 << 20
_FIND_BLOCK = 4 << 20

STEP_INDEX_KEY = "step_index"
"""Per-step int64 array (the original step number) that a salvaged episode holds only when steps
are missing from it (see `PartialScan.missing_steps`); its actual key (another if a field already
uses this one) is `metadata["salvage"]["step_index_key"]`."""


def record_pieces(kind: int, payload_pieces: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
    """The pieces of one framed record (header first), ready for `write_all`."""
    length = sum(memoryview(p).nbytes for p in payload_pieces)
    meta = struct.pack("<BBHQ", kind, SCHEMA_VERSION, 0, length)
    crc = zlib.crc32(meta)
    for p in payload_pieces:
        crc = zlib.crc32(p, crc)
    return [RECORD_MAGIC + meta + _U32.pack(crc & 0xFFFFFFFF), *payload_pieces]


def header_record(header: Mapping[str, Any]) -> list[bytes | memoryview]:
    return record_pieces(REC_HEADER, [dumps(header).encode("utf-8")])


def end_record(outcome: str, metadata: Mapping[str, Any]) -> list[bytes | memoryview]:
    """The closing record `finish` writes before converting: the outcome and the finish metadata, so
    that a crash during the conversion salvages the episode with its real outcome."""
    return record_pieces(REC_END, [dumps({"outcome": outcome, "metadata": dict(metadata)}).encode("utf-8")])


def chunk_record(start: int, n: int, fields: Sequence[FieldSpec], buffers: Mapping[str, np.ndarray]):
    """Frame steps [start, start+n) whose arrays are rows [0, n) of `buffers` (no copy of the arrays)."""
    desc = dumps({"start": start, "n": n, "fields": [f.to_json() for f in fields]}).encode("utf-8")
    pieces: list[bytes | memoryview] = [_U32.pack(len(desc)) + desc]
    for f in fields:
        rows = buffers[f.key][:n]
        pieces.append(memoryview(rows.reshape(-1).view(np.uint8)))
    return record_pieces(REC_CHUNK, pieces)


@dataclasses.dataclass
class PartialScan:
    """What a `.partial` holds: its valid records, and (strict) up to where or (resync) around what
    it could not be read.

    `chunks` are (start step, n, offset of the first array byte in the file) of the valid chunk
    records, in file order (starts increasing); `record_ends[i]` is the file offset just past chunk
    i; `end` is the END record ({"outcome", "metadata"}) when `finish` got that far. `valid_bytes`
    counts the bytes of the accepted records (strict: the valid prefix), `damaged` lists the byte
    ranges [a, b) that are not part of any (a torn tail included), `missing_steps` the step ranges
    [a, b) absent before or between the chunks (only with resync; the steps after the last chunk
    are not known). `problem` says why reading stopped early or, with resync, the first thing that
    was wrong (None when the whole file was valid); `problems` lists them all."""

    path: Path
    file_bytes: int
    header: dict | None = None
    fields: list[FieldSpec] | None = None
    chunks: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    record_ends: list[int] = dataclasses.field(default_factory=list)
    valid_bytes: int = 0
    problem: str | None = None
    end: dict | None = None
    resync: bool = False
    problems: list[str] = dataclasses.field(default_factory=list)
    damaged: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    missing_steps: list[tuple[int, int]] = dataclasses.field(default_factory=list)

    @property
    def steps(self) -> int:
        """Steps held (with gaps: fewer than the last chunk's end)."""
        return sum(n for _, n, _ in self.chunks)

    @property
    def discarded_bytes(self) -> int:
        return self.file_bytes - self.valid_bytes

    @property
    def header_lost(self) -> bool:
        """The header record is unreadable but records after it were read (resync only)."""
        return self.header is None and self.valid_bytes > 0

    def step_index(self) -> np.ndarray:
        """The original step number of each step held, in order (0..steps-1 when nothing is missing)."""
        if not self.chunks:
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(s, s + n, dtype=np.int64) for s, n, _ in self.chunks])


class _BadRecord(Exception):
    """A record that fails validation while resynchronising (internal to the scanner)."""


def _frame_at(buf, pos: int, size: int) -> tuple[int, int, int]:
    """(kind, payload start, record end) of the record at `pos` if its frame is complete and its CRC
    matches; raises _BadRecord saying what is wrong."""
    if size - pos < _REC.size:
        raise _BadRecord(f"incomplete record header at byte {pos}")
    magic, kind, _version, _res, length, crc = _REC.unpack_from(buf, pos)
    if magic != RECORD_MAGIC:
        raise _BadRecord(f"bad record magic at byte {pos}")
    body = pos + _REC.size
    if length > size - body:
        raise _BadRecord(f"record at byte {pos} is incomplete ({size - body} of {length} payload bytes)")
    c = zlib.crc32(buf[pos + 4 : pos + 16])
    c = zlib.crc32(buf[body : body + length], c) & 0xFFFFFFFF
    if c != crc:
        raise _BadRecord(f"CRC mismatch in record at byte {pos}")
    return kind, body, body + length


def _accept_record(scan: PartialScan, buf, pos: int, kind: int, body: int, end: int, steps: int) -> int:
    """Check a framed record against what was read before it and add it to `scan`; returns the step
    count after it (the next expected start). Raises _BadRecord (and changes nothing) if it does not fit."""
    if kind == REC_HEADER and scan.header is None and not scan.chunks and scan.end is None:
        try:
            header = json.loads(bytes(buf[body:end]).decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
        except ValueError as e:
            raise _BadRecord(f"unreadable episode header: {e}") from None
        scan.header = header
        return steps
    if scan.header is None and not scan.resync:
        raise _BadRecord("first record is not an episode header")
    if scan.end is not None:
        raise _BadRecord(f"record after the END record at byte {pos}")
    if kind == REC_END:
        try:
            end_rec = json.loads(bytes(buf[body:end]).decode("utf-8"))
            if end_rec.get("outcome") not in FINISH_OUTCOMES or not isinstance(end_rec.get("metadata"), dict):
                raise ValueError("bad outcome or metadata")
        except (ValueError, AttributeError) as e:
            raise _BadRecord(f"unreadable END record at byte {pos}: {e}") from None
        scan.end = end_rec
        return steps
    if kind != REC_CHUNK:
        raise _BadRecord(f"unexpected record kind {kind} at byte {pos}")
    try:
        (dlen,) = _U32.unpack_from(buf, body)
        if dlen > min(end - body - 4, _MAX_JSON):
            raise ValueError("descriptor longer than its record")
        desc = json.loads(bytes(buf[body + 4 : body + 4 + dlen]).decode("utf-8"))
        fields = [FieldSpec.from_json(item) for item in desc["fields"]]
        start, n = int(desc["start"]), int(desc["n"])
        if n <= 0 or start < steps or (start != steps and not scan.resync):
            raise ValueError(f"chunk starts at step {start} with {n} steps, expected start {steps}")
        if scan.fields is not None and fields != scan.fields:
            raise ValueError("fields differ from the first chunk's")
        if body + 4 + dlen + n * sum(f.step_nbytes for f in fields) != end:
            raise ValueError("array bytes do not match the descriptor")
    except (ValueError, KeyError, TypeError, struct.error) as e:
        raise _BadRecord(f"bad chunk at byte {pos}: {e}") from None
    if start > steps:
        scan.missing_steps.append((steps, start))
        scan.problems.append(f"steps {steps}..{start - 1} are missing (the chunk at byte {pos} starts at {start})")
    scan.fields = fields
    scan.chunks.append((start, n, body + 4 + dlen))
    scan.record_ends.append(end)
    return start + n


def _find_magic(buf, start: int, size: int) -> int:
    """Offset of the next RECORD_MAGIC at or after `start`, or -1 (reads `buf` in blocks)."""
    overlap = len(RECORD_MAGIC) - 1
    while start < size:
        stop = min(size, start + _FIND_BLOCK)
        i = bytes(buf[start:stop]).find(RECORD_MAGIC)
        if i >= 0:
            return start + i
        if stop == size:
            break
        start = stop - overlap
    return -1


def _scan_buffer(buf, path: Path, resync: bool = False) -> PartialScan:
    size = len(buf)
    scan = PartialScan(path=path, file_bytes=size, resync=resync)
    pos = 0
    steps = 0
    bad_from: int | None = None  # resync: start of the run of bytes being skipped
    while pos < size:
        try:
            kind, body, end = _frame_at(buf, pos, size)
            steps = _accept_record(scan, buf, pos, kind, body, end, steps)
        except _BadRecord as e:
            if not resync:
                scan.problem = str(e)
                break
            if bad_from is None:
                bad_from = pos
                scan.problems.append(str(e))
            nxt = _find_magic(buf, pos + 1, size)
            pos = size if nxt < 0 else nxt
            continue
        if bad_from is not None:
            scan.damaged.append((bad_from, pos))
            scan.problems.append(f"skipped {pos - bad_from} damaged bytes {bad_from}..{pos - 1}")
            bad_from = None
        scan.valid_bytes += end - pos
        pos = end
    if resync:
        if bad_from is not None:
            scan.damaged.append((bad_from, size))
        scan.problem = scan.problems[0] if scan.problems else None
    else:
        if scan.problem is not None:
            scan.problems.append(scan.problem)
        if scan.valid_bytes < size:
            scan.damaged.append((scan.valid_bytes, size))
    return scan


@contextlib.contextmanager
def open_partial(path: os.PathLike | str, *, resync: bool = False):
    """Yield (scan, buffer) for a `.partial` (`resync`: see `scan_partial`). The buffer is a
    read-only memoryview of an mmap of the file; arrays made from it (`chunk_arrays`) keep it
    alive, and it is unmapped when the last of them is garbage collected (an unlinked or moved
    file stays readable meanwhile)."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            yield _scan_buffer(b"", path, resync), b""
            return
        view = memoryview(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ))
    yield _scan_buffer(view, path, resync), view


def scan_partial(path: os.PathLike | str, *, resync: bool = False) -> PartialScan:
    """Validate a `.partial` and say what it holds (no array data is loaded).

    Strict by default: the valid records up to the first bad one (what a crash leaves is exactly
    the fsynced prefix). `resync=True` also searches past damage for the records after it (the
    record-format comment in `_format.py`); then chunks may have gaps (`missing_steps`)."""
    with open_partial(path, resync=resync) as (scan, _):
        return scan


def chunk_arrays(scan: PartialScan, buf, chunk: int) -> dict[str, np.ndarray]:
    """The arrays of chunk `chunk` as read-only views into `buf`."""
    _start, n, off = scan.chunks[chunk]
    out = {}
    for f in scan.fields or []:
        count = n * int(np.prod(f.shape, dtype=np.int64))
        out[f.key] = np.frombuffer(buf, dtype=f.dtype, count=count, offset=off).reshape((n, *f.shape))
        off += count * f.dtype.itemsize
    return out


def load_partial(path: os.PathLike | str, *, resync: bool = False) -> tuple[PartialScan, dict[str, np.ndarray]]:
    """Every valid step of a `.partial` as whole arrays (key -> (steps, *shape)), copied into memory.

    With `resync=True` steps may be missing between chunks: the arrays hold the steps found, in
    order, and `scan.step_index()` gives their original step numbers."""
    with open_partial(path, resync=resync) as (scan, buf):
        fields = scan.fields or []
        out = {f.key: np.empty((scan.steps, *f.shape), f.dtype) for f in fields}
        row = 0
        for i in range(len(scan.chunks)):
            n = scan.chunks[i][1]
            for key, arr in chunk_arrays(scan, buf, i).items():
                out[key][row : row + n] = arr
            row += n
        return scan, out


def step_index_key(fields: Sequence[FieldSpec]) -> str:
    """A key for the `step_index` array that no field uses and that is no group of one (nor under one)."""
    keys = {f.key for f in fields}
    k = 0
    while True:
        cand = STEP_INDEX_KEY if k == 0 else f"{STEP_INDEX_KEY}_{k}"
        if not any(key == cand or key.startswith(cand + "/") or cand.startswith(key + "/") for key in keys):
            return cand
        k += 1


# ------------------------------------------------------------------------------ the episode file


def write_episode_h5(
    tmp_path: Path,
    scan: PartialScan,
    buf,
    *,
    session_id: str,
    index: int,
    outcome: str,
    metadata: Mapping[str, Any],
    seeds: Any,
    started_at: str | None,
    compression: str | None = None,
    step_index_key: str | None = None,
) -> str:
    """Write the steps of a scanned `.partial` as an episode HDF5 file at `tmp_path`, fsynced; return
    its sha256. Episodes up to IN_MEMORY_MAX_BYTES are built in memory (HDF5 core driver) and
    written with one sequential write, hashed on the way; larger ones are written in place.

    Layout: one dataset per field at its key path (`obs/q` -> group `obs`, dataset `q`) with shape
    (steps, *per-step shape) and the field's dtype, stored contiguously (a single frame or a
    sorted set of rows reads as a hyperslab: faster, written and read, than per-frame chunks);
    with `compression`, arrays of at least IMAGE_CHUNK_MIN_BYTES per step (frames) are chunked
    one step per chunk and compressed. Root
    attributes: format, schema_version, session_id, index, outcome, steps, fields (JSON list of
    [key, dtype, shape]), seeds (JSON), metadata (JSON), started_at, finished_at (ISO 8601 UTC).

    The chunks' steps are stored one after the other, in order. With `step_index_key` (a salvage
    whose `scan` has gaps) an int64 array of that key holds each step's original step number, and
    is listed in `fields` like the others."""
    import h5py  # imported here so that `import store` stays light

    fields = list(scan.fields or [])
    steps = scan.steps
    if step_index_key is not None:
        fields = sorted([*fields, FieldSpec(step_index_key, np.dtype(np.int64), ())], key=lambda spec: spec.key)
    in_memory = steps * sum(f.step_nbytes for f in fields) <= IN_MEMORY_MAX_BYTES
    if in_memory:
        f = h5py.File(f"{tmp_path}.mem", "w", driver="core", backing_store=False, libver=("v108", "v110"))
    else:
        f = h5py.File(tmp_path, "w", libver=("v108", "v110"))
    try:
        dsets = {}
        for spec in fields:
            kwargs: dict[str, Any] = {}
            if compression and spec.step_nbytes >= IMAGE_CHUNK_MIN_BYTES and steps > 0:
                kwargs["chunks"] = (1, *spec.shape)
                kwargs["compression"] = compression
            dsets[spec.key] = f.create_dataset(spec.key, shape=(steps, *spec.shape), dtype=spec.dtype, **kwargs)
        row = 0
        for i in range(len(scan.chunks)):
            n = scan.chunks[i][1]
            for key, arr in chunk_arrays(scan, buf, i).items():
                if arr.size:
                    dsets[key][row : row + n] = arr
            row += n
        if step_index_key is not None and steps:
            dsets[step_index_key][:] = scan.step_index()
        a = f.attrs
        a["format"] = EPISODE_FORMAT
        a["schema_version"] = SCHEMA_VERSION
        a["session_id"] = session_id
        a["index"] = index
        a["outcome"] = outcome
        a["steps"] = steps
        a["fields"] = dumps([s.to_json() for s in fields])
        a["seeds"] = dumps(seeds)
        a["metadata"] = dumps(dict(metadata))
        a["started_at"] = started_at or ""
        a["finished_at"] = now_iso()
        if in_memory:
            f.flush()
            image = f.id.get_file_image()
    finally:
        f.close()
    if not in_memory:
        fsync_file(tmp_path)
        return sha256_file(tmp_path)
    digest = hashlib.sha256(image).hexdigest()
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, [image])
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest


# -------------------------------------------------------------------------------------- manifest


def check_entry_file(file: str) -> str:
    """A manifest entry's `file`: a relative path that stays inside the session directory (no
    absolute path, no '..' part, not empty). Raises ValueError naming the path otherwise."""
    if not isinstance(file, str) or not file or "\x00" in file:
        raise ManifestPathError(f"file {file!r} is not a path inside the session directory")
    p = PurePosixPath(file)
    if p.is_absolute() or file.startswith("/") or ".." in p.parts or not p.parts or p.parts == (".",):
        raise ManifestPathError(f"file {file!r} lies outside the session directory")
    return file


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    """One finished episode, as its `manifest.jsonl` line records it.

    `file` is relative to the session directory; `path` is absolute when `session_dir` is known."""

    index: int
    steps: int
    outcome: str
    file: str
    sha256: str
    schema_version: int
    time: str
    bytes: int
    session_id: str
    session_dir: Path | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_entry_file(self.file)

    @property
    def path(self) -> Path:
        return (self.session_dir / self.file) if self.session_dir is not None else Path(self.file)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("session_dir")
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], session_dir: Path | None = None) -> EpisodeInfo:
        """Raises ValueError for a line that lacks or mistypes a field, has an unknown outcome, or
        names a file outside the session directory (absolute, or with a '..' part: then
        `ManifestPathError`, a ValueError)."""
        if isinstance(d, Mapping) and isinstance(d.get("file"), str):
            try:
                check_entry_file(d["file"])
            except ManifestPathError as e:
                raise ManifestPathError(f"refused the entry for episode {d.get('index')!r}: {e}") from None
        try:
            info = cls(
                index=int(d["index"]),
                steps=int(d["steps"]),
                outcome=str(d["outcome"]),
                file=str(d["file"]),
                sha256=str(d["sha256"]),
                schema_version=int(d["schema_version"]),
                time=str(d["time"]),
                bytes=int(d["bytes"]),
                session_id=str(d["session_id"]),
                session_dir=session_dir,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"manifest entry lacks or mistypes a field: {e!r}") from None
        if info.outcome not in OUTCOMES:
            raise ValueError(f"manifest entry has unknown outcome {info.outcome!r}")
        if info.index < 0 or info.steps < 0:
            raise ValueError("manifest entry has a negative index or step count")
        return info
