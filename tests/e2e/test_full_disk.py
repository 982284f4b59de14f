"""A full disk holds the collector; it never crashes it.

The data root is a real, small tmpfs mounted for the test (root is needed to mount one; CI runs as
root). While the daemon records with a camera, another writer fills the filesystem to the last
byte, at random moments, so that ENOSPC strikes wherever the collector happens to be: a chunk of
the `.partial`, the finished episode's `.h5`, the manifest, events.jsonl, the explorer checkpoint.
Each time the arm must stop and the collector hold with the reason in `ctl status`; once space is
freed and the operator resumes, collection goes on, and in the end every finished episode is
intact and listed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import subprocess
import time

import pytest

from collector.control import send_request
from store import read_events, read_manifest, verify_session
from tests.e2e.conftest import pandalab, wait_for, wait_until_answering, write_config

TMPFS_BYTES = 6 << 20


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(path) -> int:
    """Write until the filesystem refuses (ENOSPC); returns the bytes written."""
    written = 0
    block = b"\0" * 4096
    with open(path, "ab", buffering=0) as filler:
        try:
            while True:
                written += filler.write(block)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return written


def _progress(address):
    status = send_request(address, "status", timeout_s=5)
    return status["steps"] + status["episode_step"], status


@pytest.mark.parametrize("floor_mb", [0, 1])
def test_enospc_anywhere_holds_the_arm_and_collection_resumes_once_space_is_freed(small_disk, tmp_path, floor_mb):
    config = write_config(
        tmp_path,
        data_root=str(small_disk / "data"),
        episode_steps=30,
        explorer={"name": "random"},
        store={"flush_every_steps": 5, "free_space_floor_mb": floor_mb},
        stop={"episodes": 10_000},
    )
    address = f"ipc://{tmp_path}/control"
    daemon = pandalab("collect", "--config", str(config))
    rng = random.Random(floor_mb)
    holds = []
    try:
        wait_until_answering(address, daemon)
        for cycle in range(6):
            wait_for(lambda: _progress(address)[0] > 0)
            time.sleep(rng.uniform(0.0, 1.5))  # somewhere in an episode, a finish, a training pause
            filler = small_disk / f"filler-{cycle}"
            _fill(filler)
            status = wait_for(lambda: (s := _progress(address)[1])["state"] == "held" and s, timeout_s=30)
            holds.append(status["hold_reason"])
            assert "disk" in status["hold_reason"], status
            frozen = _progress(address)[0]
            time.sleep(0.6)
            assert _progress(address)[0] == frozen, "the arm kept stepping on a full disk"
            assert daemon.poll() is None, "the collector died on a full disk"
            filler.unlink()
            send_request(address, "resume", reason="space freed")
            wait_for(lambda frozen=frozen: _progress(address)[0] > frozen + 3, timeout_s=60)
        send_request(address, "stop")
        assert daemon.wait(timeout=120) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    output = daemon.stdout.read()
    assert "Traceback" not in output, output
    session = small_disk / "data" / "e2e"
    report = verify_session(session)
    assert report.clean, report.summary()
    manifest = read_manifest(session)
    assert len(manifest) >= 6 and len({e.index for e in manifest}) == len(manifest)
    kinds = [event["kind"] for event in read_events(session)]
    assert kinds.count("operator") >= 6, "events written while the disk was full were lost"
    assert any(k in ("store_error", "store_hold") for k in kinds)
    with contextlib.suppress(OSError):
        os.sync()
