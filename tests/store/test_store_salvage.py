"""Salvage of damaged `.partial` files (resync past damage) and the quarantine of evidence, and
manifest entries that point outside their session (store).

The property test damages a real recorder's `.partial` at random (bit flips, overwritten and
zeroed ranges, inserted garbage, truncation) and checks, against a layout of the file computed
here independently of the store's scanner: every chunk that is still byte-intact somewhere in the
damaged file ends up in the salvaged episode, bit-exact, and nothing is deleted that was not
copied (the damaged file lies byte-for-byte in quarantine/, unless it was intact and fully used).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from store import (
    EpisodeInfo,
    ManifestWarning,
    SessionReader,
    SessionStore,
    iter_episodes,
    open_episode,
    read_events,
    read_manifest,
    scan_partial,
    verify_session,
)
from store import _format as F

REC = struct.Struct("<4sBBHQI")


@pytest.fixture
def no_fsync(monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def make_arrays(steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Step i: obs/q = 10 i + 0..6 (so a row names its step), random frame, time, flag."""
    rng = np.random.default_rng(seed)
    return {
        "time": np.arange(steps, dtype=np.float64) * 0.05,
        "obs/q": np.arange(steps, dtype=np.float64)[:, None] * 10.0 + np.arange(7),
        "obs/images/front": rng.integers(0, 256, size=(steps, 4, 4, 3), dtype=np.uint8),
        "safety/intervened": rng.random(steps) < 0.3,
    }


def record_partial(root: Path, steps: int, chunk: int, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A real recorder's `.partial` of `steps` steps, flushed every `chunk`, left unfinished."""
    arrays = make_arrays(steps, seed)
    opts = {"flush_every_steps": chunk, "flush_interval_s": 3600.0, "free_space_floor_bytes": 0}
    with SessionStore.open(root, "sess", **opts) as store:
        rec = store.begin_episode({"goal": [1, 2]}, seeds={"explorer": seed})
        for i in range(steps):
            rec.append({k: a[i] for k, a in arrays.items()})
        rec.abandon()
    return rec.path, arrays


def reopen(root: Path) -> SessionStore:
    return SessionStore.open(root, "sess", free_space_floor_bytes=0)


@dataclasses.dataclass
class Rec:
    kind: int
    begin: int
    end: int
    start: int = -1  # chunks: first step and step count, from the descriptor
    n: int = 0


def layout(data: bytes) -> list[Rec]:
    """The records of an intact `.partial`, parsed here from the documented format."""
    out, pos = [], 0
    while pos < len(data):
        magic, kind, _ver, _res, length, _crc = REC.unpack_from(data, pos)
        assert magic == b"PLEP"
        rec = Rec(kind, pos, pos + REC.size + int(length))
        if kind == F.REC_CHUNK:
            (dlen,) = struct.unpack_from("<I", data, pos + REC.size)
            desc = json.loads(data[pos + REC.size + 4 : pos + REC.size + 4 + dlen])
            rec.start, rec.n = desc["start"], desc["n"]
        out.append(rec)
        pos = rec.end
    assert pos == len(data)
    return out


def valid_frames(buf: bytes) -> list[tuple[int, int]]:
    """(begin, end) of every place in `buf` where a complete record with a matching CRC starts."""
    out = []
    i = buf.find(b"PLEP")
    while i >= 0:
        if i + REC.size <= len(buf):
            _m, _k, _v, _r, length, crc = REC.unpack_from(buf, i)
            end = i + REC.size + int(length)
            if end <= len(buf) and zlib.crc32(buf[i + REC.size : end], zlib.crc32(buf[i + 4 : i + 16])) == crc:
                out.append((i, end))
        i = buf.find(b"PLEP", i + 1)
    return out


def load_salvaged(sd: Path):
    [info] = read_manifest(sd)
    ep = open_episode(info.path, expected_sha256=info.sha256, info=info, deep=True)
    return info, ep


def quarantine_events(sd: Path) -> list[dict]:
    return [e for e in read_events(sd) if e["kind"] == "quarantine"]


# ------------------------------------------------------------------------------- unit tests


@pytest.mark.parametrize("where", ["magic", "kind", "length", "crc", "descriptor"])
def test_one_damaged_byte_in_a_chunk_header_keeps_every_later_chunk(tmp_path, where):
    """12 chunks of 10 steps; one byte of chunk 1's header is damaged: steps 10..19 are lost, the
    110 others are salvaged bit-exact, the gap is recorded, the original goes to quarantine."""
    partial, arrays = record_partial(tmp_path, 120, 10)
    data = bytearray(partial.read_bytes())
    chunk1 = [r for r in layout(bytes(data)) if r.kind == F.REC_CHUNK][1]
    assert (chunk1.start, chunk1.n) == (10, 10)
    offset = {"magic": 1, "kind": 4, "length": 9, "crc": 17, "descriptor": REC.size + 4 + 3}[where]
    data[chunk1.begin + offset] ^= 0x41
    partial.write_bytes(bytes(data))
    sd = tmp_path / "sess"

    with reopen(tmp_path) as store:
        rep = store.recovery
        assert [(i.index, i.steps, i.outcome) for i in rep.salvaged] == [(0, 110, "crash_salvaged")]
        [line] = rep.quarantined
        assert line.startswith("episodes/episode_000000.partial -> quarantine/episode_000000.partial (")
        assert "quarantined episodes/episode_000000.partial" in rep.summary()
        assert "steps 10..19 missing" in rep.summary()

    _, ep = load_salvaged(sd)
    with ep:
        want_steps = np.r_[0:10, 20:120]
        np.testing.assert_array_equal(ep.step_index(), want_steps)
        assert ep.segments() == [(0, 10), (10, 110)]
        with SessionReader(sd) as reader:  # the learners' reader knows the gap when it lists the episode
            assert [e.index for e in reader.refresh()] == [0] and reader.segments(0) == [(0, 10), (10, 110)]
            np.testing.assert_array_equal(reader.rows("step_index", 0, [9, 10]), [9, 20])
        for key, want in arrays.items():
            got = ep.load(key)
            assert got.dtype == want.dtype and got.tobytes() == want[want_steps].tobytes(), key
        salvage = ep.metadata["salvage"]
        assert salvage["missing_steps"] == [[10, 20]]
        assert salvage["step_index_key"] == "step_index" and "step_index" in ep.fields
        assert salvage["damaged_bytes"] == [[chunk1.begin, chunk1.end]]
        assert salvage["discarded_bytes"] == chunk1.end - chunk1.begin
        assert salvage["quarantined_as"] == "quarantine/episode_000000.partial"
        assert ep.metadata["goal"] == [1, 2] and ep.seeds == {"explorer": 0}
    assert not partial.exists()
    assert (sd / "quarantine" / "episode_000000.partial").read_bytes() == bytes(data)
    report = verify_session(sd)
    assert report.clean, report.summary()
    assert report.quarantined == ["quarantine/episode_000000.partial"]
    assert "QUARANTINED quarantine/episode_000000.partial" in report.summary()


def test_bit_flip_in_chunk_data_costs_that_chunk_only(tmp_path):
    """The reported case: 60 steps, a flipped bit in chunk 2's arrays kept 20; now 50 are kept."""
    partial, arrays = record_partial(tmp_path, 60, 10)
    data = bytearray(partial.read_bytes())
    chunk2 = [r for r in layout(bytes(data)) if r.kind == F.REC_CHUNK][2]
    data[chunk2.end - 5] ^= 0x04  # inside the last field's array bytes
    partial.write_bytes(bytes(data))
    with reopen(tmp_path) as store:
        [info] = store.recovery.salvaged
        assert info.steps == 50
    _, ep = load_salvaged(tmp_path / "sess")
    with ep:
        np.testing.assert_array_equal(ep.step_index(), np.r_[0:20, 30:60])
        np.testing.assert_array_equal(ep.load("obs/q"), arrays["obs/q"][np.r_[0:20, 30:60]])
    assert (tmp_path / "sess" / "quarantine" / "episode_000000.partial").read_bytes() == bytes(data)


def test_damaged_header_record_keeps_the_chunks(tmp_path):
    partial, arrays = record_partial(tmp_path, 35, 10)
    data = bytearray(partial.read_bytes())
    header = layout(bytes(data))[0]
    data[header.begin + REC.size + 5] ^= 0xFF  # inside the header JSON
    partial.write_bytes(bytes(data))
    with reopen(tmp_path) as store:
        [info] = store.recovery.salvaged
        assert info.steps == 35
        assert any("header record lost" in p for p in store.recovery.problems)
        assert len(store.recovery.quarantined) == 1
    _, ep = load_salvaged(tmp_path / "sess")
    with ep:
        salvage = ep.metadata.pop("salvage")
        assert ep.metadata == {} and ep.seeds is None  # the header's metadata and seeds are lost
        assert salvage["header_lost"] is True and salvage["missing_steps"] == []
        assert salvage["damaged_bytes"] == [[0, header.end]]
        assert ep.step_index_key is None and ep.segments() == [(0, 35)]  # no gap: no step_index array
        for key, want in arrays.items():
            assert ep.load(key).tobytes() == want.tobytes(), key


def test_scan_partial_is_strict_by_default_and_resyncs_on_request(tmp_path):
    partial, arrays = record_partial(tmp_path, 40, 10)
    data = bytearray(partial.read_bytes())
    chunk1 = [r for r in layout(bytes(data)) if r.kind == F.REC_CHUNK][1]
    data[chunk1.begin + REC.size + 30] ^= 1
    partial.write_bytes(bytes(data))
    strict = scan_partial(partial)
    assert strict.steps == 10 and strict.valid_bytes == chunk1.begin and "CRC mismatch" in strict.problem
    assert strict.missing_steps == [] and strict.damaged == [(chunk1.begin, len(data))]
    loose = scan_partial(partial, resync=True)
    assert [(s, n) for s, n, _ in loose.chunks] == [(0, 10), (20, 10), (30, 10)]
    assert loose.missing_steps == [(10, 20)] and loose.damaged == [(chunk1.begin, chunk1.end)]
    assert loose.discarded_bytes == chunk1.end - chunk1.begin
    scan, got = F.load_partial(partial, resync=True)
    np.testing.assert_array_equal(scan.step_index(), np.r_[0:10, 20:40])
    np.testing.assert_array_equal(got["obs/q"], arrays["obs/q"][np.r_[0:10, 20:40]])


def test_quarantine_note_in_events_and_a_taken_name_gets_a_suffix(tmp_path):
    partial, _ = record_partial(tmp_path, 30, 10)
    data = partial.read_bytes() + b"\x00" * 100  # garbage after the last chunk
    partial.write_bytes(data)
    sd = tmp_path / "sess"
    (sd / "quarantine").mkdir()
    (sd / "quarantine" / "episode_000000.partial").write_bytes(b"an earlier one")
    with reopen(tmp_path) as store:
        assert store.recovery.salvaged[0].steps == 30
    [event] = quarantine_events(sd)
    assert event["file"] == "episodes/episode_000000.partial"
    assert event["moved_to"] == "quarantine/episode_000000.1.partial"
    assert "100 bytes unreadable" in event["reason"] and "30 steps salvaged" in event["reason"]
    assert (sd / "quarantine" / "episode_000000.1.partial").read_bytes() == data
    assert (sd / "quarantine" / "episode_000000.partial").read_bytes() == b"an earlier one"
    recovery = [e for e in read_events(sd) if e["kind"] == "store_recovery"]
    assert "quarantine/episode_000000.1.partial" in recovery[-1]["summary"]


def test_intact_or_empty_partials_are_removed_not_quarantined(tmp_path):
    """An exact copy may go: a fully valid partial once in its .h5, a partial of just a valid header."""
    record_partial(tmp_path, 25, 10)
    with reopen(tmp_path) as store:
        assert store.recovery.salvaged[0].steps == 25 and store.recovery.quarantined == []
        store.begin_episode().abandon()  # 1: header only
    with reopen(tmp_path) as store:
        assert store.recovery.removed == ["episodes/episode_000001.partial (no complete chunk)"]
        assert store.recovery.quarantined == []
    assert not (tmp_path / "sess" / "quarantine").exists() and quarantine_events(tmp_path / "sess") == []


def test_header_and_garbage_without_a_step_is_quarantined(tmp_path):
    with reopen(tmp_path) as store:
        rec = store.begin_episode({"goal": 3})
        rec.abandon()
    data = rec.path.read_bytes() + os.urandom(5000)
    rec.path.write_bytes(data)
    with reopen(tmp_path) as store:
        assert store.recovery.salvaged == [] and store.recovery.removed == []
        [line] = store.recovery.quarantined
        assert "no readable step; 5000 of" in line
    assert (tmp_path / "sess" / "quarantine" / "episode_000000.partial").read_bytes() == data


def test_unlisted_damaged_h5_is_quarantined_and_its_partial_salvaged(tmp_path):
    """A crash between the rename of the .h5 and its manifest line, and then the .h5 got damaged:
    the .h5 goes to quarantine and the .partial (still there) is salvaged in its place."""
    sd = tmp_path / "sess"
    partial, arrays = record_partial(tmp_path, 20, 10)
    saved = partial.read_bytes()
    with reopen(tmp_path) as store:
        [info] = store.recovery.salvaged
    (sd / "manifest.jsonl").write_text("")
    h5 = info.path.read_bytes()
    info.path.write_bytes(h5[: len(h5) // 3])
    partial.write_bytes(saved)
    with reopen(tmp_path) as store:
        rep = store.recovery
        assert rep.relisted == [] and [i.steps for i in rep.salvaged] == [20]
        assert any(q.startswith("episodes/episode_000000.h5 -> quarantine/episode_000000.h5") for q in rep.quarantined)
    assert (sd / "quarantine" / "episode_000000.h5").read_bytes() == h5[: len(h5) // 3]
    _, ep = load_salvaged(sd)
    with ep:
        assert ep.load("obs/q").tobytes() == arrays["obs/q"].tobytes()
    assert verify_session(sd).clean


def test_legacy_partial_damaged_file_is_salvaged_and_quarantined(tmp_path):
    sd = tmp_path / "sess"
    partial, arrays = record_partial(tmp_path, 30, 10)
    data = bytearray(partial.read_bytes())
    data[3] ^= 1  # the header's magic: an old version renamed such files *.partial.damaged
    legacy = partial.with_name(partial.name + ".damaged")
    legacy.write_bytes(bytes(data))
    partial.unlink()
    with reopen(tmp_path) as store:
        assert [i.steps for i in store.recovery.salvaged] == [30]
    assert not legacy.exists()
    assert (sd / "quarantine" / "episode_000000.partial.damaged").read_bytes() == bytes(data)
    _, ep = load_salvaged(sd)
    with ep:
        assert ep.metadata["salvage"]["header_lost"] and ep.metadata["salvage"]["from"] == legacy.name
        assert ep.load("obs/images/front").tobytes() == arrays["obs/images/front"].tobytes()


def test_leftover_partial_that_differs_from_its_listed_episode_is_quarantined(tmp_path):
    sd = tmp_path / "sess"
    partial, _ = record_partial(tmp_path, 30, 10)
    full = partial.read_bytes()
    with reopen(tmp_path) as store:
        assert store.recovery.salvaged[0].steps == 30
    partial.write_bytes(full)  # an exact leftover (crash before its removal): removed
    with reopen(tmp_path) as store:
        assert store.recovery.removed == ["episodes/episode_000000.partial"]
    partial.write_bytes(full + b"junk")  # not an exact copy: kept
    with reopen(tmp_path) as store:
        [line] = store.recovery.quarantined
        assert "leftover of listed episode 0" in line
    assert (sd / "quarantine" / "episode_000000.partial").read_bytes() == full + b"junk"
    assert len(read_manifest(sd)) == 1


# ------------------------------------------------------------------ manifest path escaping


def _two_sessions(tmp_path) -> tuple[Path, Path, dict]:
    """Session `sess` with one episode; session `other` with one episode whose entry we steal."""
    for name in ("sess", "other"):
        with SessionStore.open(tmp_path, name, free_space_floor_bytes=0) as store:
            rec = store.begin_episode()
            for i in range(3):
                rec.append({"obs/q": np.full(7, float(i))})
            rec.finish()
    other_entry = json.loads((tmp_path / "other" / "manifest.jsonl").read_text().splitlines()[0])
    return tmp_path / "sess", tmp_path / "other", other_entry


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "dotdot_inside", "symlink"])
def test_manifest_entry_whose_file_leaves_the_session_is_refused(tmp_path, kind):
    sd, other, entry = _two_sessions(tmp_path)
    target = other / "episodes" / "episode_000000.h5"
    entry = dict(entry, index=1, session_id="sess")
    entry["file"] = {
        "dotdot": "../other/episodes/episode_000000.h5",
        "absolute": str(target),
        "dotdot_inside": "episodes/../../other/episodes/episode_000000.h5",
        "symlink": "episodes/link.h5",
    }[kind]
    if kind == "symlink":
        (sd / "episodes" / "link.h5").symlink_to(Path("..") / ".." / "other" / "episodes" / "episode_000000.h5")
    with open(sd / "manifest.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")

    with pytest.warns(ManifestWarning) as caught:
        listed = read_manifest(sd)
    assert [e.index for e in listed] == [0]
    [w] = caught
    message = str(w.message)
    assert str(sd / "manifest.jsonl") in message and "episode 1" in message and entry["file"] in message
    assert "outside the session directory" in message
    with pytest.warns(ManifestWarning):
        assert [e.index for e in iter_episodes(sd)] == [0]
    with pytest.warns(ManifestWarning):
        assert [(e.index, e.steps) for e in SessionReader(sd).refresh()] == [(0, 3)]
    report = verify_session(sd)  # records the refusal instead of warning
    assert [e.index for e in report.ok] == [0] and not report.clean
    assert any("outside the session directory" in p for p in report.manifest_problems)
    if kind != "symlink":
        with pytest.raises(ValueError, match="outside the session directory"):
            EpisodeInfo.from_json(entry, sd)
        with pytest.raises(ValueError, match="outside the session directory"):
            EpisodeInfo(**{**entry, "session_dir": sd})


def test_resume_does_not_trust_an_escaping_manifest_entry(tmp_path):
    """Recovery reads the manifest too: the refused entry is reported, its index not taken as listed."""
    sd, _other, entry = _two_sessions(tmp_path)
    with open(sd / "manifest.jsonl", "a") as f:
        f.write(json.dumps(dict(entry, index=5, file="../other/episodes/episode_000000.h5")) + "\n")
    with reopen(tmp_path) as store:
        assert any("outside the session directory" in p for p in store.recovery.problems)
        assert store.next_index == 1


# ------------------------------------------------------------------------- property test


_POS = st.floats(0, 1, allow_nan=False)
DAMAGE = st.one_of(
    st.tuples(st.just("flip"), _POS, st.integers(1, 255)),
    st.tuples(st.just("overwrite"), _POS, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("zero"), _POS, st.integers(1, 600)),
    st.tuples(st.just("insert"), _POS, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("truncate"), _POS, st.just(0)),
)


def apply_damage(data: bytes, recs: list[Rec], ops) -> tuple[bytes, list[int | None]]:
    """The damaged file, and where each original record's bytes now start (None: cut or split by
    an insertion or truncation). Whether those bytes are still intact is for the caller to compare."""
    buf = bytearray(data)
    loc: list[int | None] = [r.begin for r in recs]
    size = [r.end - r.begin for r in recs]
    for op, where, arg in ops:
        if not buf and op != "insert":
            continue
        p = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if op == "flip":
            buf[p] ^= arg
        elif op == "overwrite":
            buf[p : p + len(arg)] = arg
        elif op == "zero":
            end = min(len(buf), p + arg)
            buf[p:end] = bytes(end - p)
        elif op == "insert":
            p = int(where * len(buf))
            buf[p:p] = arg
            for i, at in enumerate(loc):
                if at is not None and at >= p:
                    loc[i] = at + len(arg)
                elif at is not None and at < p < at + size[i]:
                    loc[i] = None
        elif op == "truncate":
            p = int(where * len(buf))
            del buf[p:]
            loc = [at if at is not None and at + size[i] <= p else None for i, at in enumerate(loc)]
    return bytes(buf), loc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.integers(1, 80),
    chunk=st.integers(2, 12),
    seed=st.integers(0, 2**16),
    ops=st.lists(DAMAGE, min_size=1, max_size=4),
)
def test_random_damage_keeps_every_findable_intact_chunk_and_deletes_nothing(no_fsync, steps, chunk, seed, ops):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sd = root / "sess"
        partial, arrays = record_partial(root, steps, chunk, seed)
        data = partial.read_bytes()
        recs = layout(data)
        damaged, loc = apply_damage(data, recs, ops)
        partial.write_bytes(damaged)

        # Independent expectation: records whose bytes are intact where they now lie, and which no
        # accidental valid record (at a place that is no intact record) overlaps or precedes.
        intact = [
            loc[i] is not None and damaged[loc[i] : loc[i] + r.end - r.begin] == data[r.begin : r.end]
            for i, r in enumerate(recs)
        ]
        genuine = {loc[i] for i in range(len(recs)) if intact[i]}
        stray = [(a, b) for a, b in valid_frames(damaged) if a not in genuine]
        first_stray = min((a for a, _ in stray), default=len(damaged) + 1)
        expected = [
            r
            for i, r in enumerate(recs)
            if r.kind == F.REC_CHUNK and intact[i] and loc[i] + (r.end - r.begin) <= first_stray
        ]
        header_intact = intact[0] and recs[0].kind == F.REC_HEADER and loc[0] < first_stray

        with reopen(root) as store:
            rep = store.recovery
        assert not partial.exists()

        # (a) every findable intact chunk is in the salvaged episode, bit-exact; nothing else is
        listed = read_manifest(sd)
        if expected:
            assert len(listed) == 1 and rep.salvaged == listed
        if listed:
            _, ep = load_salvaged(sd)
            with ep:
                index = ep.step_index()
                assert np.all(np.diff(index) > 0)
                have = set(index.tolist())
                for r in expected:
                    assert set(range(r.start, r.start + r.n)) <= have, (r.start, r.n)
                if not stray:  # every step salvaged is a recorded one, at its place
                    for key, want in arrays.items():
                        assert ep.load(key).tobytes() == want[index].tobytes(), key
                salvage = ep.metadata["salvage"]
                gaps = set(range(int(index[-1]) + 1)) - have
                assert gaps == {s for a, b in salvage["missing_steps"] for s in range(a, b)}
                assert (ep.step_index_key is not None) == bool(gaps)
                if header_intact:
                    assert ep.metadata["goal"] == [1, 2] and ep.seeds == {"explorer": seed}
                else:
                    assert salvage.get("header_lost") or ep.metadata.get("goal") == [1, 2]
            assert verify_session(sd).clean

        # (b) nothing is deleted that was not copied
        quarantined = sorted((sd / "quarantine").iterdir()) if (sd / "quarantine").is_dir() else []
        strict = F._scan_buffer(damaged, partial)
        note_event(f"chunks found past the first damage: {sum(i.steps for i in listed) > strict.steps}")
        note_event(f"header intact: {header_intact}")
        if not damaged:
            assert quarantined == []
        elif strict.discarded_bytes == 0:  # an intact file (e.g. cut at a record boundary): fully used
            assert quarantined == [] and sum(i.steps for i in listed) == strict.steps
        else:
            assert [p.read_bytes() for p in quarantined] == [damaged]
            [event] = quarantine_events(sd)
            assert event["file"] == "episodes/episode_000000.partial"
            assert event["moved_to"] == "quarantine/episode_000000.partial"
            assert len(rep.quarantined) == 1


def test_warnings_stay_quiet_on_an_intact_session(tmp_path):
    """No quarantine, no warning, no salvage noise for a session that was closed cleanly."""
    with SessionStore.open(tmp_path, "sess", free_space_floor_bytes=0) as store:
        rec = store.begin_episode()
        rec.append({"obs/q": np.zeros(7)})
        rec.finish()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with reopen(tmp_path) as store:
            assert not store.recovery.changed_anything
        report = verify_session(tmp_path / "sess")
    assert report.clean and report.quarantined == []
