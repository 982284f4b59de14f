"""Episode store (store): sessions, resume, damaged files, back-pressure, write errors, reading."""

from __future__ import annotations

import ast
import errno
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from store import (
    DamagedEpisodeError,
    DamagedEpisodeWarning,
    SessionLocked,
    SessionReader,
    SessionStore,
    StepSchemaError,
    StoreWriteError,
    atomic_write_bytes,
    flatten_step,
    iter_episodes,
    open_episode,
    read_events,
    read_manifest,
    scan_partial,
    verify_session,
)
from store import _format as F

REPO = Path(__file__).resolve().parents[2]


def step(i: int, index: int = 0, size: int = 8) -> dict:
    """A collector-like step whose values encode (episode index, step)."""
    v = index * 1000.0 + i
    return {
        "time": 0.01 * i,
        "obs/q": np.full(7, v),
        "obs/dq": np.full(7, -v),
        "obs/tip_pos": np.array([v, 0.0, 1.0]),
        "obs/images/front": np.full((size, size, 3), i % 256, np.uint8),
        "action": np.full(7, 0.5),
        "command": np.full(7, 0.25),
        "privileged/cube_top_face": np.int64(index % 6),
        "safety/intervened": bool(i % 3 == 0),
    }


def record(store: SessionStore, steps: int, outcome: str = "complete", **kw):
    rec = store.begin_episode({"goal": [1, 2]}, **kw)
    for i in range(steps):
        rec.append(step(i, rec.index))
    return rec.finish(outcome) if outcome else rec


def check_episode_values(ep) -> None:
    q = ep.load("obs/q")
    assert q.shape == (ep.steps, 7)
    np.testing.assert_array_equal(q[:, 0], ep.index * 1000.0 + np.arange(ep.steps))


def open_store(root, **kw) -> SessionStore:
    kw.setdefault("free_space_floor_bytes", 0)
    return SessionStore.open(root, "sess", **kw)


# ------------------------------------------------------------------------------------ basics


def test_store_is_a_leaf_and_light():
    """DESIGN.md: store imports nothing of ours; importing it does not load h5py."""
    code = (
        "import sys, store; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('robot_drivers', 'sim', 'safety', 'learning', 'h5py')]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    for path in (REPO / "collector" / "store").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [] if node.level else [node.module or ""]
            else:
                continue
            ours = [n for n in names if n.split(".")[0] in ("collector", "robot_drivers", "sim", "safety", "learning")]
            assert not ours, f"{path.name} imports {ours}"


def test_layout_manifest_events_and_session_yaml(tmp_path):
    with open_store(tmp_path, session_yaml_text="robot: sim\n") as store:
        info = record(store, 30, seeds={"explorer": 7})
        store.log_event("safety_stop", joint=3, value=np.float32(1.5), fsync=True)
    sd = tmp_path / "sess"
    assert (sd / "session.yaml").read_text() == "robot: sim\n"
    assert info.file == "episodes/episode_000000.h5" and (sd / info.file).is_file()
    line = json.loads((sd / "manifest.jsonl").read_text())
    assert set(line) == {"index", "steps", "outcome", "file", "sha256", "schema_version", "time", "bytes", "session_id"}
    assert line["sha256"] == F.sha256_file(sd / info.file)
    [ev] = read_events(sd)
    assert ev["kind"] == "safety_stop" and ev["joint"] == 3 and ev["value"] == 1.5 and ev["time"] > 0
    with h5py.File(sd / info.file) as f:
        assert f.attrs["schema_version"] == 1 and f.attrs["outcome"] == "complete"
        assert json.loads(f.attrs["seeds"]) == {"explorer": 7}
        assert f["obs/images/front"].chunks is None and f["obs/q"].dtype == np.float64  # contiguous
        assert f["safety/intervened"].dtype == bool


def test_lzf_compression_chunks_frames_one_per_chunk(tmp_path):
    with open_store(tmp_path, image_compression="lzf") as store:
        rec = store.begin_episode()
        for i in range(12):
            rec.append(step(i, size=84))
        info = rec.finish()
    with h5py.File(info.path) as f:
        ds = f["obs/images/front"]
        assert ds.chunks == (1, 84, 84, 3) and ds.compression == "lzf"
        assert f["obs/q"].chunks is None
    with open_episode(info.path, expected_sha256=info.sha256) as ep:
        np.testing.assert_array_equal(ep.load("obs/images/front")[:, 0, 0, 0], np.arange(12))


def test_empty_episode_is_not_written(tmp_path):
    with open_store(tmp_path) as store:
        rec = store.begin_episode()
        assert rec.finish() is None
        assert store.next_index == 1
    sd = tmp_path / "sess"
    assert read_manifest(sd) == [] and not list((sd / "episodes").glob("episode_*"))


def test_step_schema_is_fixed_by_the_first_step(tmp_path):
    with open_store(tmp_path) as store:
        rec = store.begin_episode()
        rec.append(step(0))
        bad = step(1)
        bad["obs/q"] = np.zeros(6)
        with pytest.raises(StepSchemaError, match=r"'obs/q'.*shape"):
            rec.append(bad)
        bad = step(1)
        bad["obs/images/front"] = bad["obs/images/front"].astype(np.float32)
        with pytest.raises(StepSchemaError, match=r"'obs/images/front'.*float32"):
            rec.append(bad)
        bad = step(1)
        del bad["command"]
        bad["extra"] = 1.0
        with pytest.raises(StepSchemaError, match=r"missing \['command'\].*unexpected \['extra'\]"):
            rec.append(bad)
        assert rec.steps == 1
        rec.append(step(1))
        assert rec.finish().steps == 2
        for first, match in [
            ({"obs/q": np.array(["a"])}, "not numeric"),
            ({"obs": {"q": 1.0}}, "flatten"),
            ({"/q": 1.0}, "part"),
            ({"obs": 1.0, "obs/q": 2.0}, "under key 'obs'"),
        ]:
            rec = store.begin_episode()
            with pytest.raises(StepSchemaError, match=match):
                rec.append(first)
            rec.finish()
    assert flatten_step({"obs": {"q": 1, "images": {"a": 2}}, "t": 3}) == {"obs/q": 1, "obs/images/a": 2, "t": 3}


def test_second_open_of_a_session_is_refused(tmp_path):
    with open_store(tmp_path):
        with pytest.raises(SessionLocked):
            open_store(tmp_path)
    open_store(tmp_path).close()


def test_atomic_write_bytes(tmp_path):
    target = tmp_path / "explorer" / "checkpoint.pt"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["checkpoint.pt"]


# ------------------------------------------------------------------------------------ resume


def test_resume_continues_numbering_salvages_partial_and_lists_unlisted(tmp_path):
    sd = tmp_path / "sess"
    with open_store(tmp_path, flush_every_steps=10) as store:
        record(store, 25)  # 0
        record(store, 12)  # 1
        rec = record(store, 37, outcome=None)  # 2: crash mid-episode
        rec.flush()
        partial_bytes = rec.path.read_bytes()
        rec.abandon()
    (sd / "episodes" / "episode_000002.partial").write_bytes(partial_bytes[:-5])  # torn last chunk
    # crash between the rename of episode 1 and its manifest line:
    lines = (sd / "manifest.jsonl").read_text().splitlines()
    (sd / "manifest.jsonl").write_text(lines[0] + "\n" + lines[1][:40])  # ... and a torn line
    (sd / "episodes" / ".episode_000003.h5.999.tmp").write_bytes(b"junk")
    (sd / ".session.yaml.999.tmp").write_bytes(b"junk")

    with open_store(tmp_path, flush_every_steps=10) as store:
        rep = store.recovery
        assert rep.resumed and store.next_index == 3
        assert [(i.index, i.steps, i.outcome) for i in rep.salvaged] == [(2, 30, "crash_salvaged")]
        assert [(i.index, i.steps, i.outcome) for i in rep.relisted] == [(1, 12, "complete")]
        assert sorted(rep.removed) == [".session.yaml.999.tmp", "episodes/.episode_000003.h5.999.tmp"]
        assert "torn last manifest line" in rep.problems[0]
        assert record(store, 5).index == 3
    report = verify_session(sd)
    assert report.clean, report.summary()
    assert [e.index for e in report.ok] == [0, 1, 2, 3]
    eps = list(iter_episodes(sd))
    assert [(e.index, e.outcome, e.steps) for e in eps] == [
        (0, "complete", 25),
        (1, "complete", 12),
        (2, "crash_salvaged", 30),
        (3, "complete", 5),
    ]
    for ep in eps:
        check_episode_values(ep)
    assert any(e["kind"] == "store_recovery" for e in read_events(sd))


def test_index_never_repeats_even_for_empty_or_vanished_partials(tmp_path):
    sd = tmp_path / "sess"
    with open_store(tmp_path) as store:
        record(store, 3)  # 0
        store.begin_episode().abandon()  # 1: header only, no steps
    with open_store(tmp_path) as store:
        assert store.recovery.removed == ["episodes/episode_000001.partial (no complete chunk)"]
        assert store.next_index == 2
        store.begin_episode().abandon()  # 2
    (sd / "episodes" / "episode_000002.partial").unlink()  # even with the file gone
    with open_store(tmp_path) as store:
        assert store.next_index == 3


def test_leftover_partial_of_a_listed_episode_is_dropped_not_duplicated(tmp_path):
    """Crash after the manifest line but before the .partial was removed."""
    sd = tmp_path / "sess"
    with open_store(tmp_path) as store:
        rec = record(store, 20, outcome=None)
        rec.flush()
        saved = rec.path.read_bytes()
        rec.finish()
    (sd / "episodes" / "episode_000000.partial").write_bytes(saved)
    with open_store(tmp_path) as store:
        assert store.recovery.salvaged == [] and store.recovery.removed == ["episodes/episode_000000.partial"]
    assert len(read_manifest(sd)) == 1 and verify_session(sd).clean


def test_changed_config_on_resume_is_kept_beside(tmp_path):
    open_store(tmp_path, session_yaml_text="a: 1\n").close()
    with open_store(tmp_path, session_yaml_text="a: 2\n") as store:
        assert store.recovery.config_changed == "session.resume-1.yaml"
    assert (tmp_path / "sess" / "session.yaml").read_text() == "a: 1\n"
    assert (tmp_path / "sess" / "session.resume-1.yaml").read_text() == "a: 2\n"


def test_unreadable_partial_is_kept_aside(tmp_path):
    sd = tmp_path / "sess"
    (sd / "episodes").mkdir(parents=True)
    junk = os.urandom(100_000)
    (sd / "episodes" / "episode_000004.partial").write_bytes(junk)
    with open_store(tmp_path) as store:
        assert store.next_index == 5
        [line] = store.recovery.quarantined
        assert line.startswith("episodes/episode_000004.partial -> quarantine/episode_000004.partial (no readable step")
    assert (sd / "quarantine" / "episode_000004.partial").read_bytes() == junk
    assert not (sd / "episodes" / "episode_000004.partial").exists()


# ---------------------------------------------------------------------------- damaged files


def _damaged_session(tmp_path) -> Path:
    with open_store(tmp_path) as store:
        infos = [record(store, 20 + i) for i in range(6)]
    paths = [i.path for i in infos]
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) // 2])  # truncated
    paths[1].write_bytes(os.urandom(len(data)))  # random bytes
    flipped = bytearray(paths[2].read_bytes())  # one bit in the middle (image data)
    flipped[len(flipped) // 2] ^= 0x10
    paths[2].write_bytes(bytes(flipped))
    paths[3].unlink()  # missing
    return tmp_path / "sess"


def test_verify_session_reports_damaged_files(tmp_path):
    sd = _damaged_session(tmp_path)
    report = verify_session(sd)
    assert not report.clean
    assert [e.index for e in report.ok] == [4, 5]
    reasons = dict(report.damaged)
    assert set(reasons) == {f"episodes/episode_00000{i}.h5" for i in range(3)}
    assert all("checksum mismatch" in r for r in reasons.values())
    assert report.missing == ["episodes/episode_000003.h5"]
    text = report.summary()
    assert "DAMAGED" in text and "MISSING" in text and "episode_000002.h5" in text
    # without a checksum (e.g. an unlisted file) the structural damage is still found
    with pytest.raises(DamagedEpisodeError, match="cannot open as HDF5"):
        open_episode(sd / "episodes" / "episode_000000.h5")
    with pytest.raises(DamagedEpisodeError, match="cannot open as HDF5"):
        open_episode(sd / "episodes" / "episode_000001.h5")


def test_readers_skip_damaged_files_with_a_warning(tmp_path):
    sd = _damaged_session(tmp_path)
    with pytest.warns(DamagedEpisodeWarning) as caught:
        eps = list(iter_episodes(sd))
    assert [e.index for e in eps] == [4, 5]
    messages = " ".join(str(w.message) for w in caught)
    for i in range(4):
        assert f"episode_00000{i}.h5" in messages
    with pytest.warns(DamagedEpisodeWarning) as caught:
        reader = SessionReader(sd)
        listed = reader.refresh()
    assert [e.index for e in listed] == [4, 5] and sum(e.steps for e in listed) == 24 + 25
    assert sorted(str(w.message).split(":")[0].rsplit("/", 1)[-1] for w in caught) == [
        f"episode_00000{i}.h5" for i in range(4)
    ], "each damaged file is named once"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reader.refresh() == [], "a damaged episode is skipped once, never listed again"


def test_schema_and_missing_key_problems_are_named(tmp_path):
    with open_store(tmp_path) as store:
        a, b, c = (record(store, 10) for _ in range(3))
    with h5py.File(a.path, "r+") as f:
        f.attrs["schema_version"] = 99
    with h5py.File(b.path, "r+") as f:
        del f["obs/dq"]
    with pytest.raises(DamagedEpisodeError, match="schema version 99"):
        open_episode(a.path)
    with pytest.raises(DamagedEpisodeError, match="'obs/dq' is missing"):
        open_episode(b.path)
    with pytest.raises(DamagedEpisodeError, match="missing required arrays"):
        open_episode(c.path, required_keys=["privileged/cube_pos"])
    with pytest.warns(DamagedEpisodeWarning) as caught:
        assert list(iter_episodes(tmp_path, required_keys=["privileged/cube_pos"], verify_checksum=False)) == []
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3
    assert "schema version 99" in messages[0] and "'obs/dq'" in messages[1] and "missing required" in messages[2]


def test_torn_manifest_line_is_skipped_by_readers(tmp_path):
    with open_store(tmp_path) as store:
        record(store, 5)
    with open(tmp_path / "sess" / "manifest.jsonl", "a") as f:
        f.write('{"index": 1, "ste')
    with pytest.warns(UserWarning, match="unreadable manifest line"):
        assert len(read_manifest(tmp_path / "sess")) == 1


# ------------------------------------------------------------------------ back-pressure, disk


def test_writer_falling_behind_asks_to_hold_and_drops_nothing(tmp_path, monkeypatch):
    """The writer is slowed by a sleeping write function; appends return False but keep every step."""
    real = F.write_all

    def slow(fd, pieces):
        time.sleep(0.03)
        return real(fd, pieces)

    with open_store(tmp_path, flush_every_steps=5, queue_max_steps=20) as store:
        rec = store.begin_episode()
        monkeypatch.setattr(F, "write_all", slow)
        results = [rec.append(step(i)) for i in range(100)]
        assert not all(results) and results[0]
        health = store.health()
        assert health.hold and health.state == "hold" and "writer is behind" in health.reason
        monkeypatch.setattr(F, "write_all", real)
        info = rec.finish()
        assert not store.health().hold
    assert info.steps == 100
    with open_episode(info.path) as ep:
        check_episode_values(ep)


def test_free_space_floor_triggers_hold(tmp_path):
    with open_store(tmp_path, flush_every_steps=5) as store:
        store.free_space_floor_bytes = store.health().free_bytes + (1 << 40)
        rec = store.begin_episode()
        assert rec.append(step(0)) is False
        h = store.health()
        assert h.hold and "disk nearly full" in h.reason and "floor" in h.reason
        store.free_space_floor_bytes = 0
        assert not store.health().hold
        assert rec.append(step(1)) is True
        assert rec.finish().steps == 2


def test_injected_write_error_is_surfaced_and_retried(tmp_path, monkeypatch):
    """EIO injected by replacing the store's low-level write function (store._format.write_all)
    while the writer thread appends chunks: append and finish raise StoreWriteError naming the
    .partial; every step is kept, and finish succeeds once writes work again."""
    real = F.write_all
    failing = threading.Event()

    def flaky(fd, pieces):
        if failing.is_set():
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, pieces)

    monkeypatch.setattr(F, "write_all", flaky)
    with open_store(tmp_path, flush_every_steps=5) as store:
        rec = store.begin_episode()
        for i in range(20):
            rec.append(step(i))
        rec.flush()
        failing.set()
        with pytest.raises(StoreWriteError) as exc:
            for i in range(20, 60):
                rec.append(step(i))
                time.sleep(0.002)
        assert exc.value.errno == errno.EIO and exc.value.filename.endswith("episode_000000.partial")
        assert store.health().state == "error"
        accepted = rec.steps
        assert rec.flushed_steps >= 20
        with pytest.raises(StoreWriteError):
            rec.finish()
        assert scan_partial(rec.path).steps == rec.flushed_steps  # durable part intact
        failing.clear()
        info = rec.finish()
    assert info.steps == accepted
    with open_episode(info.path) as ep:
        check_episode_values(ep)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    except OSError:
        return False
    return r.returncode == 0


def test_real_enospc_on_a_full_tmpfs(tmp_path):
    """A real full disk: a 4 MiB tmpfs mounted for the test (needs root; skipped otherwise), filled
    with ballast. The ENOSPC of the writer is raised with the .partial named; what was flushed before
    survives a 'crash' (abandon while the disk is full) and is salvaged once space is freed."""
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "4m"):
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        store = open_store(mnt, flush_every_steps=5)
        ballast = mnt / "ballast"
        ballast.write_bytes(b"\0" * (3 * 1024 * 1024))
        rec = store.begin_episode()
        err = None
        for i in range(2000):
            try:
                rec.append(step(i, size=84))
            except StoreWriteError as e:
                err = e
                break
            time.sleep(0.001)
        assert err is not None and err.errno == errno.ENOSPC
        assert err.filename.endswith("episode_000000.partial")
        flushed = rec.flushed_steps
        assert 0 < flushed < rec.steps
        rec.abandon()  # the process gives up while the disk is full
        store.close()
        ballast.unlink()
        with open_store(mnt) as store:
            [info] = store.recovery.salvaged
        assert info.steps == flushed and info.outcome == "crash_salvaged"
        with open_episode(info.path, expected_sha256=info.sha256) as ep:
            check_episode_values(ep)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_finish_retries_after_space_is_freed_on_real_tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    if not _mount_tmpfs(mnt, "4m"):
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        with open_store(mnt, flush_every_steps=5) as store:
            ballast = mnt / "ballast"
            ballast.write_bytes(b"\0" * (3 * 1024 * 1024))
            rec = store.begin_episode()
            n = 0
            with pytest.raises(StoreWriteError):
                for n in range(1, 2000):
                    rec.append(step(n - 1, size=84))
                    time.sleep(0.001)
            with pytest.raises(StoreWriteError):
                rec.finish()
            ballast.unlink()
            info = rec.finish()
        assert info.steps == n
        with open_episode(info.path, expected_sha256=info.sha256) as ep:
            check_episode_values(ep)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# -------------------------------------------------------------------------------- reading


def test_session_reader_lists_new_episodes_and_reads_rows(tmp_path):
    with open_store(tmp_path) as store:
        for n in (10, 3):
            record(store, n)
        reader = SessionReader(tmp_path / "sess")
        assert [(e.index, e.steps) for e in reader.refresh()] == [(0, 10), (1, 3)]
        assert reader.refresh() == [], "only the episodes listed since the last call"
        record(store, 7)
        assert [(e.index, e.steps) for e in reader.refresh()] == [(2, 7)]
    assert list(reader.episodes) == [0, 1, 2] and 2 in reader and 3 not in reader
    assert [reader.segments(i) for i in range(3)] == [[(0, 10)], [(0, 3)], [(0, 7)]]
    q = reader.rows("obs/q", [2, 0, 1, 1, 0], [6, 0, 2, 2, 5])  # any order, repeats allowed
    assert list(q[:, 0]) == [2006.0, 0.0, 1002.0, 1002.0, 5.0]
    assert reader.rows("obs/images/front", [[0, 0], [1, 2]], [[1, 2], [1, 3]]).shape == (2, 2, 8, 8, 3)
    np.testing.assert_array_equal(reader.rows("obs/tip_pos", 1, [0, 1, 2])[:, 0], [1000.0, 1001.0, 1002.0])
    arrays = reader.arrays(0, ["time", "safety/intervened"])
    assert arrays["time"].shape == (10,) and arrays["safety/intervened"].dtype == bool
    with pytest.raises(IndexError):
        reader.rows("obs/q", [1], [3])
    with pytest.raises(IndexError):
        reader.rows("obs/q", [1], [-1])
    with pytest.raises(KeyError, match="episode 9"):
        reader.rows("obs/q", [9], [0])
    with pytest.raises(KeyError, match="no array"):
        reader.arrays(0, ["obs/nothing"])
    reader.close()


@pytest.mark.parametrize("cached", [None, 1, 0])
def test_session_reader_cache_and_open_files_are_bounded(tmp_path, cached):
    with open_store(tmp_path) as store:
        for n in (10, 3, 7):
            record(store, n)
    reader = SessionReader(tmp_path / "sess", max_cached_episodes=cached, max_open_files=1)
    reader.refresh()
    for _ in range(2):
        dq = reader.rows("obs/dq", [2, 0, 1, 0], [6, 0, 2, 9])
        assert list(dq[:, 0]) == [-2006.0, -0.0, -1002.0, -9.0]
        assert sum(e._file is not None for e in reader.episodes.values()) <= 1, "one HDF5 file open at most"
    first = reader.arrays(0, ["obs/dq"])["obs/dq"]
    assert (reader.arrays(0, ["obs/dq"])["obs/dq"] is first) == (cached != 0), "read again unless cached"
    reader.arrays(1, ["obs/dq"])
    assert (reader.arrays(0, ["obs/dq"])["obs/dq"] is first) == (cached is None), "evicted by the LRU bound"
    reader.close()


def test_session_reader_drops_an_episode_damaged_after_it_was_listed(tmp_path):
    with open_store(tmp_path) as store:
        infos = [record(store, 5) for _ in range(2)]
    reader = SessionReader(tmp_path / "sess")
    assert len(reader.refresh()) == 2
    infos[1].path.write_bytes(b"not an episode any more")
    with (
        pytest.warns(DamagedEpisodeWarning, match="episode_000001.h5: cannot be read any more"),
        pytest.raises(DamagedEpisodeError, match="cannot be read any more"),
    ):
        reader.rows("obs/q", [0, 1], [0, 0])
    assert list(reader.episodes) == [0] and reader.refresh() == []
    assert reader.rows("obs/q", [0], [4])[0, 0] == 4.0


def test_session_reader_required_keys_and_unlisted_episodes(tmp_path):
    with open_store(tmp_path) as store:
        for n in (4, 5):
            record(store, n)
    sd = tmp_path / "sess"
    with pytest.warns(DamagedEpisodeWarning, match="missing required arrays"):
        assert SessionReader(sd, required_keys=["privileged/cube_pos"]).refresh() == []
    manifest = sd / "manifest.jsonl"
    manifest.write_text(manifest.read_text().splitlines(keepends=True)[0])  # episode 1's line lost
    assert [e.index for e in SessionReader(sd).refresh()] == [0], "the manifest's episodes only"
    reader = SessionReader(sd, include_unlisted=True, verify_checksum=False)
    progress: list[int] = []
    with pytest.warns(DamagedEpisodeWarning, match="is not listed in"):
        assert [e.index for e in reader.refresh(progress.append)] == [0, 1]
    assert progress == [1, 2] and reader.episodes[1].info is None


def test_episode_outlives_its_iteration(tmp_path):
    with open_store(tmp_path) as store:
        record(store, 4)
    [ep] = list(iter_episodes(tmp_path / "sess"))
    assert ep.load("obs/q", slice(1, 3)).shape == (2, 7)
    assert ep["obs/images/front"][3].shape == (8, 8, 3)
    ep.close()


def test_unique_session_ids_are_validated(tmp_path):
    with pytest.raises(ValueError, match="session id"):
        SessionStore.open(tmp_path, "../x")
    SessionStore.open(tmp_path, f"s-{uuid.uuid4().hex[:6]}", free_space_floor_bytes=0).close()


def test_crash_during_conversion_keeps_the_real_outcome(tmp_path, monkeypatch):
    """finish() writes an END record (outcome, metadata) into the .partial before converting it; a
    crash during the conversion (simulated by a failing HDF5 writer) salvages it with that outcome."""

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while writing the episode file")

    with open_store(tmp_path, flush_every_steps=4) as store:
        rec = store.begin_episode({"goal": 1})
        for i in range(10):
            rec.append(step(i))
        monkeypatch.setattr(F, "write_episode_h5", crash)
        with pytest.raises(RuntimeError):
            rec.finish("safety_stop", {"timing": {"max": 0.02}})
        assert scan_partial(rec.path).end == {"outcome": "safety_stop", "metadata": {"timing": {"max": 0.02}}}
        monkeypatch.undo()
        with pytest.warns(UserWarning, match="unfinished"):
            store.close()
    with open_store(tmp_path) as store:
        [info] = store.recovery.salvaged
    assert (info.index, info.steps, info.outcome) == (0, 10, "safety_stop")
    with open_episode(info.path) as ep:
        assert ep.metadata["goal"] == 1 and ep.metadata["timing"] == {"max": 0.02} and "salvage" in ep.metadata
        check_episode_values(ep)


def test_flush_interval_bounds_the_loss_of_a_slow_loop(tmp_path):
    """Steps of a loop slower than flush_every_steps per flush_interval_s are flushed by time."""
    with open_store(tmp_path, flush_every_steps=1000, flush_interval_s=0.05) as store:
        rec = store.begin_episode()
        for i in range(3):
            rec.append(step(i))
        deadline = time.monotonic() + 5
        while rec.flushed_steps < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rec.flushed_steps == 3 and scan_partial(rec.path).steps == 3
        assert rec.finish().steps == 3
