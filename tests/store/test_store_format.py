"""Property tests of the episode store's formats (store): round trips and torn partial files.

Real files in temporary directories throughout. The hypothesis tests that go through the whole
recorder replace `os.fsync` by a no-op to stay fast (fsync costs ~4 ms here and proves nothing
without a power cut); the kill -9 test (test_store_kill9.py) runs with real fsyncs.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from store import (
    SCHEMA_VERSION,
    SessionStore,
    load_partial,
    open_episode,
    read_manifest,
    scan_partial,
)
from store import _format as F

DTYPES = ["uint8", "int8", "int32", "int64", "uint16", "float32", "float64", "bool", "complex64"]


@pytest.fixture
def no_fsync(monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _field_st():
    shape = st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple)
    image = st.tuples(st.integers(1, 12), st.integers(1, 12)).map(lambda hw: (*hw, 3))
    plain = st.tuples(st.sampled_from(DTYPES), shape)
    return st.one_of(plain, st.tuples(st.just("uint8"), image))


_SEGMENTS = st.text(alphabet="abcxyz_019.-", min_size=1, max_size=6).filter(lambda s: s[0] not in ".-")


@st.composite
def episodes(draw, max_steps=300):
    """(fields {key: (dtype, shape)}, steps, chunk size, seed). Keys may be nested ('obs/images/a')."""
    n = draw(st.integers(1, 5))
    keys: set[str] = set()
    while len(keys) < n:
        prefix = draw(st.sampled_from(["", "obs/", "obs/images/", "privileged/", "safety/"]))
        keys.add(prefix + draw(_SEGMENTS))
    # no key may be a group of another
    keys = {k for k in keys if not any(o.startswith(k + "/") for o in keys)}
    fields = {k: draw(_field_st()) for k in sorted(keys)}
    steps = draw(st.integers(1, max_steps))
    chunk = draw(st.integers(max(1, steps // 12), 64))
    seed = draw(st.integers(0, 2**31 - 1))
    return fields, steps, chunk, seed


def make_steps(fields, steps, seed):
    """Arrays (steps, *shape) per key with NaN/inf sprinkled into floats; step i is row i."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, (dtype, shape) in fields.items():
        dt = np.dtype(dtype)
        full = (steps, *shape)
        if dt.kind == "b":
            a = rng.random(full) < 0.5
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            a = rng.integers(info.min, info.max, size=full, dtype=dt, endpoint=True)
        elif dt.kind == "c":
            a = (rng.normal(size=full) + 1j * rng.normal(size=full)).astype(dt)
        else:
            a = (rng.normal(size=full) * 10.0 ** rng.integers(-5, 5)).astype(dt)
            flat = a.reshape(-1)
            if flat.size:
                flat[rng.integers(0, flat.size, size=2)] = [np.nan, np.inf]
        out[key] = a
    return out


def step_dict(arrays, i):
    """Step i; 0-d fields are passed as numpy scalars (what a caller does with time/flags)."""
    return {k: a[i] for k, a in arrays.items()}


def assert_bit_equal(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    assert got.dtype == want.dtype, what
    assert got.shape == want.shape, what
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), what


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ep=episodes())
def test_round_trip_finish_open_episode(no_fsync, ep):
    fields, steps, chunk, seed = ep
    arrays = make_steps(fields, steps, seed)
    with tempfile.TemporaryDirectory() as tmp:
        with SessionStore.open(tmp, "s", flush_every_steps=chunk, free_space_floor_bytes=0) as store:
            rec = store.begin_episode({"goal": [0.1, 0.2], "note": "x"}, seeds={"explorer": seed})
            for i in range(steps):
                rec.append(step_dict(arrays, i))
            info = rec.finish("safety_stop", {"timing": {"p99": 0.01}})
        assert info is not None and info.steps == steps and info.outcome == "safety_stop"
        [entry] = read_manifest(Path(tmp) / "s")
        assert entry == info and entry.schema_version == SCHEMA_VERSION
        with open_episode(info.path, expected_sha256=info.sha256, deep=True) as got:
            assert got.steps == steps and got.index == 0 and got.outcome == "safety_stop"
            assert got.seeds == {"explorer": seed}
            assert got.metadata == {"goal": [0.1, 0.2], "note": "x", "timing": {"p99": 0.01}}
            assert set(got.keys) == set(fields)
            for key, want in arrays.items():
                assert_bit_equal(got.load(key), want, key)
        assert not list((Path(tmp) / "s" / "episodes").glob("*.partial"))


def _partial_bytes(fields, steps, chunk, seed) -> tuple[bytes, dict[str, np.ndarray]]:
    """A .partial built with the format functions directly (no threads): header + chunk records."""
    arrays = make_steps(fields, steps, seed)
    specs = F.fields_from_first_step(step_dict(arrays, 0))
    header = {"schema_version": SCHEMA_VERSION, "session_id": "s", "index": 3, "metadata": {}, "seeds": None}
    pieces = list(F.header_record(header))
    for start in range(0, steps, chunk):
        n = min(chunk, steps - start)
        bufs = {k: np.ascontiguousarray(a[start : start + n]) for k, a in arrays.items()}
        pieces += F.chunk_record(start, n, specs, bufs)
    return b"".join(bytes(p) for p in pieces), arrays


def _expected_steps(data: bytes, cut: int) -> int:
    """Steps of the chunk records that end at or before byte `cut` (from a scan of the intact file)."""
    with tempfile.NamedTemporaryFile(suffix=".partial") as f:
        f.write(data)
        f.flush()
        scan = scan_partial(f.name)
    return sum(n for (_, n, _), end in zip(scan.chunks, scan.record_ends, strict=True) if end <= cut)


def _check_prefix(path, arrays, expected):
    scan, got = load_partial(path)
    assert scan.steps == expected
    if expected:
        for key, want in arrays.items():
            assert_bit_equal(got[key], want[:expected], key)
    return scan


def test_every_truncation_offset_of_a_small_partial(tmp_path):
    """Exhaustive: cut a 4-chunk partial at every byte; salvage keeps exactly the complete chunks."""
    fields = {"obs/q": ("float64", (7,)), "img": ("uint8", (2, 2, 3)), "time": ("float64", ())}
    data, arrays = _partial_bytes(fields, 10, 3, seed=1)
    scan = scan_partial(_write(tmp_path / "full.partial", data))
    assert scan.steps == 10 and scan.problem is None and scan.valid_bytes == len(data)
    ends = scan.record_ends
    path = tmp_path / "cut.partial"
    for cut in range(len(data) + 1):
        expected = sum(n for (_, n, _), end in zip(scan.chunks, ends, strict=True) if end <= cut)
        if cut % 7 == 0:  # through a real file every 7th byte, in memory (same scanner) for the rest
            s = _check_prefix(_write(path, data[:cut]), arrays, expected)
        else:
            buf = memoryview(data[:cut])
            s = F._scan_buffer(buf, path)
            assert s.steps == expected
            for i, (start, n, _) in enumerate(s.chunks):
                for key, got in F.chunk_arrays(s, buf, i).items():
                    assert_bit_equal(got, arrays[key][start : start + n], key)
        assert s.valid_bytes <= cut
        assert (s.problem is None) == (cut in ends or cut == len(data) or cut == 0 or cut == _header_end(data))


def _header_end(data: bytes) -> int:
    (length,) = np.frombuffer(data[8:16], dtype="<u8")
    return F._REC.size + int(length)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@settings(max_examples=60, deadline=None)
@given(ep=episodes(max_steps=300), where=st.floats(0, 1))
def test_truncated_partial_salvages_complete_chunks(ep, where):
    fields, steps, chunk, seed = ep
    data, arrays = _partial_bytes(fields, steps, chunk, seed)
    cut = int(where * len(data))
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp) / "x.partial", data[:cut])
        _check_prefix(path, arrays, _expected_steps(data, cut))


@settings(max_examples=60, deadline=None)
@given(ep=episodes(max_steps=120), garbage=st.binary(min_size=1, max_size=300), where=st.floats(0, 1))
def test_garbage_appended_or_overwritten(ep, garbage, where):
    fields, steps, chunk, seed = ep
    data, arrays = _partial_bytes(fields, steps, chunk, seed)
    with tempfile.TemporaryDirectory() as tmp:
        # appended: every step survives
        path = _write(Path(tmp) / "a.partial", data + garbage)
        scan = _check_prefix(path, arrays, steps)
        assert scan.valid_bytes == len(data)
        # overwritten at a random place: the chunks that end before the first changed byte survive
        pos = int(where * (len(data) - 1))
        damaged = bytearray(data)
        damaged[pos : pos + len(garbage)] = garbage
        damaged = bytes(damaged[: max(len(data), pos + len(garbage))])
        diff = next((i for i, (a, b) in enumerate(zip(data, damaged, strict=False)) if a != b), len(data))
        assume(diff < len(data))
        path = _write(Path(tmp) / "o.partial", damaged)
        scan = _check_prefix(path, arrays, _expected_steps(data, diff))
        if diff < _header_end(data):
            assert scan.header is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ep=episodes(max_steps=200), where=st.floats(0, 1))
def test_store_salvages_a_truncated_partial_on_open(no_fsync, ep, where):
    """A recorder's own .partial (written by its writer thread), cut anywhere, then the session is
    re-opened: the salvaged episode holds exactly the steps of the chunks before the cut."""
    fields, steps, chunk, seed = ep
    arrays = make_steps(fields, steps, seed)
    with tempfile.TemporaryDirectory() as tmp:
        with SessionStore.open(tmp, "s", flush_every_steps=chunk, free_space_floor_bytes=0) as store:
            rec = store.begin_episode({"goal": 1})
            for i in range(steps):
                rec.append(step_dict(arrays, i))
            rec.abandon()
        partial = rec.path
        data = partial.read_bytes()
        cut = int(where * len(data))
        expected = _expected_steps(data, cut)
        _write(partial, data[:cut])
        with SessionStore.open(tmp, "s", free_space_floor_bytes=0) as store:
            rep = store.recovery
            assert store.next_index == 1
        assert not partial.exists()
        if expected == 0:
            assert rep.salvaged == [] and read_manifest(Path(tmp) / "s") == []
            return
        [info] = rep.salvaged
        assert info.steps == expected and info.outcome == "crash_salvaged"
        with open_episode(info.path, expected_sha256=info.sha256) as got:
            assert got.metadata["goal"] == 1 and got.metadata["salvage"]["steps"] == expected
            for key, want in arrays.items():
                assert_bit_equal(got.load(key), want[:expected], key)


def test_partial_record_layout_is_documented_size():
    """The 20-byte record header of the documentation: magic, kind, version, reserved, length, crc."""
    assert F._REC.size == 20
    rec = b"".join(bytes(p) for p in F.header_record({"a": 1}))
    assert rec[:4] == b"PLEP" and rec[4] == F.REC_HEADER and rec[5] == SCHEMA_VERSION
