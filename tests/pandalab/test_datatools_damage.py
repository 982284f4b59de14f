"""`pandalab data info|verify` on damaged sessions: a session.yaml that is not YAML or not a
mapping, missing / truncated / unlisted / partial episode files, a damaged or old (pickle)
explorer checkpoint.  Damage is reported naming the file, never as a traceback; `info` keeps full
lines when piped and prints one JSON document with ``--json``."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collector.checkpoint import save_explorer_checkpoint
from collector.explorers import ExplorerSpec, make_explorer
from pandalab.data import info, verify
from store import read_session_yaml
from tests.pandalab.test_datatools import _write_session

REPO = Path(__file__).resolve().parents[2]
LONG_NAME = "2024-05-01_overnight-reach-joint-velocity-random-linear-pybullet-front-camera-84px-seed-12345"

BAD_YAML = {
    "not YAML": (b"robot: {backend: [pybullet\n", "not valid YAML"),
    "a list": (b"- robot\n- pybullet\n", "not a mapping"),
    "a scalar": (b"just some words\n", "not a mapping"),
    "binary": (bytes(range(256)), "not UTF-8"),
    "empty": (b"", "not a mapping"),
}


def pandalab(*args: str) -> subprocess.CompletedProcess:
    """The real entry point, its stdout a pipe (not a terminal)."""
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "pandalab", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def _checkpoint(session: Path) -> Path:
    spec = ExplorerSpec(np.full(14, -1.0), np.full(14, 1.0), np.full(7, 0.5), 7, 30)
    explorer = make_explorer("gep", spec, {"bootstrap_policies": 2}, seed=0)
    explorer.begin_episode()
    return save_explorer_checkpoint(session / "explorer" / "checkpoint.pt", explorer.state_dict(), 1)


def _damaged_root(tmp_path: Path) -> dict[str, Path]:
    """One healthy session and one for each kind of damage."""
    root = tmp_path / "data"
    sessions = {name: _write_session(root, name, episodes=2, steps=5) for name in ("healthy", "files", "yaml", "ckpt")}
    _checkpoint(sessions["healthy"])
    episodes = sessions["files"] / "episodes"
    shutil.copy(episodes / "episode_000000.h5", episodes / "episode_000007.h5")  # unlisted
    (episodes / "episode_000000.h5").unlink()  # listed, missing
    with open(episodes / "episode_000001.h5", "r+b") as f:  # listed, truncated
        f.truncate(1000)
    (episodes / "episode_000008.partial").write_bytes(b"")  # an interrupted episode
    (sessions["yaml"] / "session.yaml").write_bytes(BAD_YAML["not YAML"][0])
    (sessions["ckpt"] / "explorer").mkdir()
    (sessions["ckpt"] / "explorer" / "checkpoint.pt").write_bytes(pickle.dumps({"explorer": {}, "after_episode": 0}))
    return sessions


@pytest.mark.parametrize("kind", list(BAD_YAML))
def test_read_session_yaml_names_the_problem(tmp_path, kind):
    (tmp_path / "session.yaml").write_bytes(BAD_YAML[kind][0])
    config, problem = read_session_yaml(tmp_path)
    assert config is None and BAD_YAML[kind][1] in problem and "\n" not in problem
    assert read_session_yaml(tmp_path / "nowhere") == (None, "missing")


def test_info_counts_damage_instead_of_calling_a_session_healthy(tmp_path, capsys):
    sessions = _damaged_root(tmp_path)
    rows = {Path(r["session"]).name: r for r in info([tmp_path / "data"])}
    out = capsys.readouterr().out
    assert rows["healthy"]["problems"] == [] and rows["healthy"]["checkpoint"] is True
    assert rows["files"]["damage"] == {
        "episode_files_damaged": 1,
        "episode_files_missing": 1,
        "episode_files_unlisted": 1,
        "episode_files_partial": 1,
        "manifest_lines_skipped": 0,
        "session_yaml": None,
        "checkpoint": None,
    }
    problems = "\n".join(rows["files"]["problems"])
    for name in ("episode_000000.h5", "episode_000001.h5", "episode_000007.h5", "episode_000008.partial"):
        assert name in problems
    assert "not valid YAML" in rows["yaml"]["damage"]["session_yaml"] and rows["yaml"]["backend"] is None
    assert "pickle" in rows["ckpt"]["damage"]["checkpoint"]
    assert "1 damaged, 1 missing, 1 unlisted, 1 partial" in out
    assert "session.yaml damaged" in out and "checkpoint unusable" in out
    assert f"{sessions['yaml']}: session.yaml: not valid YAML" in out


def test_info_and_verify_through_the_cli_report_damage_without_a_traceback(tmp_path):
    sessions = _damaged_root(tmp_path)
    for kind, (content, _) in BAD_YAML.items():
        (sessions["yaml"] / "session.yaml").write_bytes(content)
        result = pandalab("data", "info", str(tmp_path / "data"))
        assert result.returncode == 0 and result.stderr == "", (kind, result.stderr)
        assert "session.yaml damaged" in result.stdout, kind
    result = pandalab("data", "verify", str(tmp_path / "data"))
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    assert "DAMAGED  session.yaml" in result.stdout and "DAMAGED  explorer/checkpoint.pt" in result.stdout
    assert "MISSING  episodes/episode_000000.h5" in result.stdout
    assert pandalab("data", "verify", str(sessions["healthy"])).returncode == 0


def test_info_piped_keeps_whole_lines(tmp_path):
    _write_session(tmp_path / "data", LONG_NAME, episodes=1, steps=3)
    result = pandalab("data", "info", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    assert LONG_NAME in result.stdout and "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) > len(LONG_NAME) + 80


def test_info_json_is_one_document(tmp_path, capsys):
    sessions = _damaged_root(tmp_path)
    _write_session(tmp_path / "data", LONG_NAME, episodes=1, steps=3)
    capsys.readouterr()
    rows = info([tmp_path / "data"], as_json=True)
    document = json.loads(capsys.readouterr().out)
    assert document["sessions"] == json.loads(json.dumps(rows))
    assert document["total"]["sessions"] == 5 and document["total"]["sessions_with_problems"] == 3
    by_name = {Path(s["session"]).name: s for s in document["sessions"]}
    assert by_name[LONG_NAME]["episodes"] == 1 and by_name[LONG_NAME]["problems"] == []
    assert by_name["files"]["damage"]["episode_files_missing"] == 1
    assert by_name["yaml"]["session"] == str(sessions["yaml"])


def test_info_json_through_the_cli(tmp_path):
    _damaged_root(tmp_path)
    result = pandalab("data", "info", "--json", str(tmp_path / "data"))
    assert result.returncode == 0 and result.stderr == ""
    document = json.loads(result.stdout)
    assert len(document["sessions"]) == 4 and document["total"]["sessions_with_problems"] == 3


def test_verify_checks_session_yaml_and_the_explorer_checkpoint(tmp_path, capsys):
    session = _write_session(tmp_path / "data", "s", episodes=1, steps=5)
    checkpoint = _checkpoint(session)
    assert verify([session])
    good = checkpoint.read_bytes()
    flipped = bytearray(good)
    flipped[-3] ^= 0x04
    checkpoint.write_bytes(bytes(flipped))
    capsys.readouterr()
    assert not verify([session])
    assert "DAMAGED  explorer/checkpoint.pt: checksum mismatch" in capsys.readouterr().out
    checkpoint.write_bytes(good)
    (session / "session.yaml").write_text("- not\n- a mapping\n")
    assert not verify([session])
    assert "DAMAGED  session.yaml: not a mapping" in capsys.readouterr().out
    (session / "session.yaml").unlink()
    assert not verify([session])
    assert "MISSING  session.yaml" in capsys.readouterr().out


def test_verify_reports_a_config_that_no_longer_validates_without_failing(tmp_path, capsys):
    session = _write_session(tmp_path / "data", "s", episodes=1, steps=5)
    (session / "session.yaml").write_text("robot: {backend: pybullet}\nno_such_setting: 3\n")
    assert verify([session])
    out = capsys.readouterr().out
    assert "CONFIG   session.yaml does not validate" in out and "no_such_setting" in out
