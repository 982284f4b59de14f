"""Reading side of the store: manifest, episodes, verification, and a lazy view of all steps.

Readers never crash on a damaged file: `iter_episodes` / `StepsView` skip it with a
`DamagedEpisodeWarning` naming the file and the problem; `verify_session` lists it.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import _format as F
from ._format import DamagedEpisodeError, EpisodeInfo, FieldSpec

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
            try:
                ep = open_episode(
                    path,
                    expected_sha256=info.sha256 if (info is not None and verify_checksum) else None,
                    required_keys=required_keys,
                    info=info,
                )
            except DamagedEpisodeError as e:
                warnings.warn(f"skipping damaged episode {e.path}: {e.reason}", DamagedEpisodeWarning, stacklevel=2)
                continue
            if wanted is not None and ep.outcome not in wanted:
                continue
            if info is None:
                warnings.warn(
                    f"{path} is not listed in {sd / F.MANIFEST_NAME} (interrupted finish; resume the session to "
                    "list it); reading it without a checksum",
                    DamagedEpisodeWarning,
                    stacklevel=2,
                )
            try:
                yield ep
            finally:
                ep.close()


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


# ---------------------------------------------------------------------------------- StepsView


class StepsView:
    """All steps of one or more sessions as one lazily loaded sequence of transitions.

    Step `i` (0 <= i < len(view)) is step `i - starts[e]` of episode `e`, where `starts` is the
    cumulative sum of `lengths`. Nothing is loaded on construction beyond the episodes' attributes
    (and, with `verify_checksum`, one sha256 pass per file): `get(key, indices)` reads just those
    rows, `episode_array(key, e)` one episode's array, `load(key)` everything for a key.

    `keys` are the keys present in every episode; asking for another raises KeyError naming an
    episode that lacks it. At most `max_open_files` HDF5 files are kept open (least recently used
    are closed). Damaged episodes are skipped with a warning, as in `iter_episodes`."""

    def __init__(
        self,
        sources: PathLike | Iterable[PathLike] | Iterable[Episode],
        *,
        required_keys: Sequence[str] = (),
        verify_checksum: bool = True,
        outcomes: Iterable[str] | None = None,
        max_open_files: int = 32,
    ) -> None:
        if isinstance(sources, str | os.PathLike):
            sources = [sources]
        src = list(sources)
        if src and all(isinstance(s, Episode) for s in src):
            eps = src
        else:
            eps = list(
                iter_episodes(src, required_keys=required_keys, verify_checksum=verify_checksum, outcomes=outcomes)
            )
        self.episodes: list[Episode] = [e for e in eps if e.steps > 0]
        self.lengths = np.array([e.steps for e in self.episodes], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
        common = set.intersection(*(set(e.fields) for e in self.episodes)) if self.episodes else set()
        self.keys: list[str] = sorted(common)
        self._max_open = max(1, int(max_open_files))
        self._open: collections.OrderedDict[int, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def outcomes(self) -> list[str]:
        return [e.outcome for e in self.episodes]

    def field(self, key: str) -> FieldSpec:
        """dtype and per-step shape of `key` (from the first episode having it)."""
        for e in self.episodes:
            if key in e.fields:
                return e.fields[key]
        raise KeyError(f"no episode has {key!r}")

    def locate(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """Flat step indices -> (episode numbers into `episodes`, step within the episode)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"step index out of range 0..{len(self) - 1}")
        ep = np.searchsorted(self.starts, idx, side="right") - 1
        return ep, idx - self.starts[ep]

    def _ds(self, e: int, key: str):
        ep = self.episodes[e]
        if key not in ep.fields:
            raise KeyError(f"{ep.path} has no array {key!r}")
        self._open[e] = None
        self._open.move_to_end(e)
        while len(self._open) > self._max_open:
            old, _ = self._open.popitem(last=False)
            self.episodes[old].close()
        return ep[key]

    def episode_array(self, key: str, e: int) -> np.ndarray:
        """The whole array `key` of episode `e` (an index into `episodes`)."""
        return self._ds(e, key)[()]

    def get(self, key: str, indices: Any) -> np.ndarray:
        """Rows `indices` (flat step indices, any order, repeats allowed) of `key`, shape (len, *shape)."""
        idx = np.asarray(indices, dtype=np.int64)
        flat = idx.reshape(-1)
        eps, steps = self.locate(flat)
        spec = self.field(key)
        out = np.empty((flat.size, *spec.shape), dtype=spec.dtype)
        order = np.argsort(eps, kind="stable")
        bounds = np.flatnonzero(np.diff(eps[order])) + 1
        for group in np.split(order, bounds) if flat.size else []:
            e = int(eps[group[0]])
            ds = self._ds(e, key)
            want = steps[group]
            uniq, inv = np.unique(want, return_inverse=True)
            if uniq.size * 4 >= self.lengths[e] or uniq.size > 256:
                rows = ds[()][uniq]
            elif uniq.size == uniq[-1] - uniq[0] + 1:
                rows = ds[int(uniq[0]) : int(uniq[-1]) + 1]
            else:
                rows = ds[uniq]
            out[group] = rows[inv]
        return out.reshape((*idx.shape, *spec.shape))

    def load(self, key: str) -> np.ndarray:
        """Every step of `key`, concatenated over episodes (a full load: size it first)."""
        spec = self.field(key)
        out = np.empty((len(self), *spec.shape), dtype=spec.dtype)
        for e in range(self.num_episodes):
            out[self.starts[e] : self.starts[e + 1]] = self.episode_array(key, e)
        return out

    def close(self) -> None:
        for e in self.episodes:
            e.close()
        self._open.clear()

    def __enter__(self) -> StepsView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
