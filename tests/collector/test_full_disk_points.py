"""ENOSPC at each point where the collector writes: the arm stops, the collector holds with the
reason in `ctl status`, and after `resume` (space freed) it goes on, losing nothing.

The collector runs in this process on the real PyBullet simulator, with its real control socket
and real files; only the disk's answer is injected: every write of the store goes through
`store._format.write_all` (the store's documented fault-injection point), which here
refuses with ENOSPC while the test says the disk is full, for the files of one kind.  The real
full filesystem is exercised in tests/e2e/test_full_disk.py (a small tmpfs).
"""

from __future__ import annotations

import errno
import os
import threading

import pytest

import store._format as store_format
from collector.config import parse_session_config
from collector.control import send_request
from collector.session import Collector
from store import read_events, read_manifest, verify_session
from tests.e2e.conftest import wait_for

POINTS = {
    "chunk": lambda path: path.endswith(".partial"),
    "episode file": lambda path: ".h5" in path,
    "manifest": lambda path: path.endswith("manifest.jsonl"),
    "events": lambda path: path.endswith("events.jsonl"),
    "checkpoint": lambda path: "checkpoint" in path,
    "episode index": lambda path: ".last_index" in path,
}


class FullDisk:
    """Refuses writes to the files `matches` picks while `full` is set, and counts the refusals."""

    def __init__(self, matches):
        self.matches = matches
        self.full = threading.Event()
        self.refused = 0
        self._write_all = store_format.write_all

    def write_all(self, fd, pieces):
        if self.full.is_set():
            path = os.readlink(f"/proc/self/fd/{fd}")
            if self.matches(path):
                self.refused += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._write_all(fd, pieces)


@pytest.mark.parametrize("point", sorted(POINTS))
def test_enospc_at_each_write_point_holds_and_resumes(tmp_path, monkeypatch, point):
    disk = FullDisk(POINTS[point])
    monkeypatch.setattr(store_format, "write_all", disk.write_all)
    address = f"ipc://{tmp_path}/control"
    config = parse_session_config(
        {
            "session_id": "full",
            "data_root": str(tmp_path / "data"),
            "robot": {"backend": "pybullet", "options": {"cameras": [{"name": "front", "width": 16, "height": 16}]}},
            "episode_steps": 20,
            "explorer": {"name": "random"},
            "store": {"flush_every_steps": 5, "free_space_floor_mb": 0},
            "stop": {"episodes": 6},
            "control_address": address,
            "telemetry_address": f"ipc://{tmp_path}/telemetry",
        }
    )
    collector = Collector(config, install_signal_handlers=False)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", collector.run()), daemon=True)
    thread.start()
    try:
        wait_for(lambda: collector.episodes >= 1, timeout_s=60)
        disk.full.set()
        status = wait_for(lambda: (s := send_request(address, "status"))["state"] == "held" and s, timeout_s=30)
        assert status["hold_reason"].startswith("disk:") or "events.jsonl" in status["hold_reason"], status
        assert disk.refused > 0
        held_at = (status["episodes"], status["episode_step"])
        wait_for(lambda: disk.refused > 0)
        after = send_request(address, "status")
        assert (after["episodes"], after["episode_step"]) == held_at, "the arm kept stepping"
        disk.full.clear()
        send_request(address, "resume", reason="space freed")
        thread.join(timeout=120)
        assert not thread.is_alive(), "the collector did not finish after resume"
    finally:
        if thread.is_alive():
            collector.lifecycle.request_stop()
            thread.join(timeout=60)
    assert result["code"] == 0
    session = tmp_path / "data" / "full"
    report = verify_session(session)
    assert report.clean, report.summary()
    manifest = read_manifest(session)
    indices = [e.index for e in manifest]
    assert indices == sorted(set(indices)) and len(manifest) == 6, indices
    assert all(e.steps == 20 for e in manifest), "a step was lost to the full disk"
    kinds = [event["kind"] for event in read_events(session)]
    assert "store_error" in kinds and kinds.count("operator") == 1, "events held in memory were lost"


def test_a_manifest_line_torn_by_a_full_disk_is_cut_so_the_retry_appends_a_whole_line(tmp_path, monkeypatch):
    """ENOSPC part-way through a manifest line (the kernel wrote some bytes, then refused)."""
    manifest = tmp_path / "manifest.jsonl"
    store_format.append_line_durably(manifest, '{"index": 0}')
    real_write = os.write
    calls = {"n": 0}

    def short_then_full(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:5]))  # a short write ...
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # ... then the disk is full

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(OSError):
        store_format.append_line_durably(manifest, '{"index": 1}')
    monkeypatch.setattr(os, "write", real_write)
    store_format.append_line_durably(manifest, '{"index": 1}')
    assert manifest.read_text().splitlines() == ['{"index": 0}', '{"index": 1}']
