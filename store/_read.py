"""Reading side of the store: manifest, episodes, verification, and `SessionReader`, the reader of a
growing session (its episodes listed as they arrive, read on demand through a bounded cache).

Readers never crash on a damaged file: `iter_episodes` / `SessionReader` skip it with a
`DamagedEpisodeWarning` naming the file and the problem; `verify_session` lists it.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import _format as F
from ._format import DamagedEpisodeError, EpisodeInfo, FieldSpec
from .spec import SessionSpec, read_session_spec

PathLike = os.PathLike | str


class DamagedEpisodeWarning(UserWarning):
    """An episode file was skipped because it is damaged (the message names the file and the problem)."""


class ManifestWarning(UserWarning):
    """A manifest line could not be read, or was refused (its file lies outside the session
    directory), and was skipped."""


def _h5py():
    import h5py

    return h5py


# ---------------------------------------------------------------------------------- sessions


def is_session_dir(path: PathLike) -> bool:
    p = Path(path)
    return (p / F.MANIFEST_NAME).is_file() or (p / F.EPISODES_DIR).is_dir()


def find_sessions(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """Session directories named by `paths`: each is a session directory itself, or a data root
    whose sub-directories are sessions (sorted by name). Missing paths raise FileNotFoundError."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"no such data directory: {p}")
        if is_session_dir(p):
            out.append(p)
        else:
            out.extend(sorted(c for c in p.iterdir() if c.is_dir() and is_session_dir(c)))
    return out


def read_manifest(session_dir: PathLike) -> list[EpisodeInfo]:
    """The finished episodes listed in `<session_dir>/manifest.jsonl`, by index.

    A line that is not valid JSON or lacks a field (a torn last line after a power loss, an edit)
    is skipped with a `ManifestWarning`; so is a second line for an index already listed, and a
    line whose `file` lies outside the session directory (an absolute path, a '..' part, or a
    symbolic link leading out): no reader opens a file the session does not hold."""
    sd = Path(session_dir)
    path = sd / F.MANIFEST_NAME
    if not path.exists():
        return []
    out: dict[int, EpisodeInfo] = {}
    sd_real: Path | None = None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                info = EpisodeInfo.from_json(json.loads(raw.decode("utf-8")), sd)
            except F.ManifestPathError as e:
                warnings.warn(f"{path}:{lineno}: {e}; skipped", ManifestWarning, stacklevel=2)
                continue
            except (ValueError, UnicodeDecodeError, AttributeError) as e:
                warnings.warn(f"{path}:{lineno}: skipped unreadable manifest line ({e})", ManifestWarning, stacklevel=2)
                continue
            if sd_real is None:
                sd_real = sd.resolve()
            if not (sd / info.file).resolve().is_relative_to(sd_real):
                warnings.warn(
                    f"{path}:{lineno}: refused the entry for episode {info.index}: file {info.file!r} "
                    "lies outside the session directory (through a symbolic link); skipped",
                    ManifestWarning,
                    stacklevel=2,
                )
                continue
            if info.index in out:
                warnings.warn(f"{path}:{lineno}: skipped duplicate entry for episode {info.index}", ManifestWarning, 2)
                continue
            out[info.index] = info
    return [out[i] for i in sorted(out)]


def read_events(session_dir: PathLike) -> list[dict[str, Any]]:
    """The records of `events.jsonl`; unreadable (torn) lines are skipped silently."""
    path = Path(session_dir) / F.EVENTS_NAME
    if not path.exists():
        return []
    out = []
    with open(path, "rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


# ---------------------------------------------------------------------------------- episodes


class Episode:
    """One episode file, verified on open. Arrays are read lazily.

    `ep["obs/q"]` is the h5py dataset (slice it to read: `ep["obs/images/front"][10]`); `ep.load(key)`
    reads a whole array; `ep.arrays()` all of them. The HDF5 file is opened on first access and
    re-opened after `close()`, so an `Episode` may outlive a `with` block or an iteration.

    Attributes: path, index, session_id, outcome, steps, schema_version, fields (key -> FieldSpec),
    seeds, metadata, started_at, finished_at, info (the manifest entry, when known)."""

    def __init__(self, path: Path, attrs: dict[str, Any], fields: list[FieldSpec], info: EpisodeInfo | None):
        self.path = path
        self.info = info
        self.index: int = attrs["index"]
        self.session_id: str = attrs["session_id"]
        self.outcome: str = attrs["outcome"]
        self.steps: int = attrs["steps"]
        self.schema_version: int = attrs["schema_version"]
        self.seeds = attrs["seeds"]
        self.metadata: dict[str, Any] = attrs["metadata"]
        self.started_at: str = attrs["started_at"]
        self.finished_at: str = attrs["finished_at"]
        self.fields: dict[str, FieldSpec] = {f.key: f for f in fields}
        self._file = None

    @property
    def keys(self) -> list[str]:
        return list(self.fields)

    @property
    def step_index_key(self) -> str | None:
        """Key of the array of original step numbers, held only by an episode salvaged with steps
        missing (`metadata["salvage"]["missing_steps"]`); None otherwise."""
        salvage = self.metadata.get("salvage")
        key = salvage.get("step_index_key") if isinstance(salvage, dict) else None
        return key if key in self.fields else None

    def step_index(self) -> np.ndarray:
        """The original step number of each step held: 0..steps-1, except in an episode salvaged
        from a damaged `.partial` with steps missing, where the numbers jump over the gaps."""
        key = self.step_index_key
        if key is None:
            return np.arange(self.steps, dtype=np.int64)
        return np.asarray(self.load(key), dtype=np.int64)

    def segments(self) -> list[tuple[int, int]]:
        """Row ranges [a, b) of consecutive steps: [(0, steps)] unless steps are missing. A
        transition (row t -> t + 1) exists only inside a segment, never across a gap."""
        if self.step_index_key is None:
            return [(0, self.steps)] if self.steps else []
        cuts = (np.flatnonzero(np.diff(self.step_index()) != 1) + 1).tolist()
        bounds = [0, *cuts, self.steps]
        return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]

    def __len__(self) -> int:
        return self.steps

    def __contains__(self, key: object) -> bool:
        return key in self.fields

    def _h5(self):
        if self._file is None or not self._file.id.valid:
            self._file = _h5py().File(self.path, "r", locking=False)
        return self._file

    def __getitem__(self, key: str):
        if key not in self.fields:
            raise KeyError(f"{self.path.name} has no array {key!r}; it has {self.keys}")
        return self._h5()[key]

    def load(self, key: str, index: Any = None) -> np.ndarray:
        """Read `key` (all steps, or `index`: a slice, an int, or increasing indices)."""
        ds = self[key]
        return ds[()] if index is None else ds[index]

    def arrays(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        return {k: self.load(k) for k in (self.keys if keys is None else keys)}

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def __enter__(self) -> Episode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Episode {self.session_id}/{self.index} {self.outcome} {self.steps} steps: {self.path}>"


def _attr_str(a, name: str) -> str:
    v = a[name]
    if isinstance(v, bytes):
        v = v.decode("utf-8")
    if not isinstance(v, str):
        raise ValueError(f"attribute {name!r} is not a string")
    return v


def open_episode(
    path: PathLike,
    *,
    expected_sha256: str | None = None,
    required_keys: Sequence[str] = (),
    deep: bool = False,
    info: EpisodeInfo | None = None,
) -> Episode:
    """Open and check an episode file; raise `DamagedEpisodeError(path, reason)` if it cannot be trusted.

    Checks: the file exists; its sha256 equals `expected_sha256` when given; it opens as HDF5; its
    attributes say it is a pandalab episode of a known schema version with a valid outcome; every
    field listed in its `fields` attribute is a dataset of that dtype and shape (steps, *shape);
    every key of `required_keys` is present. `deep=True` also reads every array (catches damage
    in the data itself when no checksum is at hand)."""
    path = Path(path)
    if not path.is_file():
        raise DamagedEpisodeError(path, "file is missing")
    if expected_sha256 is not None:
        actual = F.sha256_file(path)
        if actual != expected_sha256:
            raise DamagedEpisodeError(
                path, f"checksum mismatch: manifest sha256 {expected_sha256[:12]}..., file {actual[:12]}..."
            )
    h5py = _h5py()
    try:
        f = h5py.File(path, "r", locking=False)
    except Exception as e:  # h5py raises OSError, but a mangled file may surface as anything
        raise DamagedEpisodeError(path, f"cannot open as HDF5: {e}") from None
    try:
        try:
            a = f.attrs
            if "format" not in a or _attr_str(a, "format") != F.EPISODE_FORMAT:
                raise DamagedEpisodeError(path, "not a pandalab episode file (no format attribute)")
            version = int(a["schema_version"])
            if not 1 <= version <= F.SCHEMA_VERSION:
                raise DamagedEpisodeError(path, f"schema version {version}; this reader knows 1..{F.SCHEMA_VERSION}")
            attrs = {
                "schema_version": version,
                "index": int(a["index"]),
                "session_id": _attr_str(a, "session_id"),
                "outcome": _attr_str(a, "outcome"),
                "steps": int(a["steps"]),
                "seeds": json.loads(_attr_str(a, "seeds")),
                "metadata": json.loads(_attr_str(a, "metadata")),
                "started_at": _attr_str(a, "started_at"),
                "finished_at": _attr_str(a, "finished_at"),
            }
            fields = [FieldSpec.from_json(item) for item in json.loads(_attr_str(a, "fields"))]
        except DamagedEpisodeError:
            raise
        except Exception as e:
            raise DamagedEpisodeError(path, f"bad or missing attribute: {e!r}") from None
        if attrs["outcome"] not in F.OUTCOMES:
            raise DamagedEpisodeError(path, f"unknown outcome {attrs['outcome']!r}")
        if attrs["steps"] < 0 or not isinstance(attrs["metadata"], dict):
            raise DamagedEpisodeError(path, "bad steps or metadata attribute")
        steps = attrs["steps"]
        for spec in fields:
            try:
                ds = f[spec.key]
                ok = isinstance(ds, h5py.Dataset)
                shape, dtype = (ds.shape, ds.dtype) if ok else (None, None)
            except Exception as e:
                raise DamagedEpisodeError(path, f"array {spec.key!r} is missing or unreadable: {e}") from None
            if not ok:
                raise DamagedEpisodeError(path, f"{spec.key!r} is not an array")
            if shape != (steps, *spec.shape) or dtype != spec.dtype:
                raise DamagedEpisodeError(
                    path, f"array {spec.key!r} is {shape} {dtype}, expected {(steps, *spec.shape)} {spec.dtype}"
                )
            if deep:
                try:
                    ds[()]
                except Exception as e:
                    raise DamagedEpisodeError(path, f"array {spec.key!r} cannot be read: {e}") from None
        have = {s.key for s in fields}
        missing = [k for k in required_keys if k not in have]
        if missing:
            raise DamagedEpisodeError(path, f"missing required arrays {missing}")
    finally:
        f.close()
    if info is not None and (info.index != attrs["index"] or info.steps != steps or info.outcome != attrs["outcome"]):
        raise DamagedEpisodeError(path, "attributes disagree with its manifest entry (index, steps or outcome)")
    return Episode(path, attrs, fields, info)


def _unlisted_h5(session_dir: Path, listed: Iterable[EpisodeInfo]) -> list[Path]:
    names = {Path(e.file).name for e in listed}
    ep_dir = session_dir / F.EPISODES_DIR
    if not ep_dir.is_dir():
        return []
    out = []
    for p in ep_dir.iterdir():
        parsed = F.parse_episode_name(p.name)
        if parsed and parsed[1] == "h5" and p.name not in names:
            out.append((parsed[0], p))
    return [p for _, p in sorted(out)]


def iter_episodes(
    sources: PathLike | Iterable[PathLike],
    *,
    required_keys: Sequence[str] = (),
    verify_checksum: bool = True,
    outcomes: Iterable[str] | None = None,
    include_unlisted: bool = True,
) -> Iterator[Episode]:
    """Yield the finished episodes of the sessions in `sources` (session dirs or data roots), by
    session then index. A damaged file (missing, truncated, random bytes, checksum mismatch, wrong
    schema, missing `required_keys`) is skipped with a `DamagedEpisodeWarning` naming the file and
    the problem. Episodes whose `.h5` is not in the manifest (a crash before the manifest line,
    not yet repaired by a resume) are yielded too, unless `include_unlisted=False`.
    `verify_checksum` reads each file once to compare its sha256 with the manifest's (~0.7 GB/s).
    Each episode's file is closed when the iteration moves on (it re-opens on access)."""
    wanted = None if outcomes is None else set(outcomes)
    for sd in find_sessions(sources):
        listed = read_manifest(sd)
        todo: list[tuple[Path, EpisodeInfo | None]] = [(e.path, e) for e in listed]
        if include_unlisted:
            todo.extend((p, None) for p in _unlisted_h5(sd, listed))
        for path, info in todo:
            if wanted is not None and info is not None and info.outcome not in wanted:
                continue
            ep = _open_or_skip(path, info, required_keys=required_keys, verify_checksum=verify_checksum)
            if ep is None:
                continue
            if wanted is not None and ep.outcome not in wanted:
                continue
            if info is None:
                _warn_unlisted(path, sd)
            try:
                yield ep
            finally:
                ep.close()


def _open_or_skip(
    path: Path, info: EpisodeInfo | None, *, required_keys: Sequence[str], verify_checksum: bool
) -> Episode | None:
    """`open_episode` for a listed (`info`) or unlisted (None) file; None, with a
    `DamagedEpisodeWarning` naming the file and the problem, when it is damaged."""
    try:
        return open_episode(
            path,
            expected_sha256=info.sha256 if (info is not None and verify_checksum) else None,
            required_keys=required_keys,
            info=info,
        )
    except DamagedEpisodeError as e:
        _warn_damaged(e.path, e.reason)
        return None


def _warn_damaged(path: Path, reason: str) -> None:
    warnings.warn(f"skipping damaged episode {path}: {reason}", DamagedEpisodeWarning, stacklevel=4)


def _warn_unlisted(path: Path, session_dir: Path) -> None:
    warnings.warn(
        f"{path} is not listed in {session_dir / F.MANIFEST_NAME} (interrupted finish; resume the session to "
        "list it); reading it without a checksum",
        DamagedEpisodeWarning,
        stacklevel=3,
    )


# ------------------------------------------------------------------------------ verification


@dataclasses.dataclass
class VerifyReport:
    """Result of `verify_session`. `clean` is True when nothing is damaged, missing or pending."""

    session_dir: Path
    ok: list[EpisodeInfo] = dataclasses.field(default_factory=list)
    damaged: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unlisted: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    partials: list[str] = dataclasses.field(default_factory=list)
    manifest_problems: list[str] = dataclasses.field(default_factory=list)
    quarantined: list[str] = dataclasses.field(default_factory=list)
    """Files a resume moved into `<session>/quarantine/` (informational: kept evidence, not damage)."""

    @property
    def clean(self) -> bool:
        return not (self.damaged or self.missing or self.unlisted or self.partials or self.manifest_problems)

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self.ok)

    def summary(self) -> str:
        lines = [f"{self.session_dir}: {len(self.ok)} episodes, {self.steps} steps verified"]
        lines += [f"  DAMAGED  {f}: {r}" for f, r in self.damaged]
        lines += [f"  MISSING  {f} (listed in the manifest)" for f in self.missing]
        lines += [f"  UNLISTED {f}: {r}" for f, r in self.unlisted]
        lines += [f"  PARTIAL  {f} (an interrupted episode; opening the session salvages it)" for f in self.partials]
        lines += [f"  MANIFEST {p}" for p in self.manifest_problems]
        lines += [f"  QUARANTINED {f} (kept as evidence by a resume; see events.jsonl)" for f in self.quarantined]
        return "\n".join(lines)


def verify_session(session_dir: PathLike, *, deep: bool = True) -> VerifyReport:
    """Check every file of a session: manifest entries against their files (existence, sha256,
    HDF5, schema, attributes; `deep` reads every array), `.h5` files the manifest does not list,
    `.partial` files waiting for salvage, unreadable or refused manifest lines; lists the files in
    `quarantine/` (not counted against `clean`). Never raises on damage."""
    sd = Path(session_dir)
    rep = VerifyReport(sd)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = read_manifest(sd)
    rep.manifest_problems.extend(str(w.message) for w in caught)
    for info in listed:
        if not info.path.is_file():
            rep.missing.append(info.file)
            continue
        try:
            open_episode(info.path, expected_sha256=info.sha256, deep=deep, info=info).close()
        except DamagedEpisodeError as e:
            rep.damaged.append((info.file, e.reason))
            continue
        rep.ok.append(info)
    for p in _unlisted_h5(sd, listed):
        rel = f"{F.EPISODES_DIR}/{p.name}"
        try:
            open_episode(p, deep=deep).close()
            rep.unlisted.append((rel, "readable, not in the manifest (interrupted finish)"))
        except DamagedEpisodeError as e:
            rep.unlisted.append((rel, f"damaged: {e.reason}"))
    ep_dir = sd / F.EPISODES_DIR
    if ep_dir.is_dir():
        for p in sorted(ep_dir.iterdir()):
            parsed = F.parse_episode_name(p.name)
            if parsed and parsed[1].startswith("partial"):
                rep.partials.append(f"{F.EPISODES_DIR}/{p.name}")
    q_dir = sd / F.QUARANTINE_DIR
    if q_dir.is_dir():
        rep.quarantined.extend(f"{F.QUARANTINE_DIR}/{p.name}" for p in sorted(q_dir.iterdir()))
    return rep


# ------------------------------------------------------------------------------ SessionReader


class SessionReader:
    """One session's finished episodes as learners read them while it grows: listed from the
    manifest as they arrive, checked once, read on demand through a bounded cache.

    `refresh()` returns the episodes the manifest lists that no earlier call returned (by store
    index, ascending), each checked by `open_episode` (sha256 unless ``verify_checksum=False``,
    structure, `required_keys`); a damaged or missing file is skipped with the store's
    `DamagedEpisodeWarning` and never listed again. With ``include_unlisted=True`` the `.h5`
    files the manifest does not list yet (an interrupted finish) follow, read without a checksum,
    with the warning `iter_episodes` gives (the episodes and order `iter_episodes` yields for one
    session). `episodes` holds every episode listed so far, by index; `segments(index)` its runs
    of consecutive steps (`Episode.segments()`: one for an episode recorded whole, several for one
    salvaged with steps missing), known from the moment it is listed; `spec` the session's
    `SessionSpec` (`read_session_spec`, read on first use).

    `arrays(index, keys)` gives whole arrays of an episode; `rows(key, episodes, rows)` rows of
    any episodes at once (store index and row per element, any shape, any order, repeats
    allowed). Arrays read whole are kept in an LRU cache of at most `max_cached_episodes`
    episodes (None: all, the store as an in-memory buffer; 0: none, and `rows` then reads just
    the rows asked for). The arrays returned are the cache's own: do not modify them. At most
    `max_open_files` HDF5 files are kept open (the least recently used are closed). An episode
    whose file cannot be read any more (changed or damaged on disk since it was checked) is
    dropped from `episodes` with a `DamagedEpisodeWarning`, and the read raises
    `DamagedEpisodeError`: what the caller derived from the episode list is then stale."""

    def __init__(
        self,
        session_dir: PathLike,
        *,
        required_keys: Sequence[str] = (),
        verify_checksum: bool = True,
        include_unlisted: bool = False,
        max_cached_episodes: int | None = None,
        max_open_files: int = 32,
    ) -> None:
        self.session_dir = Path(session_dir)
        self.required_keys = tuple(required_keys)
        self.verify_checksum = verify_checksum
        self.include_unlisted = include_unlisted
        self.max_cached_episodes = None if max_cached_episodes is None else max(0, int(max_cached_episodes))
        self.episodes: dict[int, Episode] = {}
        """Every episode listed so far and not found damaged, by store index (ascending)."""
        self._seen: set[int] = set()
        self._segments: dict[int, list[tuple[int, int]]] = {}
        self._cache: collections.OrderedDict[int, dict[str, np.ndarray]] = collections.OrderedDict()
        self._max_open = max(1, int(max_open_files))
        self._open: collections.OrderedDict[int, None] = collections.OrderedDict()

    @functools.cached_property
    def spec(self) -> SessionSpec:
        """What the session records (`read_session_spec`; `SpecError` when it cannot be read)."""
        return read_session_spec(self.session_dir)

    # -- listing
    def refresh(self, progress: Callable[[int], None] | None = None) -> list[Episode]:
        """The episodes listed since the last call, by index (see the class docstring);
        ``progress(n)`` is called after each of them with how many this call has taken so far."""
        listed = read_manifest(self.session_dir)
        todo: list[tuple[int, Path, EpisodeInfo | None]] = [
            (info.index, info.path, info) for info in listed if info.index not in self._seen
        ]
        if self.include_unlisted:
            for path in _unlisted_h5(self.session_dir, listed):
                index = F.parse_episode_name(path.name)[0]
                if index not in self._seen:
                    todo.append((index, path, None))
        new: list[Episode] = []
        for index, path, info in todo:
            self._seen.add(index)
            episode = _open_or_skip(path, info, required_keys=self.required_keys, verify_checksum=self.verify_checksum)
            if episode is None:
                continue
            if episode.index in self.episodes:
                first = self.episodes[episode.index].path
                _warn_damaged(path, f"holds episode {episode.index}, already read from {first}")
                continue
            try:
                segments = episode.segments()
            except Exception as error:  # the step numbers of a salvaged episode: h5py may raise anything
                _warn_damaged(path, f"array {episode.step_index_key!r} cannot be read: {error}")
                continue
            finally:
                episode.close()
            if info is None:
                _warn_unlisted(path, self.session_dir)
            self._seen.add(episode.index)
            self.episodes[episode.index] = episode
            self._segments[episode.index] = segments
            new.append(episode)
            if progress is not None:
                progress(len(new))
        if new:
            self.episodes = dict(sorted(self.episodes.items()))
        return new

    def __contains__(self, index: object) -> bool:
        return index in self.episodes

    def episode(self, index: int) -> Episode:
        try:
            return self.episodes[index]
        except KeyError:
            raise KeyError(f"episode {index} of {self.session_dir} is not listed (or was found damaged)") from None

    def segments(self, index: int) -> list[tuple[int, int]]:
        """Row ranges [a, b) of consecutive steps of episode `index` (`Episode.segments()`): a
        transition (row t -> t + 1) exists only inside one."""
        self.episode(index)
        return list(self._segments[index])

    # -- reading
    def arrays(self, index: int, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Whole arrays `keys` of episode `index`, through the cache."""
        episode = self.episode(index)
        keys = list(keys)
        for key in keys:
            if key not in episode.fields:
                raise KeyError(f"{episode.path} has no array {key!r}; it has {episode.keys}")
        held = self._cache.get(index, {})
        missing = [key for key in keys if key not in held]
        if missing:
            held = {**held, **self._read(index, lambda ep: {key: ep[key][()] for key in missing})}
            if self.max_cached_episodes != 0:
                self._cache[index] = held
        if index in self._cache:
            self._cache.move_to_end(index)
            while self.max_cached_episodes is not None and len(self._cache) > self.max_cached_episodes:
                self._cache.popitem(last=False)
        return {key: held[key] for key in keys}

    def rows(self, key: str, episodes: Any, rows: Any) -> np.ndarray:
        """Rows of `key`: element i is row ``rows[i]`` of episode ``episodes[i]`` (store indices;
        the two broadcast together); shape (*shape, *per-step shape)."""
        episodes, rows = np.broadcast_arrays(np.asarray(episodes, dtype=np.int64), np.asarray(rows, dtype=np.int64))
        flat_episodes, flat_rows = episodes.reshape(-1), rows.reshape(-1)
        spec = self._field(key, flat_episodes)
        out = np.empty((flat_episodes.size, *spec.shape), dtype=spec.dtype)
        indices, which, counts = np.unique(flat_episodes, return_inverse=True, return_counts=True)
        steps = np.array([self.episode(int(i)).steps for i in indices], dtype=np.int64)
        outside = np.flatnonzero((flat_rows < 0) | (flat_rows >= steps[which]))
        if outside.size:
            k = int(outside[0])
            raise IndexError(f"row {flat_rows[k]} out of range 0..{steps[which[k]] - 1} of episode {flat_episodes[k]}")
        order = np.argsort(which, kind="stable")
        ends = np.cumsum(counts)
        for n, index in enumerate(indices.tolist()):
            group = order[ends[n] - counts[n] : ends[n]]
            if self.max_cached_episodes != 0:
                out[group] = self._whole(index, key)[flat_rows[group]]
                continue
            uniq, inverse = np.unique(flat_rows[group], return_inverse=True)
            out[group] = self._read(index, lambda ep, uniq=uniq: _read_rows(ep, key, uniq))[inverse]
        return out.reshape((*episodes.shape, *spec.shape))

    def _whole(self, index: int, key: str) -> np.ndarray:
        """The whole array `key` of episode `index` through the cache (`arrays` for one key)."""
        held = self._cache.get(index)
        if held is not None and key in held:
            self._cache.move_to_end(index)
            return held[key]
        return self.arrays(index, [key])[key]

    def _field(self, key: str, episodes: np.ndarray) -> FieldSpec:
        """dtype and per-step shape of `key` (from the first episode asked for, else any having it)."""
        candidates = [self.episode(int(episodes[0]))] if episodes.size else list(self.episodes.values())
        for episode in candidates:
            if key in episode.fields:
                return episode.fields[key]
        where = candidates[0].path if episodes.size else self.session_dir
        raise KeyError(f"{where} has no array {key!r}")

    def _read(self, index: int, read: Callable[[Episode], Any]) -> Any:
        """``read(episode)`` with its file open (LRU-bounded); a failure drops the episode."""
        episode = self.episodes[index]
        self._open[index] = None
        self._open.move_to_end(index)
        while len(self._open) > self._max_open:
            old, _ = self._open.popitem(last=False)
            if old in self.episodes:
                self.episodes[old].close()
        try:
            return read(episode)
        except Exception as error:  # h5py may raise anything on a file changed since it was checked
            reason = f"cannot be read any more: {' '.join(str(error).split()) or type(error).__name__}"
        del self.episodes[index]
        self._segments.pop(index, None)
        self._cache.pop(index, None)
        self._open.pop(index, None)
        episode.close()
        _warn_damaged(episode.path, reason)
        raise DamagedEpisodeError(episode.path, reason)

    def close(self) -> None:
        """Close the open files (they re-open on access) and empty the cache."""
        for episode in self.episodes.values():
            episode.close()
        self._open.clear()
        self._cache.clear()

    def __enter__(self) -> SessionReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_rows(episode: Episode, key: str, rows: np.ndarray) -> np.ndarray:
    """Sorted distinct `rows` of `key`: one hyperslab for a contiguous run, the whole array when
    they are many, else a point selection."""
    ds = episode[key]
    if rows.size * 4 >= episode.steps or rows.size > 256:
        return ds[()][rows]
    if rows.size == rows[-1] - rows[0] + 1:
        return ds[int(rows[0]) : int(rows[-1]) + 1]
    return ds[rows]


MAX_SESSION_YAML_BYTES = 1 << 20
"""Largest session.yaml read, bytes (the collector refuses configs over 1 MB)."""


def read_session_yaml(session: Path) -> tuple[dict | None, str | None]:
    """``(mapping, None)`` for a readable session.yaml, else ``(None, problem)``: missing, not
    readable, not UTF-8, not valid YAML, or not a mapping (one line, without the file name)."""
    path = Path(session) / F.SESSION_YAML
    try:
        size = path.stat().st_size
        if size > MAX_SESSION_YAML_BYTES:
            return None, f"{size} bytes; a session.yaml is at most {MAX_SESSION_YAML_BYTES} bytes"
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except OSError as error:
        return None, f"cannot read: {error.strerror or error}"
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (byte {error.start})"
    except yaml.YAMLError as error:
        return None, f"not valid YAML: {yaml_error_text(error)}"
    except RecursionError:
        return None, "nested too deeply"
    if not isinstance(data, dict):
        return None, f"not a mapping of settings (a YAML {type(data).__name__})"
    return data, None


def yaml_error_text(error: yaml.YAMLError) -> str:
    """A YAML error in one line: what and where (line, column), without PyYAML's quoted excerpt."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(error).split())
