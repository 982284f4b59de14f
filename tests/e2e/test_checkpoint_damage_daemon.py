"""The collector on a session whose explorer checkpoint is damaged or an old pickle: it refuses to
start (exit 3, one line naming the file, nothing executed) until started with --fresh-explorer,
which moves the file to quarantine/ and continues the session with a new explorer."""

from __future__ import annotations

import pickle

from collector.checkpoint import load_explorer_checkpoint
from store import read_events, read_manifest
from tests.e2e.conftest import pandalab, write_config


class _Planted:
    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def test_a_damaged_checkpoint_refuses_the_start_until_fresh_explorer(tmp_path):
    config = write_config(tmp_path, stop={"episodes": 1})
    first = pandalab("collect", "--config", str(config))
    assert first.wait(timeout=120) == 0, first.stdout.read()
    session = tmp_path / "data" / "e2e"
    checkpoint = session / "explorer" / "checkpoint.pt"
    state, after = load_explorer_checkpoint(checkpoint)
    assert after == 0 and state["episodes_started"] == 1

    raw = bytearray(checkpoint.read_bytes())
    raw[len(raw) // 2] ^= 0x20
    checkpoint.write_bytes(bytes(raw))
    write_config(tmp_path, stop={"episodes": 2})
    refused = pandalab("collect", "--config", str(config))
    assert refused.wait(timeout=120) == 3
    output = refused.stdout.read()
    assert "Traceback" not in output and f"explorer checkpoint {checkpoint} is unusable (checksum mismatch" in output
    assert checkpoint.read_bytes() == bytes(raw), "a refused start leaves the file where it is"
    assert len(read_manifest(session)) == 1

    marker = tmp_path / "payload_ran"
    checkpoint.write_bytes(pickle.dumps({"explorer": {"rng": _Planted(marker)}, "after_episode": 0}))
    refused = pandalab("collect", "--config", str(config))
    assert refused.wait(timeout=120) == 3 and "a Python pickle" in refused.stdout.read()
    assert not marker.exists()

    fresh = pandalab("collect", "--config", str(config), "--fresh-explorer")
    assert fresh.wait(timeout=120) == 0, fresh.stdout.read()
    assert not marker.exists()
    assert (session / "quarantine" / "checkpoint.pt").read_bytes()[:1] == b"\x80"
    assert [e.index for e in read_manifest(session)] == [0, 1]
    kinds = [e["kind"] for e in read_events(session)]
    assert kinds.count("explorer_checkpoint_refused") == 2 and "explorer_checkpoint_quarantined" in kinds
    assert load_explorer_checkpoint(checkpoint)[1] == 1
