"""Writing side of the store: `SessionStore` (a session directory) and `EpisodeRecorder` (one episode).

The control loop calls `EpisodeRecorder.append(step)`, which validates the step against the
episode's fields, copies it into a pre-allocated chunk buffer and returns: microseconds, no disk.
A full chunk (`flush_every_steps`, or whatever was gathered after `flush_interval_s`) goes to the
recorder's writer thread, which frames it, writes it to the `.partial`, fsyncs, and only then
counts its steps as flushed. `finish` drains the writer and turns the `.partial` into the episode's
HDF5 file (temp name, fsync, rename, directory fsync), then appends the manifest line (fsync) and
removes the `.partial`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import fcntl
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _format as F
from ._format import (
    EpisodeInfo,
    FieldSpec,
    SessionLocked,
    StepSchemaError,
    StoreError,
    StoreWriteError,
)
from .spec import SPEC_FILE

DEFAULT_FREE_SPACE_FLOOR = 1 << 30
DEFAULT_QUEUE_MAX_STEPS = 2000
DEFAULT_FLUSH_EVERY_STEPS = 50
DEFAULT_FLUSH_INTERVAL_S = 1.0
FINISH_OVERHEAD_BYTES = 256 << 10
"""Room kept beyond an episode's own bytes to finish it: HDF5 structure, attributes, manifest line."""
MAX_EVENTS_BACKLOG = 10_000
"""Events held in memory while events.jsonl cannot be written (the oldest are kept first)."""


@dataclasses.dataclass(frozen=True)
class StoreHealth:
    """Whether the collector may keep stepping. `hold` means: stop the arm and wait (no data is lost).

    `state` is "ok", "hold" (writer behind or free space under the floor; clears by itself) or
    "error" (a write failed; see `error`). `reason` is a sentence for the operator."""

    state: str
    reason: str
    queued_steps: int
    free_bytes: int
    free_space_floor_bytes: int
    error: StoreWriteError | None = None

    @property
    def hold(self) -> bool:
        return self.state != "ok"


@dataclasses.dataclass
class RecoveryReport:
    """What `SessionStore.open` found and repaired in an existing session directory.

    `removed` names files deleted because nothing was lost by it (temp files of atomic writes, a
    `.partial` whose every byte is now in its `.h5`, an empty one); `quarantined` the files moved
    into `<session>/quarantine/` because some of their bytes could not be read or used:
    "episodes/x -> quarantine/x (why)"."""

    session_dir: Path
    resumed: bool = False
    salvaged: list[EpisodeInfo] = dataclasses.field(default_factory=list)
    relisted: list[EpisodeInfo] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    quarantined: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    config_changed: str | None = None
    next_index: int = 0

    @property
    def changed_anything(self) -> bool:
        return bool(
            self.salvaged or self.relisted or self.removed or self.quarantined or self.problems or self.config_changed
        )

    def summary(self) -> str:
        if not self.resumed:
            return f"new session at {self.session_dir}"
        parts = [f"resumed {self.session_dir}, next episode {self.next_index}"]
        if self.salvaged:
            parts.append(
                "salvaged " + ", ".join(f"episode {i.index} ({i.steps} steps, crash_salvaged)" for i in self.salvaged)
            )
        if self.relisted:
            parts.append("added to manifest " + ", ".join(f"episode {i.index}" for i in self.relisted))
        if self.removed:
            parts.append("removed " + ", ".join(self.removed))
        if self.quarantined:
            parts.append("quarantined " + ", ".join(self.quarantined))
        if self.config_changed:
            parts.append(f"config differs from session.yaml; new one kept as {self.config_changed}")
        parts.extend(f"PROBLEM: {p}" for p in self.problems)
        return "; ".join(parts)


class SessionStore:
    """A session directory on disk, created or resumed by `SessionStore.open`.

    One process at a time: an exclusive `flock` on `<session>/.lock` (released by the kernel when
    the process dies, even by kill -9). Use as a context manager or call `close()`.

    Free space: the writer thread measures the filesystem after every chunk (and each
    `flush_interval_s` when idle); below `free_space_floor_bytes`, `health()` says hold. The
    writer keeps writing what it was given — the floor is a margin, not a wall."""

    def __init__(self, session_dir: Path, session_id: str, lock_fd: int, **options: Any) -> None:
        self.session_dir = session_dir
        self.session_id = session_id
        self.episodes_dir = session_dir / F.EPISODES_DIR
        self._lock_fd: int | None = lock_fd
        self.free_space_floor_bytes = int(options["free_space_floor_bytes"])
        self.queue_max_steps = int(options["queue_max_steps"])
        self.flush_every_steps = int(options["flush_every_steps"])
        self.flush_interval_s = float(options["flush_interval_s"])
        self.image_compression = options["image_compression"]
        self._events_lock = threading.Lock()
        self._events_fd: int | None = None
        self._events_backlog: list[bytes] = []
        self._events_error: str | None = None
        self._next_index = 0
        self._active: EpisodeRecorder | None = None
        self._free_bytes = F.free_bytes(session_dir)
        self.recovery = RecoveryReport(session_dir)

    # ------------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        data_root: os.PathLike | str,
        session_id: str,
        *,
        session_yaml_text: str | None = None,
        spec_text: str | None = None,
        free_space_floor_bytes: int = DEFAULT_FREE_SPACE_FLOOR,
        queue_max_steps: int = DEFAULT_QUEUE_MAX_STEPS,
        flush_every_steps: int = DEFAULT_FLUSH_EVERY_STEPS,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        image_compression: str | None = None,
    ) -> SessionStore:
        """Create `<data_root>/<session_id>/`, or resume it if it exists.

        Resuming (see `recovery` for the report, also logged as a `store_recovery` event):
        a torn last manifest line is cut off; temp files of interrupted atomic writes are removed;
        an `.h5` missing from the manifest (crash between rename and manifest append) is verified
        and listed (a damaged unlisted `.h5` is quarantined); every `.partial` is salvaged into an
        `.h5` with outcome `crash_salvaged` holding every intact chunk (found past damage by
        resynchronising; gaps recorded in `metadata["salvage"]`). Nothing unreadable is deleted: a
        partial with any byte that could not be used is moved into `<session>/quarantine/` once its
        `.h5` and manifest line are durable (a `quarantine` event in events.jsonl says so); one
        fully copied into its `.h5`, or holding only a valid header, is removed. Numbering continues
        after the highest index ever allocated, so no index repeats. `session_yaml_text` is
        written once (atomically); on resume with a different text the original is kept and the
        new text saved as `session.resume-N.yaml`.  `spec_text` (`store.spec.SessionSpec.to_json`)
        is written with session.yaml as ``session_spec.json`` when the session is new (a session
        recorded before the spec keeps being described by its session.yaml) and beside a
        `session.resume-N.yaml` as `session_spec.resume-N.json`.

        `image_compression`: None (default: fastest to write, see benchmarks/store_throughput.py)
        or "lzf" / "gzip" for chunked frames in the episode files."""
        if flush_every_steps < 1 or queue_max_steps < 1 or flush_interval_s <= 0:
            raise ValueError("flush_every_steps and queue_max_steps must be >= 1, flush_interval_s > 0")
        if image_compression not in (None, "lzf", "gzip"):
            raise ValueError(f"image_compression must be None, 'lzf' or 'gzip', not {image_compression!r}")
        F.check_session_id(session_id)
        session_dir = Path(data_root) / session_id
        resumed = session_dir.is_dir()
        session_dir.mkdir(parents=True, exist_ok=True)
        (session_dir / F.EPISODES_DIR).mkdir(exist_ok=True)
        lock_fd = os.open(session_dir / F.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise SessionLocked(f"session {session_dir} is open in another process or store") from None
        store = cls(
            session_dir,
            session_id,
            lock_fd,
            free_space_floor_bytes=free_space_floor_bytes,
            queue_max_steps=queue_max_steps,
            flush_every_steps=flush_every_steps,
            flush_interval_s=flush_interval_s,
            image_compression=image_compression,
        )
        try:
            store.recovery = store._recover(resumed, session_yaml_text, spec_text)
            if not resumed:
                F.fsync_dir(session_dir.parent)
            if store.recovery.changed_anything:
                store.log_event("store_recovery", summary=store.recovery.summary(), fsync=True)
        except BaseException:
            store.close()
            raise
        return store

    def _recover(self, resumed: bool, session_yaml_text: str | None, spec_text: str | None = None) -> RecoveryReport:
        rep = RecoveryReport(self.session_dir, resumed=resumed)
        sd = self.session_dir
        yaml_path = sd / F.SESSION_YAML
        if session_yaml_text is not None:
            if not yaml_path.exists():
                if spec_text is not None:  # before session.yaml: a session with one has its spec
                    F.atomic_write_text(sd / SPEC_FILE, spec_text)
                F.atomic_write_text(yaml_path, session_yaml_text)
            elif yaml_path.read_text(encoding="utf-8") != session_yaml_text:
                k = 1
                while (sd / f"session.resume-{k}.yaml").exists():
                    k += 1
                if spec_text is not None:
                    F.atomic_write_text(sd / f"session_spec.resume-{k}.json", spec_text)
                F.atomic_write_text(sd / f"session.resume-{k}.yaml", session_yaml_text)
                rep.config_changed = f"session.resume-{k}.yaml"

        # Stale temp files of atomic writes (ours: ".<name>.<pid>.tmp").
        for d in (sd, self.episodes_dir):
            for p in sorted(d.iterdir()):
                if p.is_file() and F.is_temp_name(p.name):
                    p.unlink()
                    rep.removed.append(str(p.relative_to(sd)))

        # A torn last manifest line (power loss mid-append): cut it; its episode is re-listed below.
        manifest = sd / F.MANIFEST_NAME
        if manifest.exists():
            data = manifest.read_bytes()
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                with open(manifest, "r+b") as f:
                    f.truncate(keep)
                    os.fsync(f.fileno())
                rep.problems.append(f"cut a torn last manifest line ({len(data) - keep} bytes)")
        events = sd / F.EVENTS_NAME
        if events.exists() and events.stat().st_size:
            with open(events, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:
                F.append_line_durably(events, "")

        from ._read import read_manifest  # local: _read imports this module's neighbours only

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            listed = read_manifest(sd)
        rep.problems.extend(str(w.message) for w in caught)
        listed_idx = {e.index for e in listed}

        seen = set(listed_idx)
        files: dict[str, dict[int, Path]] = {"h5": {}, "partial": {}, "partial.damaged": {}}
        for p in self.episodes_dir.iterdir():
            parsed = F.parse_episode_name(p.name)
            if parsed:
                files[parsed[1]][parsed[0]] = p
                seen.add(parsed[0])
        hwm = self._read_hwm()
        self._next_index = max([*seen, hwm], default=-1) + 1

        from ._read import open_episode

        for idx in sorted(files["h5"]):
            if idx in listed_idx:
                continue
            path = files["h5"][idx]
            try:
                with open_episode(path, deep=True) as ep:
                    outcome, steps = ep.outcome, ep.steps
                    if ep.index != idx or ep.session_id != self.session_id:
                        raise F.DamagedEpisodeError(path, "index or session id attribute does not match its name")
            except F.DamagedEpisodeError as e:
                # Not listed, so no reader uses it; moved aside (never deleted) so that a .partial of
                # the same index can still be salvaged.
                self._quarantine(path, f"unlisted episode file is damaged: {e.reason}", rep)
                del files["h5"][idx]
                continue
            info = self._append_manifest(idx, steps, outcome, path)
            rep.relisted.append(info)
            listed_idx.add(idx)

        # Interrupted episodes. `.partial.damaged` files (left by earlier versions of this code) are
        # salvaged like `.partial`s; whatever cannot be read ends in quarantine/, never deleted.
        pending = [(idx, files["partial"][idx]) for idx in sorted(files["partial"])]
        pending += [(idx, files["partial.damaged"][idx]) for idx in sorted(files["partial.damaged"])]
        listed_steps = {e.index: e.steps for e in listed}
        listed_steps.update((i.index, i.steps) for i in rep.relisted)
        for idx, path in pending:
            if idx in listed_idx:
                self._drop_leftover_partial(path, idx, listed_steps.get(idx), rep)
                continue
            if idx in files["h5"]:  # (an unlisted .h5 is re-listed or quarantined above)
                rep.problems.append(f"{path.name} kept: {F.episode_name(idx)} exists but is not listed")
                continue
            info = self._convert_partial(path, idx, "crash_salvaged", None, salvage=True, report=rep)
            if info is not None:
                rep.salvaged.append(info)
                listed_idx.add(idx)
                listed_steps[idx] = info.steps
        F.fsync_dir(self.episodes_dir)
        rep.next_index = self._next_index
        return rep

    def _drop_leftover_partial(self, path: Path, idx: int, listed_steps: int | None, rep: RecoveryReport) -> None:
        """A `.partial` of an episode already in the manifest (finish() crashed after the manifest
        line, or salvage after it): removed if it is an exact, whole copy of the listed steps,
        quarantined otherwise."""
        scan = F.scan_partial(path, resync=True)
        if scan.discarded_bytes == 0 and not scan.missing_steps and scan.steps == listed_steps:
            path.unlink()
            F.fsync_dir(path.parent)
            rep.removed.append(str(path.relative_to(self.session_dir)))
            return
        why = f"leftover of listed episode {idx} ({listed_steps} steps) holding {scan.steps} readable steps" + (
            f" and {scan.discarded_bytes} unreadable bytes ({scan.problem})" if scan.discarded_bytes else ""
        )
        self._quarantine(path, why, rep)

    def _quarantine_dest(self, name: str) -> Path:
        """A free path for `name` in `<session>/quarantine/`: the name itself, else `<stem>.<n><suffix>`
        (n = 1, 2, ...; the scheme of `collector.checkpoint.quarantine_checkpoint`, same folder)."""
        q_dir = self.session_dir / F.QUARANTINE_DIR
        stem, suffix = Path(name).stem, Path(name).suffix
        dest = q_dir / name
        k = 0
        while dest.exists() or dest.is_symlink():
            k += 1
            dest = q_dir / f"{stem}.{k}{suffix}"
        return dest

    def _quarantine(self, path: Path, reason: str, rep: RecoveryReport | None = None, dest: Path | None = None) -> Path:
        """Move `path` into `<session>/quarantine/` (its name kept, a numeric suffix added if taken),
        durably (the file, then both directories fsynced), and say so in events.jsonl and `rep`.
        Used for whatever holds bytes the store could not read: evidence is never deleted."""
        q_dir = self.session_dir / F.QUARANTINE_DIR
        if not q_dir.is_dir():
            q_dir.mkdir()
            F.fsync_dir(self.session_dir)
        if dest is None or dest.exists() or dest.is_symlink():
            dest = self._quarantine_dest(path.name)
        F.fsync_file(path)
        os.replace(path, dest)
        F.fsync_dir(q_dir)
        F.fsync_dir(path.parent)
        src = str(path.relative_to(self.session_dir))
        moved_to = str(dest.relative_to(self.session_dir))
        self.log_event("quarantine", file=src, moved_to=moved_to, reason=reason, fsync=True)
        if rep is not None:
            rep.quarantined.append(f"{src} -> {moved_to} ({reason})")
        return dest

    def _read_hwm(self) -> int:
        try:
            return int((self.episodes_dir / F.INDEX_HWM_NAME).read_text().strip())
        except (OSError, ValueError):
            return -1

    # ---------------------------------------------------------------------------- episodes

    @property
    def next_index(self) -> int:
        """The index the next `begin_episode` will use."""
        return self._next_index

    @property
    def active(self) -> EpisodeRecorder | None:
        return self._active

    def begin_episode(
        self,
        metadata: Mapping[str, Any] | None = None,
        *,
        seeds: Any = None,
        on_flush: Callable[[int], None] | None = None,
    ) -> EpisodeRecorder:
        """Start recording the next episode: allocates its index (durably), creates its `.partial`
        with the header record (metadata, seeds, session id, schema version) and fsyncs it.

        `metadata` and `seeds` must be JSON-serialisable (numpy scalars/arrays are converted).
        `on_flush(flushed_steps)` is called from the writer thread after each chunk is fsynced."""
        if self._lock_fd is None:
            raise StoreError("the store is closed")
        if self._active is not None:
            raise StoreError(f"episode {self._active.index} is still being recorded; finish() it first")
        meta = dict(metadata or {})
        try:
            F.dumps(meta)
            F.dumps(seeds)
        except (TypeError, ValueError) as e:
            raise TypeError(f"episode metadata/seeds must be JSON-serialisable: {e}") from None
        index = self._next_index
        F.atomic_write_text(self.episodes_dir / F.INDEX_HWM_NAME, f"{index}\n")
        self._next_index = index + 1
        rec = EpisodeRecorder(self, index, meta, seeds, on_flush)
        self._active = rec
        return rec

    def _append_manifest(self, index: int, steps: int, outcome: str, path: Path, sha: str | None = None) -> EpisodeInfo:
        info = EpisodeInfo(
            index=index,
            steps=steps,
            outcome=outcome,
            file=f"{F.EPISODES_DIR}/{path.name}",
            sha256=sha or F.sha256_file(path),
            schema_version=F.SCHEMA_VERSION,
            time=F.now_iso(),
            bytes=path.stat().st_size,
            session_id=self.session_id,
            session_dir=self.session_dir,
        )
        F.append_line_durably(self.session_dir / F.MANIFEST_NAME, F.dumps(info.to_json()))
        return info

    def _convert_partial(
        self,
        partial: Path,
        index: int,
        outcome: str,
        extra_metadata: Mapping[str, Any] | None,
        *,
        salvage: bool,
        expect_steps: int | None = None,
        report: RecoveryReport | None = None,
    ) -> EpisodeInfo | None:
        """`.partial` -> `.h5` (temp, fsync, rename, dir fsync) -> manifest line -> the partial is
        removed if every one of its bytes was used, else moved into quarantine/.

        `salvage` (recovery on open) reads the partial with resync (`F.scan_partial`): the intact
        chunks after damage are kept, steps missing between them are listed in
        `metadata["salvage"]["missing_steps"]` and the `.h5` then holds a `step_index` array (the
        original step numbers; see `F.STEP_INDEX_KEY`); a lost header record gives empty metadata
        and seeds (`header_lost`). `finish` reads strictly and expects `expect_steps`.
        Returns None when the partial holds no step (removed if it held nothing else than a valid
        header, quarantined if it held unreadable bytes)."""
        final = self.episodes_dir / F.episode_name(index)
        tmp = self.episodes_dir / f".{final.name}.{os.getpid()}.tmp"
        rel = str(partial.relative_to(self.session_dir))
        with F.open_partial(partial, resync=salvage) as (scan, buf):
            if expect_steps is not None and scan.steps != expect_steps:
                raise StoreError(
                    f"{partial}: holds {scan.steps} valid steps but {expect_steps} were flushed ({scan.problem})"
                )
            lost = scan.discarded_bytes > 0  # bytes that the .h5 will not hold: evidence to keep
            if scan.steps == 0:
                if lost:
                    why = f"no readable step; {scan.discarded_bytes} of {scan.file_bytes} bytes unreadable"
                    why += f" ({scan.problem})"
                    self._quarantine(partial, why, report)
                else:
                    partial.unlink()
                    F.fsync_dir(self.episodes_dir)
                    if report is not None:
                        report.removed.append(f"{rel} (no complete chunk)")
                return None
            header = scan.header or {}
            metadata = dict(header.get("metadata") or {})
            if salvage and scan.end is not None:  # finish() had written its END record
                outcome = scan.end["outcome"]
                metadata.update(scan.end["metadata"])
            q_dest = self._quarantine_dest(partial.name) if lost else None
            index_key = F.step_index_key(scan.fields or []) if scan.missing_steps else None
            if salvage:
                salvage_info: dict[str, Any] = {
                    "from": partial.name,
                    "steps": scan.steps,
                    "discarded_bytes": scan.discarded_bytes,
                    "stopped_because": scan.problem,
                    "at": F.now_iso(),
                    "damaged_bytes": [list(r) for r in scan.damaged],
                    "missing_steps": [list(r) for r in scan.missing_steps],
                }
                if index_key is not None:
                    salvage_info["step_index_key"] = index_key
                if scan.header is None:
                    salvage_info["header_lost"] = True
                if q_dest is not None:
                    salvage_info["quarantined_as"] = str(q_dest.relative_to(self.session_dir))
                    salvage_info["problems"] = scan.problems[:20]
                metadata["salvage"] = salvage_info
            metadata.update(extra_metadata or {})
            try:
                sha = F.write_episode_h5(
                    tmp,
                    scan,
                    buf,
                    session_id=self.session_id,
                    index=index,
                    outcome=outcome,
                    metadata=metadata,
                    seeds=header.get("seeds"),
                    started_at=header.get("started_at"),
                    compression=self.image_compression,
                    step_index_key=index_key,
                )
                os.replace(tmp, final)
            except OSError as e:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise StoreWriteError(e.errno or errno.EIO, f"writing episode file failed: {e}", str(tmp)) from e
            steps = scan.steps
            notes = []
            if scan.missing_steps:
                notes.append("steps " + ", ".join(f"{a}..{b - 1}" for a, b in scan.missing_steps) + " missing")
            if scan.header is None:
                notes.append("header record lost (metadata and seeds empty)")
            discarded, problem = scan.discarded_bytes, scan.problem
        F.fsync_dir(self.episodes_dir)
        try:
            info = self._append_manifest(index, steps, outcome, final, sha)
        except OSError as e:
            raise StoreWriteError(
                e.errno or errno.EIO, f"appending to the manifest failed: {e}", str(self.session_dir / F.MANIFEST_NAME)
            ) from e
        if notes and report is not None:
            report.problems.append(f"episode {index} salvaged from a damaged {partial.name}: " + "; ".join(notes))
        if lost:  # the .h5 and its manifest line are durable: now move the original aside
            why = f"{discarded} bytes unreadable ({problem}); {steps} steps salvaged into {final.name}"
            self._quarantine(partial, why, report, dest=q_dest)
        else:  # every byte of it is in the .h5: an exact copy, safe to remove
            partial.unlink()
            F.fsync_dir(self.episodes_dir)
        return info

    # ------------------------------------------------------------------------------ health

    def _update_free(self) -> int:
        with contextlib.suppress(OSError):
            self._free_bytes = F.free_bytes(self.session_dir)
        return self._free_bytes

    def finish_reserve_bytes(self) -> int:
        """Room the episode being recorded needs to be finished: its `.h5` is a second copy of
        everything in its `.partial` (plus what is still in memory), written before the `.partial`
        is removed, plus the manifest line and the HDF5 overhead."""
        rec = self._active
        if rec is None:
            return 0
        return rec.steps * rec.step_nbytes + FINISH_OVERHEAD_BYTES

    def health(self) -> StoreHealth:
        """Fresh view of whether recording may go on (measures free space now).

        Hold when free space is under the floor plus the room the current episode needs to be
        finished (`finish_reserve_bytes`), so that an episode can always be finished on the disk it
        was recorded on; "error" while a write failed (chunk) or events could not be written."""
        free = self._update_free()
        rec = self._active
        queued = rec.queued_steps if rec else 0
        err = rec._error if rec else None
        floor = self.free_space_floor_bytes
        if err is not None:
            return StoreHealth("error", f"write failed: {err}", queued, free, floor, err)
        if self._events_backlog:
            reason = f"events.jsonl cannot be written ({self._events_error}); {len(self._events_backlog)} events held"
            return StoreHealth("error", reason, queued, free, floor)
        if queued > self.queue_max_steps:
            reason = f"writer is behind: {queued} steps waiting for the disk (limit {self.queue_max_steps})"
            return StoreHealth("hold", reason, queued, free, floor)
        reserve = self.finish_reserve_bytes()
        if free < floor + reserve:
            reason = (
                f"disk nearly full: {free / 1e6:.1f} MB free on {self.session_dir}, floor is {floor / 1e6:.1f} MB "
                f"plus {reserve / 1e6:.1f} MB to finish the episode; free space or move the data root"
            )
            return StoreHealth("hold", reason, queued, free, floor)
        return StoreHealth("ok", "", queued, free, floor)

    def _hold_fast(self, rec: EpisodeRecorder) -> bool:
        return (
            rec._error is not None
            or bool(self._events_backlog)
            or rec._queued > self.queue_max_steps
            or self._free_bytes < self.free_space_floor_bytes + rec._steps * rec.step_nbytes + FINISH_OVERHEAD_BYTES
        )

    # ------------------------------------------------------------------------------ events

    def log_event(self, kind: str, *, fsync: bool = False, **fields: Any) -> dict[str, Any]:
        """Append `{"time": epoch s, "iso": ..., "kind": kind, **fields}` to `events.jsonl`.

        Durability: each line is one `write` on an O_APPEND descriptor, so it is in the kernel
        (safe from a process crash or kill -9) when this returns; with `fsync=True` it is also on
        the disk (safe from power loss) — use that for faults, e-stops and safety stops. The file
        is fsynced on `close()`. Thread-safe. Returns the record written."""
        if "time" in fields or "iso" in fields:
            raise ValueError("event fields 'time' and 'iso' are set by the store; name yours differently")
        rec = {"time": time.time(), "iso": F.now_iso(), "kind": str(kind), **fields}
        # A lone surrogate (from a request's text) is written as its JSON escape, never refused.
        line = (F.dumps(rec) + "\n").encode("utf-8", "backslashreplace")
        with self._events_lock:
            if self._lock_fd is None:
                raise StoreError("the store is closed")
            self._events_backlog.append(line)
            try:
                self._write_events_backlog(fsync)
            except OSError as e:  # ENOSPC, EIO: kept in memory, written by the next call; health() holds
                self._events_error = f"{e.strerror or e}"
                del self._events_backlog[MAX_EVENTS_BACKLOG:]
        return rec

    def _write_events_backlog(self, fsync: bool) -> None:
        """Under the events lock: write the held lines in order, each one whole (a torn one is cut)."""
        if self._events_fd is None:
            self._events_fd = os.open(self.session_dir / F.EVENTS_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        while self._events_backlog:
            size = os.fstat(self._events_fd).st_size
            try:
                F.write_all(self._events_fd, [self._events_backlog[0]])
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._events_fd, size)
                raise
            self._events_backlog.pop(0)
        if fsync:
            os.fsync(self._events_fd)
        self._events_error = None

    @property
    def events_pending(self) -> bool:
        """Whether events are held in memory after a failed write (see `retry_events`)."""
        return bool(self._events_backlog)

    def retry_events(self) -> bool:
        """Write the events held after a failed write; True when none is left."""
        with self._events_lock:
            if self._events_backlog and self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    self._write_events_backlog(fsync=True)
            return not self._events_backlog

    # ------------------------------------------------------------------------------- closing

    def close(self) -> None:
        """Release the session. An episode still recording is flushed to its `.partial` (made
        durable) and left there to be salvaged by the next `open`; finish it first to keep it."""
        rec = self._active
        if rec is not None:
            warnings.warn(
                f"closing {self.session_dir} with episode {rec.index} unfinished; its .partial will be salvaged",
                stacklevel=2,
            )
            with contextlib.suppress(StoreError, OSError):
                rec.abandon()
        with self._events_lock:
            if self._events_backlog:
                with contextlib.suppress(OSError):
                    self._write_events_backlog(fsync=True)
            if self._events_backlog:
                warnings.warn(
                    f"{len(self._events_backlog)} events could not be written to {self.session_dir / F.EVENTS_NAME}",
                    stacklevel=2,
                )
            if self._events_fd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._events_fd)
                os.close(self._events_fd)
                self._events_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EpisodeRecorder:
    """Records one episode. Made by `SessionStore.begin_episode`; not thread-safe (one producer).

    Counters: `steps` accepted so far, `flushed_steps` durable in the `.partial` (what a crash
    would keep), `queued_steps` handed to the writer and not yet durable."""

    def __init__(
        self,
        store: SessionStore,
        index: int,
        metadata: dict[str, Any],
        seeds: Any,
        on_flush: Callable[[int], None] | None,
    ) -> None:
        self.store = store
        self.index = index
        self.path = store.episodes_dir / F.episode_name(index, "partial")
        self.metadata = metadata
        self.seeds = seeds
        self.fields: list[FieldSpec] | None = None
        self.step_nbytes = 0
        """Bytes one step takes in the episode files (known from the first step)."""
        self._on_flush = on_flush
        self._chunk = store.flush_every_steps
        self._interval = store.flush_interval_s
        self._cond = threading.Condition(threading.Lock())
        self._bufs: dict[str, np.ndarray] | None = None
        self._specs: list[tuple[str, tuple[int, ...], np.dtype, np.ndarray]] = []
        self._keys: frozenset[str] = frozenset()
        self._rows = 0
        self._chunk_t0 = 0.0
        self._steps = 0
        self._pending: collections.deque[tuple[int, int, dict[str, np.ndarray]]] = collections.deque()
        self._pool: list[dict[str, np.ndarray]] = []
        self._queued = 0
        self._flushed = 0
        self._offset = 0
        self._error: StoreWriteError | None = None
        self._retry = False
        self._stop = False
        self._state = "recording"  # -> "draining" -> "stopped" -> "ended" -> "done" | "abandoned"
        self._info: EpisodeInfo | None = None

        started = F.now_iso()
        self.started_at = started
        header = {
            "format": "pandalab-episode-partial",
            "schema_version": F.SCHEMA_VERSION,
            "session_id": store.session_id,
            "index": index,
            "started_at": started,
            "metadata": metadata,
            "seeds": seeds,
        }
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            self._offset = F.write_all(fd, F.header_record(header))
            os.fsync(fd)
            F.fsync_dir(store.episodes_dir)
        except OSError as e:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            store._active = None
            raise StoreWriteError(e.errno or errno.EIO, f"creating the episode file failed: {e}", str(self.path)) from e
        self._fd: int | None = fd
        self._thread = threading.Thread(target=self._writer_loop, name=f"store-writer-{index}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------ counters

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def flushed_steps(self) -> int:
        return self._flushed

    @property
    def queued_steps(self) -> int:
        return self._queued

    @property
    def write_error(self) -> StoreWriteError | None:
        """The last failed chunk write while it is not yet retried successfully (else None)."""
        return self._error if self._state in ("recording", "draining") else None

    # -------------------------------------------------------------------------- append

    def append(self, step: Mapping[str, Any]) -> bool:
        """Record one step (a flat dict 'obs/q' -> array, 'time' -> float, ...). Never blocks on the disk.

        The first step fixes the keys, shapes and dtypes; a later step that differs raises
        `StepSchemaError` naming the key, and is not recorded. Arrays are copied, so the caller may
        reuse its buffers. Returns True when the store is healthy, False when the step was recorded
        but the store asks the caller to HOLD (writer behind, free space under the floor):
        stop the arm and wait until `store.health().hold` is False. Raises `StoreWriteError` (the
        file named) while the writer is failing — the step is still kept in memory; `finish`
        retries the writes."""
        with self._cond:
            if self._state != "recording":
                raise StoreError(f"episode {self.index} is {self._state}; append is over")
            if self._bufs is None:
                self._init_fields(step)
            if not isinstance(step, Mapping) or len(step) != len(self._keys) or step.keys() != self._keys:
                raise self._key_mismatch(step)
            row = self._rows
            for key, shape, dtype, buf in self._specs:
                v = step[key]
                if type(v) is not np.ndarray:
                    v = np.asarray(v)
                if v.shape != shape or v.dtype != dtype:
                    raise StepSchemaError(
                        f"episode {self.index} step {self._steps}: key {key!r} has shape {v.shape} dtype {v.dtype}, "
                        f"the first step fixed shape {shape} dtype {dtype}"
                    )
                buf[row] = v
            if row == 0:
                self._chunk_t0 = time.monotonic()
            self._rows = row + 1
            self._steps += 1
            if self._rows >= self._chunk:
                self._handoff()
            err = self._error
        if err is not None:
            raise err
        return not self.store._hold_fast(self)

    def _init_fields(self, step: Mapping[str, Any]) -> None:
        specs = F.fields_from_first_step(step)
        self.fields = specs
        self.step_nbytes = sum(s.step_nbytes for s in specs)
        self._keys = frozenset(s.key for s in specs)
        self._bufs = self._new_bufs()
        self._specs = [(s.key, s.shape, s.dtype, self._bufs[s.key]) for s in specs]

    def _new_bufs(self) -> dict[str, np.ndarray]:
        assert self.fields is not None
        return {s.key: np.empty((self._chunk, *s.shape), s.dtype) for s in self.fields}

    def _key_mismatch(self, step: Mapping[str, Any]) -> StepSchemaError:
        if not isinstance(step, Mapping):
            return StepSchemaError(f"a step must be a dict, not {type(step).__name__}")
        missing = sorted(self._keys - set(step))
        extra = sorted(set(step) - self._keys, key=str)
        return StepSchemaError(
            f"episode {self.index} step {self._steps}: keys differ from the first step's"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
        )

    def _handoff(self) -> None:
        """Under the lock: move the rows gathered so far to the writer's queue."""
        n = self._rows
        if n == 0:
            return
        self._pending.append((self._steps - n, n, self._bufs))
        self._queued += n
        self._bufs = self._pool.pop() if self._pool else self._new_bufs()
        self._specs = [(k, s, d, self._bufs[k]) for k, s, d, _ in self._specs]
        self._rows = 0
        self._cond.notify_all()

    # -------------------------------------------------------------------------- writer

    def _writer_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._pending and (self._error is None or self._retry):
                        start, n, bufs = self._pending[0]
                        self._retry = False
                        break
                    if self._stop and (not self._pending or self._error is not None):
                        return
                    timeout = self._interval
                    if self._rows and self._error is None:
                        age = time.monotonic() - self._chunk_t0
                        if age >= self._interval:
                            self._handoff()
                            continue
                        timeout = self._interval - age
                    if self._cond.wait(timeout) is False and not self._rows:
                        self.store._update_free()
            try:
                self._write_chunk(start, n, bufs)
            except Exception as e:  # OSError mostly; anything else must not kill the writer silently either
                code = (e.errno if isinstance(e, OSError) else None) or errno.EIO
                why = (e.strerror if isinstance(e, OSError) else None) or repr(e)
                with self._cond:
                    self._error = StoreWriteError(code, f"writing episode {self.index} failed: {why}", str(self.path))
                    self._cond.notify_all()
                continue
            with self._cond:
                self._pending.popleft()
                self._queued -= n
                self._flushed += n
                self._error = None
                if len(self._pool) < 4:
                    self._pool.append(bufs)
                self._cond.notify_all()
                flushed = self._flushed
            self.store._update_free()
            if self._on_flush is not None:
                try:
                    self._on_flush(flushed)
                except Exception as e:  # a callback must not kill the writer
                    warnings.warn(f"store on_flush callback raised {e!r}", stacklevel=1)

    def _write_chunk(self, start: int, n: int, bufs: dict[str, np.ndarray]) -> None:
        assert self._fd is not None and self.fields is not None
        pieces = F.chunk_record(start, n, self.fields, bufs)
        fd = self._fd
        try:
            os.lseek(fd, self._offset, os.SEEK_SET)
            written = F.write_all(fd, pieces)
            os.fsync(fd)
        except OSError:
            # Cut the torn record so that a later retry appends cleanly (readers stop at it anyway).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._offset)
            raise
        self._offset += written

    # -------------------------------------------------------------------------- ending

    def flush(self, timeout: float | None = None) -> int:
        """Hand the steps gathered so far to the writer and wait until they are durable (or the
        writer fails: raises `StoreWriteError`). Returns `flushed_steps`. Not needed in the loop."""
        with self._cond:
            self._handoff()
            self._retry = self._error is not None
            self._cond.notify_all()
            ok = self._cond.wait_for(
                lambda: not self._pending or (self._error is not None and not self._retry), timeout
            )
            if self._error is not None:
                raise self._error
            if not ok:
                raise TimeoutError(f"episode {self.index}: {self._queued} steps still waiting for the disk")
            return self._flushed

    def _stop_writer(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def finish(self, outcome: str = "complete", metadata: Mapping[str, Any] | None = None) -> EpisodeInfo | None:
        """End the episode: wait until every step is in the `.partial`, write the episode `.h5`
        atomically, append the manifest line, remove the `.partial`. `metadata` is merged over the
        metadata given to `begin_episode` (e.g. timing statistics). Returns the manifest entry, or
        None for an episode with no steps (nothing is written).

        On a write error raises `StoreWriteError` naming the file; nothing is lost: the steps not
        yet written are still in memory and the `.partial` keeps every flushed step. Call `finish`
        again (e.g. after freeing space) to retry; if the process ends instead, the next
        `SessionStore.open` salvages the `.partial`."""
        if outcome not in F.FINISH_OUTCOMES:
            raise ValueError(f"outcome must be one of {F.FINISH_OUTCOMES}, not {outcome!r}")
        extra = dict(metadata or {})
        try:
            F.dumps(extra)
        except (TypeError, ValueError) as e:
            raise TypeError(f"episode metadata must be JSON-serialisable: {e}") from None
        if self._state == "done":
            return self._info
        if self._state == "abandoned":
            raise StoreError(f"episode {self.index} was abandoned; it will be salvaged by the next open")
        if self._state in ("recording", "draining"):
            self._state = "draining"
            self.flush()
            self._stop_writer()
            self._state = "stopped"
        if self._state == "stopped" and self._steps:
            try:
                fd = os.open(self.path, os.O_WRONLY)
                try:
                    os.lseek(fd, self._offset, os.SEEK_SET)
                    F.write_all(fd, F.end_record(outcome, extra))
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.truncate(self.path, self._offset)
                raise StoreWriteError(e.errno or errno.EIO, f"closing the episode failed: {e}", str(self.path)) from e
            self._state = "ended"
        info = self.store._convert_partial(
            self.path, self.index, outcome, extra, salvage=False, expect_steps=self._steps
        )
        self._info = info
        self._state = "done"
        self.store._active = None
        return info

    def abandon(self) -> None:
        """Stop recording without finishing: flush what can be flushed and leave the `.partial` on
        disk for the next `SessionStore.open` to salvage (outcome `crash_salvaged`). What a crash
        would do, minus the steps lost since the last flush."""
        if self._state in ("done", "abandoned"):
            return
        try:
            if self._state in ("recording", "draining"):
                with contextlib.suppress(StoreWriteError, TimeoutError):
                    self.flush(timeout=30.0)
                self._stop_writer()
        finally:
            self._state = "abandoned"
            if self.store._active is self:
                self.store._active = None

    def __repr__(self) -> str:
        return (
            f"<EpisodeRecorder {self.index} {self._state}: {self._steps} steps, {self._flushed} flushed, "
            f"{self._queued} queued>"
        )
