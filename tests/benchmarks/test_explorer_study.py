"""The explorer study (benchmarks/explorer_study.py) is resumable: killed at any point, the same
command continues without redoing finished jobs, and a different study in the same folder is
refused.  A tiny budget (one explorer, one 200-step episode, 30 updates): the pipeline, not a result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from benchmarks.explorer_study import steps_beside_cube
from sim.scene import CUBE_EDGE
from store import SessionStore, verify_session
from tests.e2e.conftest import REPO, wait_for

STUDY = [sys.executable, "benchmarks/explorer_study.py", "--budget", "small", "--explorers", "random"]
TINY = ["--transitions", "200", "--updates", "30", "--jobs", "1"]


def test_a_killed_study_continues_where_it_was_and_refuses_other_settings(tmp_path):
    out = tmp_path / "study"
    command = [*STUDY, *TINY, "--out", str(out)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    first = subprocess.Popen(command, cwd=REPO, start_new_session=True, **quiet)
    collected = out / "jobs" / "collect_random_s0.json"
    training_log = out / "logs" / "train_random_s0_td3bc_reach-0.log"
    try:
        wait_for(lambda: training_log.exists() or first.poll() is not None, timeout_s=240, interval_s=0.1)
        time.sleep(2.0)  # the training is under way
        os.killpg(first.pid, signal.SIGKILL)  # the study and its job, at once
    finally:
        first.wait()
    assert collected.exists(), "the collection did not finish before the kill"
    collected_at = collected.stat().st_mtime_ns
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "1 of 1 collect jobs done before" in done.stdout
    assert collected.stat().st_mtime_ns == collected_at, "a finished collection was redone"
    assert verify_session(out / "data" / "random_s0").clean
    report = json.loads((out / "report.json").read_text())
    row = report["rows"]["random"]
    assert row["steps"]["mean"] == 200 and row["td3bc reach:0"]["n"] == 1 and row["bcq push"]["n"] == 1
    assert row["data reach:0"]["n"] == 1 and row["steps_beside_cube"]["n"] == 1
    assert "| random |" in (out / "report.md").read_text()
    for name in ("train_random_s0_td3bc_reach-0", "train_random_s0_bcq_push"):
        assert json.loads((out / "jobs" / f"{name}.json").read_text())["updates"] == 30
    # A rerun does nothing more; other settings in the same folder are refused in one line.
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 to run" in again.stdout
    other = subprocess.run(
        [*STUDY, "--transitions", "400", "--out", str(out)], cwd=REPO, capture_output=True, text=True
    )
    assert other.returncode == 2 and "holds a study with other settings" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_steps_beside_the_cube_count_the_tip_below_its_top_within_a_centimetre_of_its_sides(tmp_path):
    cube = np.array([0.56, 0.02, -0.087])
    half = CUBE_EDGE / 2
    tips = {  # offset of the tool tip from the cube's centre, m: counted?
        (half + 0.005, 0.0, 0.0): True,  # against a side, at mid-height
        (0.0, -(half + 0.009), half - 0.001): True,  # the other axis, just below the top face
        (-(half + 0.009), half + 0.009, -half): True,  # a corner, at the table
        (half + 0.011, 0.0, 0.0): False,  # more than a centimetre away
        (0.0, half + 0.005, half + 0.001): False,  # above the top face
        (0.0, 0.0, 0.1): False,  # high above
    }
    with SessionStore.open(tmp_path, "s", session_yaml_text="robot: {}\n") as store:
        recorder = store.begin_episode({"explorer": "test"})
        for t, offset in enumerate(tips):
            recorder.append(
                {
                    "time": np.float64(t / 20),
                    "obs/q": np.zeros(7),
                    "obs/tip_pos": cube + np.array(offset),
                    "privileged/cube_pos": cube,
                    "action": np.zeros(3),
                }
            )
        recorder.finish("complete")
    assert steps_beside_cube(tmp_path / "s") == sum(tips.values())
