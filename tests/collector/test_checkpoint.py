"""Explorer checkpoints (`collector.checkpoint`): exact round trips of every registered explorer's
real state dict (resumed explorers act and train as the originals), and damaged, foreign or
planted files refused with one line naming the file, without running anything they contain."""

from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import pickle
import re
import struct
import zipfile

import numpy as np
import pytest
import torch

from collector.checkpoint import (
    HEADER_BYTES,
    MAGIC,
    DamagedCheckpointError,
    UnsupportedCheckpointContent,
    check_explorer_checkpoint,
    encode_explorer_checkpoint,
    load_explorer_checkpoint,
    quarantine_checkpoint,
    save_explorer_checkpoint,
)
from collector.explorers import EXPLORERS, make_explorer
from tests.collector.test_learned_explorers import IMAGE, SMALL, _Session, _spec

PARAMETERS = {
    "gep": {"bootstrap_policies": 2},
    "rnd": SMALL,
    "gcrnd": SMALL,
    "sse": {"hidden": [16, 16], "batch_size": 8, "horizon": 2, "updates_per_episode": 3},
    "diayn": {"num_skills": 4, "hidden": [16, 16], "discriminator_hidden": [16, 16], "batch_size": 8},
}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def session(tmp_path):
    s = _Session(tmp_path / "data", [12] * 3)
    yield s
    s.close()


def _observation(kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "image":
        return rng.integers(0, 256, size=IMAGE, dtype=np.uint8)
    return rng.uniform(-1, 1, size=14)


def _trained(name: str, kind: str, session: _Session, seed: int = 3):
    """An explorer that has acted, learned from the session's episodes and started a new episode
    (learned explorers: past their heat-up, so acting runs the policy network)."""
    explorer = make_explorer(name, _spec(kind), PARAMETERS.get(name, {}), seed=seed)
    rng = np.random.default_rng(1)
    for _ in range(2):
        explorer.begin_episode()
        observations = [_observation(kind, rng) for _ in range(4)]
        for observation in observations:
            explorer.act(observation)
        explorer.on_episode_end(np.array(observations))
        explorer.train(session)
    explorer.begin_episode()
    explorer.act(_observation(kind, rng))
    return explorer


def assert_identical(a, b, where: str = "state") -> None:
    """Same types all the way down (containers, keys, scalars), same key order, same dtypes,
    shapes and bytes; torch module metadata included."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} came back as {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys"
        assert [type(k) for k in a] == [type(k) for k in b], f"{where}: key types"
        assert hasattr(a, "_metadata") == hasattr(b, "_metadata"), f"{where}: _metadata"
        if hasattr(a, "_metadata"):
            assert_identical(a._metadata, b._metadata, f"{where}._metadata")
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), f"{where}: length"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{where}: {a.dtype} {a.shape} vs {b.dtype} {b.shape}"
        assert a.tobytes() == b.tobytes(), f"{where}: values"
        if a.flags.f_contiguous and not a.flags.c_contiguous:
            assert b.flags.f_contiguous, f"{where}: Fortran order lost"
        assert b.flags.writeable, f"{where}: read-only array"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{where}: {a!r} vs {b!r}"
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device), f"{where}: {a.dtype} vs {b.dtype}"
        assert a.requires_grad == b.requires_grad, f"{where}: requires_grad"
        x, y = a.detach().reshape(-1), b.detach().reshape(-1)
        assert torch.equal(x.view(torch.uint8), y.view(torch.uint8)), f"{where}: values"
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{where}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


# ------------------------------------------------------------------------------- round trips


CASES = [(name, "vector") for name in EXPLORERS] + [("gcrnd", "image"), ("sse", "image"), ("diayn", "image")]


def test_every_registered_explorer_is_covered():
    assert {name for name, _ in CASES} == set(EXPLORERS)


@pytest.mark.parametrize(("name", "kind"), CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_round_trip_is_exact_and_the_resumed_explorer_continues_identically(session, tmp_path, name, kind):
    explorer = _trained(name, kind, session)
    state = explorer.state_dict()
    path = tmp_path / "checkpoint.pt"
    assert save_explorer_checkpoint(path, state, after_episode=2) == path
    loaded, after = load_explorer_checkpoint(path)
    assert after == 2
    assert_identical(state, loaded)
    assert check_explorer_checkpoint(path)["after_episode"] == 2

    restored = make_explorer(name, _spec(kind), PARAMETERS.get(name, {}), seed=99)
    restored.load_state_dict(loaded)
    rng = np.random.default_rng(5)
    observations = [_observation(kind, rng) for _ in range(4)]
    for observation in observations:  # same random numbers, same networks
        np.testing.assert_array_equal(explorer.act(observation), restored.act(observation))
    session.add()
    assert explorer.train(session) == restored.train(session)
    assert explorer.begin_episode() == restored.begin_episode()
    for observation in observations:
        np.testing.assert_array_equal(explorer.act(observation), restored.act(observation))
    assert_identical(explorer.state_dict(), restored.state_dict())


def _every_kind() -> dict:
    metadata = collections.OrderedDict([("", {"version": 1}), ("0", {"version": 2})])
    module_state = collections.OrderedDict([("weight", torch.arange(6, dtype=torch.float32).reshape(2, 3))])
    module_state._metadata = metadata
    return {
        "none": None,
        "flags": [True, False],
        "ints": (0, -1, 2**200, -(2**100), 7),
        "floats": [0.1, -0.0, math.inf, -math.inf, math.nan, struct.unpack("<d", bytes.fromhex("010000000000f8ff"))[0]],
        "text": "ünïcode \u2603 \n",
        "bytes": b"\x00\xff",
        1: "int key",
        (2, "tuple"): "tuple key",
        None: "none key",
        "numpy scalars": [np.float64(1.5), np.float32(2.5), np.int64(-3), np.uint8(250), np.bool_(True)],
        "0-d array": np.array(1.5),
        "arrays": [
            np.arange(12, dtype=np.int16).reshape(3, 4),
            np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
            np.arange(20.0)[::3],  # a strided view
            np.zeros((0, 5), dtype=np.complex128),
            np.array([True, False]),
            np.array(["ab", "c"]),
            np.array(["2024-05-01"], dtype="datetime64[ns]"),
            np.arange(3, dtype=">f8"),
        ],
        "tensors": [
            torch.tensor(3.0),
            torch.arange(5, dtype=torch.bfloat16),
            torch.tensor([True, False]),
            torch.arange(6, dtype=torch.int64).reshape(2, 3).t(),  # not contiguous
            torch.zeros(0, 4, dtype=torch.float16),
            torch.nn.Parameter(torch.ones(2)),
            torch.ones(2, requires_grad=True),
            torch.Generator().manual_seed(3).get_state(),
        ],
        "module": module_state,
        "rng": np.random.default_rng(2**70).bit_generator.state,
        "empty": [{}, [], (), collections.OrderedDict()],
    }


def test_every_supported_kind_comes_back_as_itself(tmp_path):
    state = _every_kind()
    path = save_explorer_checkpoint(tmp_path / "c.pt", state, None)
    loaded, after = load_explorer_checkpoint(path)
    assert after is None
    assert_identical(state, loaded)
    assert type(loaded["tensors"][5]) is torch.nn.Parameter
    assert loaded["rng"]["state"]["state"] == state["rng"]["state"]["state"] > 2**64


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({1, 2}, "explorer['bad']: builtins.set"),
        (np.array([object()]), "explorer['bad']: numpy dtype object"),
        (collections.defaultdict(int), "explorer['bad']: collections.defaultdict"),
        ([1, complex(1, 2)], "explorer['bad'][1]: builtins.complex"),
        ({frozenset(): 1}, "explorer['bad']: key frozenset()"),
        (np.zeros(2, dtype=[("a", "<f8")]), "explorer['bad']: numpy dtype [('a', '<f8')]"),
        (torch.zeros(2).to_sparse(), "explorer['bad']: only dense tensors"),
    ],
)
def test_saving_refuses_what_would_not_come_back_exactly(tmp_path, value, where):
    path = tmp_path / "c.pt"
    with pytest.raises(UnsupportedCheckpointContent, match=re.escape(where)):
        save_explorer_checkpoint(path, {"rng": 1, "bad": value}, 0)
    assert not path.exists()


# -------------------------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def good_bytes() -> bytes:
    """A real checkpoint: gcrnd after training (tensors, arrays, big ints, nested optimiser state)."""
    import pathlib
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        session = _Session(pathlib.Path(folder), [12] * 3)
        try:
            explorer = _trained("gcrnd", "vector", session)
        finally:
            session.close()
    return encode_explorer_checkpoint(explorer.state_dict(), 3)


def _regions(raw: bytes) -> dict[str, tuple[int, int]]:
    text_length, data_length = struct.unpack_from("<QQ", raw, 12)
    return {
        "magic": (0, 8),
        "version": (8, 12),
        "structure length": (12, 20),
        "data length": (20, 28),
        "checksum": (28, HEADER_BYTES),
        "structure": (HEADER_BYTES, HEADER_BYTES + text_length),
        "data": (HEADER_BYTES + text_length, HEADER_BYTES + text_length + data_length),
    }


def _refused(path, raw: bytes, match: str = "") -> DamagedCheckpointError:
    path.write_bytes(raw)
    with pytest.raises(DamagedCheckpointError) as caught:
        load_explorer_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: unusable explorer checkpoint: ") and "\n" not in message, message
    assert match in message, message
    assert caught.value.path == path
    with pytest.raises(DamagedCheckpointError):
        check_explorer_checkpoint(path)
    return caught.value


def test_the_good_bytes_load(tmp_path, good_bytes):
    (tmp_path / "c.pt").write_bytes(good_bytes)
    assert load_explorer_checkpoint(tmp_path / "c.pt")[1] == 3
    assert len(_regions(good_bytes)["data"]) and sum(b - a for a, b in _regions(good_bytes).values()) == len(good_bytes)


def test_every_truncation_is_refused(tmp_path, good_bytes):
    regions = _regions(good_bytes)
    cuts = {0, 1, 7, 8, 27, HEADER_BYTES - 1, HEADER_BYTES, len(good_bytes) - 1}
    for start, end in regions.values():
        cuts |= {start, (start + end) // 2, end - 1}
    for cut in sorted(cuts):
        expected = "empty file" if cut == 0 else "truncated"
        _refused(tmp_path / "c.pt", good_bytes[:cut], expected)
    _refused(tmp_path / "c.pt", good_bytes + b"\x00", "unexpected bytes")


@pytest.mark.parametrize(
    "region", ["magic", "version", "structure length", "data length", "checksum", "structure", "data"]
)
def test_a_flipped_byte_anywhere_is_refused(tmp_path, good_bytes, region):
    start, end = _regions(good_bytes)[region]
    positions = sorted({start, end - 1, *np.random.default_rng(0).integers(start, end, size=40).tolist()})
    for position in positions:
        for mask in (0x01, 0x80):
            raw = bytearray(good_bytes)
            raw[position] ^= mask
            _refused(tmp_path / "c.pt", bytes(raw))


def test_every_single_bit_flip_of_a_small_checkpoint_is_refused(tmp_path):
    explorer = make_explorer("random_linear", _spec(), {}, seed=0)
    good = encode_explorer_checkpoint(explorer.state_dict(), 0)
    for position in range(len(good)):
        raw = bytearray(good)
        raw[position] ^= 1 << (position % 8)
        _refused(tmp_path / "c.pt", bytes(raw))


def test_a_flipped_data_byte_is_caught_by_the_checksum(tmp_path, good_bytes):
    start, end = _regions(good_bytes)["data"]
    raw = bytearray(good_bytes)
    raw[(start + end) // 2] ^= 0x10  # still a valid float: only the checksum can tell
    _refused(tmp_path / "c.pt", bytes(raw), "checksum mismatch")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "empty file"),
        (b"hello, this is not a checkpoint at all\n", "not a pandalab explorer checkpoint"),
        (bytes(range(256)) * 4, "not a pandalab explorer checkpoint"),
        (MAGIC[:5], "truncated"),
        (MAGIC + b"\x00" * 10, "truncated"),
        (np.random.default_rng(0).bytes(5000), "not a pandalab explorer checkpoint"),
    ],
)
def test_garbage_is_refused(tmp_path, raw, match):
    _refused(tmp_path / "c.pt", raw, match)


def test_a_torch_save_zip_is_refused(tmp_path):
    buffer = io.BytesIO()
    torch.save({"explorer": {"rng": 1}}, buffer)
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue()))
    _refused(tmp_path / "c.pt", buffer.getvalue(), "zip archive")


def test_an_old_pickle_checkpoint_is_refused_as_not_our_format(tmp_path):
    explorer = make_explorer("gep", _spec(), {"bootstrap_policies": 2}, seed=0)
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        old = pickle.dumps({"explorer": explorer.state_dict(), "after_episode": 4}, protocol=protocol)
        _refused(tmp_path / "c.pt", old, "a Python pickle")


class _Planted:
    """Unpickling this creates a directory: proof that a loader ran code from the file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def test_a_pickle_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "the_payload_ran"
    planted = pickle.dumps({"explorer": {"rng": _Planted(marker)}, "after_episode": 1})
    error = _refused(tmp_path / "checkpoint.pt", planted, "a Python pickle")
    assert "unpickling can run code" in str(error)
    assert not marker.exists(), "loading the checkpoint executed the pickle's payload"
    pickle.loads(planted)  # the payload is live: plain unpickling runs it
    assert marker.is_dir()


def _forge(structure: dict, data: bytes = b"", version: int = 1) -> bytes:
    """A file with a correct checksum around any structure (what a crafted file can do)."""
    text = json.dumps(structure).encode()
    prefix = MAGIC + struct.pack("<IQQ", version, len(text), len(data))
    return prefix + hashlib.sha256(prefix + text + data).digest() + text + data


def _top(explorer_node, after=1) -> dict:
    return {
        "format": "pandalab-explorer-checkpoint",
        "byteorder": "little",
        "after_episode": after,
        "explorer": explorer_node,
    }


def _dict(**nodes) -> dict:
    return {"$": "dict", "v": [[k, v] for k, v in nodes.items()]}


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_forge(_top(_dict(rng={"$": "int", "v": "1"})), version=2), "format version 2"),
        (_forge(_top(_dict(x={"$": "pickle", "v": "80049"}))), "unknown node kind 'pickle'"),
        (
            _forge(_top(_dict(x={"$": "ndarray", "dtype": "|O8", "shape": [1], "order": "C", "nbytes": 8})), b"\0" * 8),
            "dtype",
        ),
        (_forge(_top(_dict(x={"$": "tensor", "dtype": "qint8", "shape": [1], "nbytes": 1})), b"\0"), "dtype"),
        (
            _forge(
                _top(_dict(x={"$": "ndarray", "dtype": "<f8", "shape": [10**6], "order": "C", "nbytes": 8 * 10**6}))
            ),
            "past the end",
        ),
        (
            _forge(_top(_dict(x={"$": "ndarray", "dtype": "<f8", "shape": [2], "order": "C", "nbytes": 8})), b"\0" * 8),
            "does not match shape",
        ),
        (_forge(_top(_dict(x=None)), b"\0" * 3), "3 bytes of the data section belong to no array"),
        (_forge(_top(_dict(x={"$": "int", "v": "1e5"}))), "bad int"),
        (_forge(_top(_dict(x={"$": "float", "v": "zz"}))), "bad hex"),
        (_forge(_top(_dict(x={"$": "int", "v": "1", "code": "os.system"}))), "fields"),
        (_forge(_top({"$": "list", "v": []})), "not a state dict"),
        (_forge(_top(_dict(x=1.5))), "float is not a node"),
        (_forge(_top({"$": "dict", "v": [["a", None], ["a", None]]})), "duplicate key"),
        (_forge(_top({"$": "dict", "v": [[{"$": "list", "v": []}, None]]})), "key of type list"),
        (_forge(_top(_dict(x=None), after="3")), "after_episode"),
        (_forge({"format": "something else"}), "structure lacks"),
        (_forge(_top(_dict(x=None)) | {"byteorder": "big"}), "byte order"),
        (
            _forge(_top(_dict(x={"$": "ndarray", "dtype": "|b1", "shape": [1], "order": "C", "nbytes": 1})), b"\x07"),
            "bool",
        ),
        (_forge(_top(json.loads("[" * 50 + "]" * 50))), "not a node"),
    ],
)
def test_crafted_structures_are_refused(tmp_path, raw, match):
    _refused(tmp_path / "c.pt", raw, match)


def test_deep_nesting_is_refused_not_a_crash(tmp_path):
    for depth in (70, 100_000):  # past MAX_DEPTH; past what the JSON parser can recurse into
        nested = '{"$":"list","v":[' * depth + "null" + "]}" * depth
        text = (json.dumps(_top(None))[:-5] + nested + "}").encode()
        prefix = MAGIC + struct.pack("<IQQ", 1, len(text), 0)
        _refused(tmp_path / "c.pt", prefix + hashlib.sha256(prefix + text).digest() + text)


def test_an_unreadable_path_is_damage_and_a_missing_one_is_not(tmp_path):
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(DamagedCheckpointError, match="cannot read"):
        load_explorer_checkpoint(tmp_path / "dir.pt")
    with pytest.raises(FileNotFoundError):
        load_explorer_checkpoint(tmp_path / "absent.pt")


# ----------------------------------------------------------------------------------- quarantine


def test_quarantine_moves_never_deletes_and_numbers_taken_names(tmp_path):
    session = tmp_path / "session"
    (session / "explorer").mkdir(parents=True)
    checkpoint = session / "explorer" / "checkpoint.pt"
    moved = []
    for n in range(3):
        checkpoint.write_bytes(f"damaged {n}".encode())
        moved.append(quarantine_checkpoint(checkpoint, session))
        assert not checkpoint.exists()
    assert [p.relative_to(session).as_posix() for p in moved] == [
        "quarantine/checkpoint.pt",
        "quarantine/checkpoint.1.pt",
        "quarantine/checkpoint.2.pt",
    ]
    assert [p.read_bytes() for p in moved] == [b"damaged 0", b"damaged 1", b"damaged 2"]
    (session / "quarantine" / "checkpoint.3.pt").write_bytes(b"someone else's")
    checkpoint.write_bytes(b"damaged 3")
    assert quarantine_checkpoint(checkpoint, session).name == "checkpoint.4.pt"
    assert (session / "quarantine" / "checkpoint.3.pt").read_bytes() == b"someone else's"
