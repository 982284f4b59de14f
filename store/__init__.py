"""The episode store: crash-safe recording of episodes, and reading them back.

A LEAF module (DESIGN.md): it imports nothing of pandalab, so `learning/` reads it without a cycle
and the collector hands it steps as plain dicts of numpy arrays and scalars. Importing it loads
numpy only; h5py is imported when an episode file is written or opened.

On disk (one directory per session)::

    <data_root>/<session_id>/
      session.yaml             the resolved config, written once, atomically (a changed config on
                               resume is kept beside it as session.resume-N.yaml)
      manifest.jsonl           one line per finished episode: index, steps, outcome, file, sha256,
                               schema_version, time (ISO 8601 UTC), bytes, session_id; fsynced
      episodes/episode_000042.h5       finished episode (temp name -> fsync -> rename -> dir fsync)
      episodes/episode_000043.partial  episode being recorded: framed chunks, each fsynced
      episodes/.last_index     highest index ever allocated (so a restart never repeats one)
      explorer/checkpoint.pt   written by the explorer with `atomic_write_bytes`
      events.jsonl             {"time", "iso", "kind", ...} lines (see `SessionStore.log_event`)
      quarantine/              files a resume could not fully read, moved here, never deleted
      .lock                    flock held by the process that has the session open

Episode file (HDF5): one dataset per step key at its path (`obs/q` -> group `obs`, dataset `q`),
shape (steps, *per-step shape), the dtype of the first step. The collector records `time`,
`obs/q`, `obs/dq`, `obs/tip_pos`, `obs/images/<camera>` (uint8 H x W x 3), `action` (as the
explorer chose it), `command` (as sent, after the safety filter), `privileged/cube_pos`,
`privileged/cube_quat`, `privileged/cube_top_face` (simulation), plus any extra keys it passes
(e.g. `safety/intervened`). Root attributes: format="pandalab-episode", schema_version,
session_id, index, outcome (`complete`, `safety_stop`, `fault`, `operator_stop`,
`crash_salvaged`), steps, fields (JSON [[key, dtype, shape], ...]), seeds (JSON), metadata
(JSON: explorer goal, timing statistics, ...), started_at, finished_at.

Dtypes: the store keeps exactly the dtype it is given (round trips are bit-exact). The collector
passes proprioception, actions, commands and time as float64, as the drivers produce them: the
float32 rounding of q (up to ~2e-7 rad at 3 rad) would be harmless for learning, but float64
keeps the log an exact record of what was sent, and costs ~250 bytes a step against 21 KB for one
84x84 frame (~1%). Learners cast to float32 when they load. Frames are uint8.

Arrays are stored contiguous and uncompressed by default: a single frame, or a sorted batch of
rows, reads as one hyperslab (7 us a frame, and 20x faster batched reads than per-frame chunks),
and writing is fastest. 84x84 robosuite frames only compress 1.5-1.8x with lzf (PyBullet's
flat-shaded ones 11-18x) while lzf writes at ~100 MB/s against ~430 MB/s, so compression costs
more finish time than it saves disk; `image_compression="lzf"` (or "gzip") turns it on, and then
frames (per-step arrays of at least 4 KiB) are chunked one step per HDF5 chunk.

The `.partial` is an append-only sequence of framed records (magic, kind, schema version, length,
CRC-32, payload; `_format.py` documents the bytes): a JSON header record (session, index, seeds,
metadata, schema version, start time), then chunks of consecutive steps holding the raw array
bytes of each field (no pickle). A strict reader (`scan_partial`, `load_partial`, `finish`) takes
records up to the first incomplete or corrupt one; salvage reads with resync: past a bad record it
searches forward for the next record that validates (magic, length, CRC-32, a chunk descriptor
that parses with the same fields and later steps), so damage costs the chunks it touches, not the
rest of the file.

Crash guarantees. A crash, kill -9, full disk or driver fault costs at most the steps since the
last flush (`flush_every_steps`, default 50, or `flush_interval_s`, default 1 s, whichever comes
first); every finished episode (one whose `finish` returned) is intact and listed, and the next
`SessionStore.open` salvages the `.partial` of the interrupted one as `crash_salvaged`, lists an
`.h5` whose manifest line was lost, and continues the numbering without repeating an index.

Salvage never destroys evidence. A `.partial` damaged in the middle (a bad sector, a flipped bit,
a damaged chunk header, a damaged header record) keeps every intact chunk: the salvaged `.h5`
holds the intact steps in order, `metadata["salvage"]` lists the `missing_steps` ranges [a, b)
and the `damaged_bytes` ranges of the original file (plus `header_lost` when record 0 was
unreadable: metadata and seeds are then empty), and when steps are missing an int64 `step_index`
array holds each step's original number (`Episode.step_index()`, `Episode.segments()`: learners
must not build a transition across a gap). A file with any byte that could not be used (the
original `.partial` once its `.h5` and manifest line are durable, a partial with no readable step,
a damaged `.h5` missing from the manifest, a leftover that does not match its listed episode) is
moved into `<session>/quarantine/` (name kept, `<stem>.1<suffix>`... if taken; directories
fsynced), with a `quarantine` event in events.jsonl and a line in `SessionStore.recovery`. Only
exact copies are deleted: a `.partial` whose every byte is in its `.h5`, one holding just a valid
header, temp files of atomic writes.

Readers (`iter_episodes`, `SessionReader`) skip a damaged file with a `DamagedEpisodeWarning`, and
refuse (with a `ManifestWarning`) a manifest entry whose file lies outside the session directory;
`verify_session` lists damaged, missing, unlisted and partial files, and (for information) the
quarantined ones.

Back-pressure: `EpisodeRecorder.append` never blocks on the disk and never drops a step. It
returns False when the store asks the collector to hold (the writer thread is more than
`queue_max_steps` behind, or free space is under `free_space_floor_bytes`): stop the arm and
wait until `store.health().hold` is False; `health().reason` is the operator's message. A write
error (ENOSPC, EIO) raises `StoreWriteError` (naming the file) from the next `append`/`finish`;
the steps stay in memory and `finish` retries.

Typical use::

    with SessionStore.open(root, "2024-05-01_reach", session_yaml_text=cfg_text) as store:
        print(store.recovery.summary())
        rec = store.begin_episode({"explorer": "gep", "goal": g}, seeds={"explorer": 3})
        for ...:
            if not rec.append({"time": t, "obs/q": q, ..., "command": c}):
                ...hold: stop the arm, wait for store.health()
        info = rec.finish("complete", {"timing": stats})

    for ep in iter_episodes([session_dir]):            # learning side
        q = ep.load("obs/q")

    reader = SessionReader(session_dir, max_cached_episodes=100)   # a growing session
    for ep in reader.refresh():                        # the episodes listed since the last call
        frames = reader.arrays(ep.index, ["obs/images/front"])["obs/images/front"]
    reader.rows("obs/q", episodes=[3, 3, 7], rows=[0, 5, 9]); reader.segments(3); reader.spec
"""

from ._format import (
    EPISODE_FORMAT,
    FINISH_OUTCOMES,
    OUTCOMES,
    SCHEMA_VERSION,
    SESSION_YAML,
    DamagedEpisodeError,
    EpisodeInfo,
    FieldSpec,
    ManifestPathError,
    PartialScan,
    SessionLocked,
    StepSchemaError,
    StoreError,
    StoreWriteError,
    atomic_write_bytes,
    atomic_write_text,
    flatten_step,
    load_partial,
    scan_partial,
)
from ._read import (
    DamagedEpisodeWarning,
    Episode,
    ManifestWarning,
    SessionReader,
    VerifyReport,
    find_sessions,
    iter_episodes,
    open_episode,
    read_events,
    read_manifest,
    read_session_yaml,
    verify_session,
    yaml_error_text,
)
from ._session import EpisodeRecorder, RecoveryReport, SessionStore, StoreHealth
from .spec import SPEC_FILE, CameraSpec, SessionSpec, SpecError, read_session_spec, spec_from_session_yaml

__all__ = [
    "EPISODE_FORMAT",
    "FINISH_OUTCOMES",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "SESSION_YAML",
    "SPEC_FILE",
    "CameraSpec",
    "DamagedEpisodeError",
    "DamagedEpisodeWarning",
    "Episode",
    "EpisodeInfo",
    "EpisodeRecorder",
    "FieldSpec",
    "ManifestPathError",
    "ManifestWarning",
    "PartialScan",
    "RecoveryReport",
    "SessionLocked",
    "SessionReader",
    "SessionSpec",
    "SessionStore",
    "SpecError",
    "StepSchemaError",
    "StoreError",
    "StoreHealth",
    "StoreWriteError",
    "VerifyReport",
    "atomic_write_bytes",
    "atomic_write_text",
    "find_sessions",
    "flatten_step",
    "iter_episodes",
    "load_partial",
    "open_episode",
    "read_events",
    "read_manifest",
    "read_session_spec",
    "read_session_yaml",
    "scan_partial",
    "spec_from_session_yaml",
    "verify_session",
    "yaml_error_text",
]
