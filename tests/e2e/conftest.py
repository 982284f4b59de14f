"""Helpers for end-to-end tests that run `pandalab` as a real subprocess against a simulator."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import pytest
import yaml

from collector.control import send_request

REPO = pathlib.Path(__file__).resolve().parents[2]


def write_config(tmp_path: pathlib.Path, **overrides) -> pathlib.Path:
    """A small, fast PyBullet session in ``tmp_path`` with ipc:// control sockets."""
    config = {
        "session_id": "e2e",
        "data_root": str(tmp_path / "data"),
        "robot": {"backend": "pybullet", "options": {"cameras": [{"name": "front", "width": 24, "height": 24}]}},
        "episode_steps": 40,
        "explorer": {"name": "gep", "parameters": {"bootstrap_policies": 2}},
        "stop": {"episodes": 1000},
        "store": {"flush_every_steps": 10},
        "control_address": f"ipc://{tmp_path}/control",
        "telemetry_address": f"ipc://{tmp_path}/telemetry",
    }
    for key, value in overrides.items():
        config[key] = value
    path = tmp_path / "session.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def collect_complete(session_path: str | pathlib.Path, folder: pathlib.Path, episodes: int, steps: int) -> None:
    """Run `pandalab collect` on ``session_path`` to its end (timeout 300 s): exit 0, a clean
    ``verify_session`` of ``folder``, and ``episodes`` complete episodes of ``steps`` steps."""
    from store import read_manifest, verify_session

    done = subprocess.run(
        [sys.executable, "-m", "pandalab", "collect", "--config", str(session_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert verify_session(folder).clean
    assert [(e.outcome, e.steps) for e in read_manifest(folder)] == [("complete", steps)] * episodes


def pandalab(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "pandalab", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def wait_until_answering(address: str, process: subprocess.Popen, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"collector exited early with {process.returncode}:\n{process.stdout.read()}")
        try:
            return send_request(address, "status", timeout_s=0.5)
        except TimeoutError:
            continue
    pytest.fail("collector never answered")


def wait_for(predicate, timeout_s: float = 60.0, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail("condition not reached in time")
