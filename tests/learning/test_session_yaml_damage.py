"""A damaged session.yaml in training data: `pandalab train` refuses it with one line naming the
file when no other session remains, and otherwise skips that session with a warning naming it
(as a damaged episode is skipped), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from learning.dataset import DamagedSessionError, DatasetError, DatasetWarning, OfflineDataset, read_session_info
from pandalab.cli import main as pandalab

from .helpers import write_session

REPO = Path(__file__).resolve().parents[2]

DAMAGED = [
    ("robot: {backend: [pybullet\n", "not valid YAML"),
    ("- a\n- list\n", "not a mapping"),
    ("robot: sim\n", "robot is a str, not a mapping"),
    ("robot: {options: {cameras: front}}\n", "cameras is not a list of mappings"),
    ("control_rate_hz: fast\n", "could not convert string to float"),
    ("home_q: 3\n", "not iterable"),
    ("safety: {velocity_cap: -1}\n", "safety.velocity_cap"),
]


@pytest.mark.parametrize(("text", "match"), DAMAGED)
def test_a_damaged_session_yaml_is_one_line_naming_the_file(tmp_path, text, match):
    session = write_session(tmp_path, "s", [4])
    (session / "session.yaml").write_text(text)
    with pytest.raises(DamagedSessionError) as caught:
        read_session_info(session)
    message = str(caught.value)
    assert message.startswith(f"{session / 'session.yaml'}: damaged session.yaml: ") and "\n" not in message
    assert match in message


def test_a_damaged_session_is_skipped_with_a_warning_when_others_remain(tmp_path):
    good = write_session(tmp_path, "good", [5, 6])
    bad = write_session(tmp_path, "bad", [7])
    (bad / "session.yaml").write_bytes(b"\x00\xff not yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = OfflineDataset(tmp_path, "reach:0")
    skipped = [w for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(skipped) == 1 and str(bad / "session.yaml") in str(skipped[0].message)
    assert [s.path for s in dataset.sessions] == [good] and dataset.num_transitions == 4 + 5
    assert dataset.summary()["skipped_sessions"] == [
        f"{bad / 'session.yaml'}: damaged session.yaml: not UTF-8 text (byte 1)"
    ]


def test_only_damaged_sessions_is_a_clear_error(tmp_path):
    bad = write_session(tmp_path, "bad", [7])
    (bad / "session.yaml").write_text("- a\n- list\n")
    with pytest.raises(DatasetError, match=r"bad/session\.yaml: damaged session\.yaml: not a mapping"):
        OfflineDataset(bad, "reach:0")


def test_pandalab_train_refuses_a_lone_damaged_session_in_one_line(tmp_path):
    bad = write_session(tmp_path / "data", "bad", [7])
    (bad / "session.yaml").write_text("robot: {backend: [pybullet\n")
    command = [sys.executable, "-m", "pandalab", "train", "--data", str(bad), "--updates", "5"]
    command += ["--eval-episodes", "0", "--no-progress", "--threads", "1", "--out", str(tmp_path / "run")]
    result = subprocess.run(command, cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pandalab train: {bad / 'session.yaml'}: damaged session.yaml")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_pandalab_train_trains_on_the_sessions_that_remain(tmp_path, capsys):
    write_session(tmp_path / "data", "good", [6, 6])
    bad = write_session(tmp_path / "data", "bad", [7])
    (bad / "session.yaml").write_text("safety: {velocity_cap: -1}\n")
    args = ["train", "--data", str(tmp_path / "data"), "--updates", "5", "--eval-episodes", "0", "--no-progress"]
    args += ["--algo", "bc", "--threads", "1", "--out", str(tmp_path / "run")]
    with pytest.warns(DatasetWarning, match=r"bad/session\.yaml: damaged session\.yaml: safety\.velocity_cap"):
        assert pandalab(args) == 0
    assert (tmp_path / "run" / "checkpoint.pt").exists()
