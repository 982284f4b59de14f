"""A real kill -9: a child process records episodes (tests/store/_store_child.py) and is SIGKILLed
at random moments, six times; after each kill the session is re-opened (which salvages) and checked.

Checked after every kill: the session verifies clean (every manifest episode opens and matches its
checksum, no .partial left); every episode the child saw finished is listed, complete, with its
steps; the interrupted episode is listed as salvaged (or complete, if the kill came after its
manifest line) with at least the steps the child had seen fsynced, or is absent only if nothing of
it had been flushed; every step's values are the ones the child wrote; no index is used twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from store import SessionStore, iter_episodes, read_manifest, verify_session

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("_store_child.py")


def _progress(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):  # the child was killed mid-line
            out.append(json.loads(line))
    return out


def _start_child(root: Path, progress: Path, seed: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(root), "sess", str(progress), str(seed)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"child did not start: {line!r} {proc.stderr.read()}")
    return proc


def _check_session(root: Path, progress: Path) -> dict:
    sd = root / "sess"
    # what the next start would do: salvage and re-list
    with SessionStore.open(root, "sess", free_space_floor_bytes=0) as store:
        next_index = store.next_index
    events = _progress(progress)
    begins = [e["index"] for e in events if e["ev"] == "begin"]
    assert len(begins) == len(set(begins)), f"an index was used twice: {begins}"
    assert next_index > max(begins)
    finished = {e["index"]: e["steps"] for e in events if e["ev"] == "finished"}
    flushed = defaultdict(int)
    for e in events:
        if e["ev"] == "flushed":
            flushed[e["index"]] = max(flushed[e["index"]], e["steps"])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unreadable or duplicate manifest line, no damaged file
        manifest = {e.index: e for e in read_manifest(sd)}
        report = verify_session(sd)
        assert report.clean, report.summary()
        eps = {ep.index: ep for ep in iter_episodes(sd)}
    assert set(eps) == set(manifest)
    for index, steps in finished.items():
        assert manifest[index].outcome == "complete" and manifest[index].steps == steps
    for index in set(begins) - set(finished):
        if index in manifest:
            assert manifest[index].outcome in ("crash_salvaged", "complete")
            assert manifest[index].steps >= flushed[index], (index, manifest[index].steps, flushed[index])
        else:
            assert flushed[index] == 0, f"episode {index} had {flushed[index]} steps flushed and was lost"
    for ep in eps.values():
        q = ep.load("obs/q")
        np.testing.assert_array_equal(q[:, 0], ep.index * 1000.0 + np.arange(ep.steps))
        frames = ep.load("obs/images/front")
        np.testing.assert_array_equal(frames[:, 0, 0, 0], np.arange(ep.steps) % 256)
    return {
        "salvaged": sum(e.outcome == "crash_salvaged" for e in manifest.values()),
        "episodes": len(manifest),
    }


def test_kill9_at_random_moments(tmp_path):
    rng = random.Random(20240501)
    root = tmp_path / "data"
    progress = tmp_path / "progress.jsonl"
    stats = {}
    for it in range(6):
        proc = _start_child(root, progress, seed=it)
        time.sleep(rng.uniform(0.05, 1.0))
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
        stats = _check_session(root, progress)
    assert stats["episodes"] >= 6
