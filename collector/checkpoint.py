"""Explorer checkpoints that are data, not code: ``<session>/explorer/checkpoint.pt``.

Earlier versions pickled the explorer's state dict; unpickling a damaged or planted file can run
arbitrary code.  This format holds only what explorers' state dicts are made of, and reading it
never imports or calls anything named by the file:

- containers: dict, OrderedDict (with a torch module state dict's ``_metadata``), list, tuple;
- scalars: None, bool, int (any size: numpy bit-generator states hold 128-bit integers), float
  (bit-exact, NaN and -0.0 included), str, bytes, numpy scalars (``np.float64`` ...);
- numpy arrays (numeric, bool, datetime, fixed-width string dtypes; C or Fortran order) and torch
  tensors (numeric and bool dtypes, ``nn.Parameter`` included), saved on and loaded to the CPU.

Anything else (object arrays, sets, custom classes, sparse tensors) is refused when saving
(`UnsupportedCheckpointContent`, naming where it sits), so a state dict that would not round-trip
exactly is never written.  Each container, scalar and array comes back as the type it was saved
as; arrays and tensors with their dtype, shape and bytes.

File layout (integers little-endian)::

    offset  size
    0       8     magic b"\\x89PLXCKPT" (0x89: never the first byte of a pickle, a zip or text)
    8       4     format version (1)
    12      8     T: length of the structure (UTF-8 JSON)
    20      8     D: length of the data section
    28      32    sha256 of bytes 0..27, the structure and the data section
    60      T     structure: {"format": "pandalab-explorer-checkpoint", "byteorder": "little",
                  "after_episode": int or null, "explorer": NODE}
    60+T    D     data: the raw bytes of every array and tensor, in the order the structure lists
                  them, back to back

A NODE is JSON null, true, false, a string, or an object whose ``"$"`` names its kind: ``int``
(``"v"``: decimal string), ``float`` (``"v"``: the 16 hex digits of the IEEE-754 double), ``bytes``
(hex), ``list`` / ``tuple`` (``"v"``: NODEs), ``dict`` / ``odict`` (``"v"``: [key NODE, value
NODE] pairs; ``odict`` may carry ``"metadata"``), ``npscalar`` (dtype string and hex bytes),
``ndarray`` (dtype string, shape, order, nbytes) and ``tensor`` (torch dtype name, shape, nbytes,
optional requires_grad / parameter).

`load_explorer_checkpoint` raises `DamagedCheckpointError` (a ValueError whose message is one line
naming the file) for anything wrong: a short or empty file, a flipped bit (the checksum), another
format (an old pickle checkpoint, a torch.save zip, text), another format version, or content
outside the list above.  `quarantine_checkpoint` moves such a file aside, never deleting it.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import re
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from store import atomic_write_bytes

MAGIC = b"\x89PLXCKPT"
VERSION = 1
FORMAT_NAME = "pandalab-explorer-checkpoint"
_PREFIX = struct.Struct("<8sIQQ")  # magic, version, structure length, data length
HEADER_BYTES = _PREFIX.size + 32  # + sha256
MAX_DEPTH = 64
"""Deepest nesting of containers read (explorer state dicts are about 6 deep)."""
MAX_NDIM = 32

_NUMPY_DTYPE_RE = re.compile(r"^[<>|][biufcmMSU]\d{1,4}(\[[0-9]*[A-Za-z]+\])?$")
_INT_RE = re.compile(r"^-?(0|[1-9][0-9]{0,999})$")
_HEX_RE = re.compile(r"^([0-9a-f]{2})*$")
TORCH_DTYPES = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "complex128": 16,
    "complex64": 8,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint64": 8,
    "uint32": 4,
    "uint16": 2,
    "uint8": 1,
    "bool": 1,
}
"""Torch dtypes a checkpoint may hold (by name, without the ``torch.`` prefix) and their sizes."""


class DamagedCheckpointError(ValueError):
    """An explorer checkpoint that cannot be used; ``str()`` is one line naming the file."""

    def __init__(self, path: os.PathLike | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: unusable explorer checkpoint: {self.reason}")


class UnsupportedCheckpointContent(TypeError):
    """A state dict holding something this format does not store exactly (raised when saving)."""


# ------------------------------------------------------------------------------------------ saving


def save_explorer_checkpoint(path: os.PathLike | str, state_dict: dict[str, Any], after_episode: int | None) -> Path:
    """Write ``state_dict`` (an explorer's `state_dict()`) atomically and durably to ``path``."""
    return atomic_write_bytes(path, encode_explorer_checkpoint(state_dict, after_episode))


def encode_explorer_checkpoint(state_dict: dict[str, Any], after_episode: int | None) -> bytes:
    """The bytes `save_explorer_checkpoint` writes (see the module docstring)."""
    if type(state_dict) not in (dict, collections.OrderedDict):
        raise UnsupportedCheckpointContent(f"an explorer state dict must be a dict, not {type(state_dict).__name__}")
    if after_episode is not None and type(after_episode) is not int:
        after_episode = _plain_int(after_episode, "after_episode")
    chunks: list[bytes] = []
    structure = {
        "format": FORMAT_NAME,
        "byteorder": "little",
        "after_episode": after_episode,
        "explorer": _Encoder(chunks).node(state_dict, "explorer", 0),
    }
    text = json.dumps(structure, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    data_length = sum(len(c) for c in chunks)
    prefix = _PREFIX.pack(MAGIC, VERSION, len(text), data_length)
    digest = hashlib.sha256(prefix)
    digest.update(text)
    for chunk in chunks:
        digest.update(chunk)
    return b"".join([prefix, digest.digest(), text, *chunks])


def _plain_int(value: Any, where: str) -> int:
    if isinstance(value, np.integer):
        return int(value)
    raise UnsupportedCheckpointContent(f"{where}: expected an int, got {type(value).__name__}")


def _torch():
    """torch if something already imported it (no object can be a tensor otherwise)."""
    return sys.modules.get("torch")


class _Encoder:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def node(self, value: Any, where: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise UnsupportedCheckpointContent(f"{where}: nested deeper than {MAX_DEPTH} containers")
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return value
        if kind is int:
            return {"$": "int", "v": str(value)}
        if kind is float:
            return {"$": "float", "v": struct.pack(">d", value).hex()}
        if kind is bytes:
            return {"$": "bytes", "v": value.hex()}
        if kind is list or kind is tuple:
            items = [self.node(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
            return {"$": kind.__name__, "v": items}
        if kind is dict or kind is collections.OrderedDict:
            pairs = []
            for key, item in value.items():
                if type(key) not in (str, int, bool, float, type(None), tuple):
                    raise UnsupportedCheckpointContent(f"{where}: key {key!r} of type {type(key).__name__}")
                label = f"{where}[{key!r}]"
                pairs.append([self.node(key, label, depth + 1), self.node(item, label, depth + 1)])
            out = {"$": "dict" if kind is dict else "odict", "v": pairs}
            extra = set(vars(value)) if kind is collections.OrderedDict else set()
            if extra - {"_metadata"}:
                raise UnsupportedCheckpointContent(f"{where}: OrderedDict attributes {sorted(extra)}")
            if "_metadata" in extra:  # torch's per-module state dict versions
                out["metadata"] = self.node(value._metadata, f"{where}._metadata", depth + 1)
            return out
        if kind is np.ndarray:
            return self._ndarray(value, where)
        if isinstance(value, np.generic):
            dtype = _numpy_dtype_string(value.dtype, where)
            return {"$": "npscalar", "dtype": dtype, "v": value.tobytes().hex()}
        torch = _torch()
        if torch is not None and isinstance(value, torch.Tensor):
            return self._tensor(value, where, torch)
        raise UnsupportedCheckpointContent(
            f"{where}: {kind.__module__}.{kind.__qualname__} is not stored in checkpoints"
        )

    def _ndarray(self, array: np.ndarray, where: str) -> dict[str, Any]:
        dtype = _numpy_dtype_string(array.dtype, where)
        order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        data = array.tobytes(order=order)
        self.chunks.append(data)
        return {"$": "ndarray", "dtype": dtype, "shape": list(array.shape), "order": order, "nbytes": len(data)}

    def _tensor(self, tensor: Any, where: str, torch: Any) -> dict[str, Any]:
        if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
            raise UnsupportedCheckpointContent(f"{where}: tensor subclass {type(tensor).__name__}")
        if tensor.layout != torch.strided or tensor.is_quantized or getattr(tensor, "is_nested", False):
            raise UnsupportedCheckpointContent(f"{where}: only dense tensors are stored (got layout {tensor.layout})")
        name = str(tensor.dtype).removeprefix("torch.")
        if name not in TORCH_DTYPES:
            raise UnsupportedCheckpointContent(f"{where}: tensor dtype {tensor.dtype}")
        flat = tensor.detach().to("cpu").resolve_conj().resolve_neg().contiguous().reshape(-1)
        data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        self.chunks.append(data)
        out = {"$": "tensor", "dtype": name, "shape": list(tensor.shape), "nbytes": len(data)}
        if tensor.requires_grad:
            out["requires_grad"] = True
        if type(tensor) is torch.nn.Parameter:
            out["parameter"] = True
        return out


def _numpy_dtype_string(dtype: np.dtype, where: str) -> str:
    text = dtype.str
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or not _NUMPY_DTYPE_RE.match(text):
        raise UnsupportedCheckpointContent(f"{where}: numpy dtype {dtype} is not stored in checkpoints")
    return text


# ----------------------------------------------------------------------------------------- loading


def load_explorer_checkpoint(path: os.PathLike | str) -> tuple[dict[str, Any], int | None]:
    """``(state_dict, after_episode)`` from a checkpoint `save_explorer_checkpoint` wrote.

    Raises `DamagedCheckpointError` for anything wrong with the file (FileNotFoundError when there
    is none)."""
    path = Path(path)
    return decode_explorer_checkpoint(_read(path), path)


def check_explorer_checkpoint(path: os.PathLike | str) -> dict[str, Any]:
    """Check a checkpoint as `load_explorer_checkpoint` does without building its arrays and
    tensors (so without importing torch): ``{"after_episode", "bytes", "arrays", "explorer"}``
    (explorer: the class name learned explorers record, else None), else `DamagedCheckpointError`."""
    path = Path(path)
    raw = _read(path)
    structure, data = _unpack(raw, path)
    decoder = _Decoder(path, data, materialise=False)
    state = decoder.root(structure)
    name = state.get("explorer")
    return {
        "after_episode": structure["after_episode"],
        "bytes": len(raw),
        "arrays": decoder.arrays,
        "explorer": name if isinstance(name, str) else None,
    }


def decode_explorer_checkpoint(raw: bytes, path: os.PathLike | str = "<bytes>") -> tuple[dict[str, Any], int | None]:
    """`load_explorer_checkpoint` on bytes already read."""
    path = Path(path)
    structure, data = _unpack(raw, path)
    state = _Decoder(path, data, materialise=True).root(structure)
    return state, structure["after_episode"]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise DamagedCheckpointError(path, f"cannot read: {error.strerror or error}") from None


def _not_ours(raw: bytes) -> str:
    """Why a file that does not start with our magic is not a checkpoint of this format."""
    if not raw:
        return "empty file (0 bytes)"
    if MAGIC.startswith(raw[: len(MAGIC)]):
        return f"truncated: {len(raw)} bytes, shorter than the {HEADER_BYTES}-byte header"
    protocol_2_plus = raw[:1] == b"\x80" and len(raw) > 1 and 2 <= raw[1] <= 5
    protocol_0_1 = raw[-1:] == b"." and raw[:1] in (b"(", b"}", b"]", b"c", b"K", b"I", b"N", b"S", b"V", b"X")
    if protocol_2_plus or protocol_0_1:
        return (
            "a Python pickle (an explorer checkpoint of an older pandalab): not loaded, as unpickling "
            "can run code; start the explorer afresh"
        )
    if raw[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save?), not a pandalab explorer checkpoint"
    return f"not a pandalab explorer checkpoint (starts with {raw[:8]!r})"


def _unpack(raw: bytes, path: Path) -> tuple[dict[str, Any], memoryview]:
    """Header, sizes, checksum, then the JSON structure; returns (structure, data section)."""
    if len(raw) < HEADER_BYTES or raw[: len(MAGIC)] != MAGIC:
        raise DamagedCheckpointError(path, _not_ours(raw))
    _, version, text_length, data_length = _PREFIX.unpack_from(raw)
    if version != VERSION:
        raise DamagedCheckpointError(path, f"format version {version}; this pandalab reads version {VERSION}")
    expected = HEADER_BYTES + text_length + data_length
    if len(raw) < expected:
        raise DamagedCheckpointError(path, f"truncated: {len(raw)} bytes, the header announces {expected}")
    if len(raw) > expected:
        raise DamagedCheckpointError(path, f"{len(raw) - expected} unexpected bytes after the announced {expected}")
    stored = raw[_PREFIX.size : HEADER_BYTES]
    digest = hashlib.sha256(memoryview(raw)[: _PREFIX.size])
    digest.update(memoryview(raw)[HEADER_BYTES:])
    if digest.digest() != stored:
        raise DamagedCheckpointError(
            path,
            f"checksum mismatch (sha256 {digest.hexdigest()[:12]}..., header {stored.hex()[:12]}...): "
            "the file changed after it was written",
        )
    text = raw[HEADER_BYTES : HEADER_BYTES + text_length]
    try:
        structure = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise DamagedCheckpointError(path, f"structure is not valid JSON: {error}") from None
    if not isinstance(structure, dict) or set(structure) != {"format", "byteorder", "after_episode", "explorer"}:
        raise DamagedCheckpointError(path, "structure lacks format, byteorder, after_episode or explorer")
    if structure["format"] != FORMAT_NAME:
        raise DamagedCheckpointError(path, f"structure format {str(structure['format'])[:60]!r}, not {FORMAT_NAME!r}")
    if structure["byteorder"] != "little" or sys.byteorder != "little":
        order = str(structure["byteorder"])[:20]
        raise DamagedCheckpointError(path, f"byte order {order!r} on a {sys.byteorder}-endian machine")
    after = structure["after_episode"]
    if after is not None and type(after) is not int:
        raise DamagedCheckpointError(path, f"after_episode is {str(after)[:40]!r}, not an integer")
    return structure, memoryview(raw)[HEADER_BYTES + text_length :]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class _Content(Exception):
    """Unsupported or inconsistent content at a place in the structure (becomes DamagedCheckpointError)."""


_FIELDS = {
    "int": {"$", "v"},
    "float": {"$", "v"},
    "bytes": {"$", "v"},
    "list": {"$", "v"},
    "tuple": {"$", "v"},
    "dict": {"$", "v"},
    "odict": {"$", "v"},
    "npscalar": {"$", "dtype", "v"},
    "ndarray": {"$", "dtype", "shape", "order", "nbytes"},
    "tensor": {"$", "dtype", "shape", "nbytes"},
}
_OPTIONAL = {"odict": {"metadata"}, "tensor": {"requires_grad", "parameter"}}


class _Decoder:
    def __init__(self, path: Path, data: bytes | memoryview, materialise: bool) -> None:
        self.path, self.data, self.materialise = path, data, materialise
        self.cursor = 0
        self.arrays = 0
        self.torch: Any = None

    def root(self, structure: dict[str, Any]) -> dict[str, Any]:
        try:
            state = self.node(structure["explorer"], "explorer", 0)
            if type(state) not in (dict, collections.OrderedDict):
                raise _Content(f"explorer: a {type(state).__name__}, not a state dict")
            if self.cursor != len(self.data):
                raise _Content(f"{len(self.data) - self.cursor} bytes of the data section belong to no array")
        except _Content as error:
            raise DamagedCheckpointError(self.path, f"unsupported content: {error}") from None
        except Exception as error:  # whatever else a crafted structure provokes is damage too
            raise DamagedCheckpointError(self.path, f"cannot decode: {type(error).__name__}: {error}") from None
        return state

    def node(self, node: Any, where: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _Content(f"{where}: nested deeper than {MAX_DEPTH}")
        if node is None or type(node) is bool or type(node) is str:
            return node
        if type(node) is not dict or type(node.get("$")) is not str:
            raise _Content(f"{where}: {type(node).__name__} is not a node")
        kind = node["$"]
        if kind not in _FIELDS:
            raise _Content(f"{where}: unknown node kind {kind[:40]!r}")
        keys = set(node)
        if not _FIELDS[kind] <= keys <= _FIELDS[kind] | _OPTIONAL.get(kind, set()):
            raise _Content(f"{where}: {kind} node with fields {sorted(keys)}")
        value = node["v"] if "v" in node else None
        if kind == "int":
            if type(value) is not str or not _INT_RE.match(value):
                raise _Content(f"{where}: bad int")
            return int(value)
        if kind == "float":
            return struct.unpack(">d", self._hex(value, where, 8))[0]
        if kind == "bytes":
            return self._hex(value, where, None)
        if kind in ("list", "tuple"):
            if type(value) is not list:
                raise _Content(f"{where}: {kind} without a list of items")
            items = [self.node(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
            return items if kind == "list" else tuple(items)
        if kind in ("dict", "odict"):
            return self._mapping(node, kind, where, depth)
        if kind == "npscalar":
            dtype = self._numpy_dtype(node["dtype"], where)
            raw = self._hex(value, where, dtype.itemsize)
            return np.frombuffer(raw, dtype=dtype)[0].copy() if self.materialise else None
        if kind == "ndarray":
            return self._ndarray(node, where)
        return self._tensor(node, where)

    def _mapping(self, node: dict[str, Any], kind: str, where: str, depth: int) -> Any:
        pairs = node["v"]
        if type(pairs) is not list:
            raise _Content(f"{where}: {kind} without a list of pairs")
        out: dict[Any, Any] = {} if kind == "dict" else collections.OrderedDict()
        for pair in pairs:
            if type(pair) is not list or len(pair) != 2:
                raise _Content(f"{where}: a {kind} entry is not a [key, value] pair")
            key = self.node(pair[0], f"{where}[key]", depth + 1)
            if type(key) not in (str, int, bool, float, type(None), tuple):
                raise _Content(f"{where}: key of type {type(key).__name__}")
            try:
                hash(key)
            except TypeError:  # a tuple key holding something unhashable
                raise _Content(f"{where}: unhashable key") from None
            label = f"{where}[{key!r}]" if len(repr(key)) < 60 else f"{where}[...]"
            if key in out:
                raise _Content(f"{label}: duplicate key")
            out[key] = self.node(pair[1], label, depth + 1)
        if "metadata" in node:
            if kind != "odict":
                raise _Content(f"{where}: metadata on a dict")
            out._metadata = self.node(node["metadata"], f"{where}._metadata", depth + 1)  # type: ignore[attr-defined]
        return out

    def _hex(self, value: Any, where: str, size: int | None) -> bytes:
        if type(value) is not str or not _HEX_RE.match(value) or (size is not None and len(value) != 2 * size):
            raise _Content(f"{where}: bad hex bytes")
        return bytes.fromhex(value)

    def _shape(self, node: dict[str, Any], where: str) -> tuple[int, ...]:
        shape = node["shape"]
        if type(shape) is not list or len(shape) > MAX_NDIM or any(type(n) is not int or n < 0 for n in shape):
            raise _Content(f"{where}: bad shape")
        return tuple(shape)

    def _take(self, node: dict[str, Any], where: str, itemsize: int, shape: tuple[int, ...]) -> memoryview:
        nbytes = node["nbytes"]
        if type(nbytes) is not int or nbytes != math.prod(shape) * itemsize:
            raise _Content(f"{where}: nbytes {nbytes!r} does not match shape {list(shape)} x {itemsize} bytes")
        if self.cursor + nbytes > len(self.data):
            raise _Content(f"{where}: array bytes run past the end of the data section")
        view = memoryview(self.data)[self.cursor : self.cursor + nbytes]
        self.cursor += nbytes
        self.arrays += 1
        return view

    def _numpy_dtype(self, text: Any, where: str) -> np.dtype:
        if type(text) is not str or not _NUMPY_DTYPE_RE.match(text):
            raise _Content(f"{where}: numpy dtype {str(text)[:40]!r} is not allowed")
        try:
            dtype = np.dtype(text)
        except (TypeError, ValueError):
            raise _Content(f"{where}: numpy dtype {text!r} is not allowed") from None
        if dtype.hasobject or dtype.fields is not None or dtype.str != text:
            raise _Content(f"{where}: numpy dtype {text!r} is not allowed")
        return dtype

    def _ndarray(self, node: dict[str, Any], where: str) -> np.ndarray | None:
        dtype = self._numpy_dtype(node["dtype"], where)
        shape = self._shape(node, where)
        order = node["order"]
        if order not in ("C", "F"):
            raise _Content(f"{where}: order {str(order)[:10]!r}")
        raw = self._take(node, where, dtype.itemsize, shape)
        if dtype.kind == "b":
            _check_bools(raw, where)
        if not self.materialise:
            return None
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order=order).copy(order="K")

    def _tensor(self, node: dict[str, Any], where: str) -> Any:
        name = node["dtype"]
        if type(name) is not str or name not in TORCH_DTYPES:
            raise _Content(f"{where}: tensor dtype {str(name)[:40]!r} is not allowed")
        shape = self._shape(node, where)
        flags = {k: node.get(k, False) for k in ("requires_grad", "parameter")}
        if any(type(v) is not bool for v in flags.values()):
            raise _Content(f"{where}: requires_grad / parameter must be true or false")
        raw = self._take(node, where, TORCH_DTYPES[name], shape)
        if name == "bool":
            _check_bools(raw, where)
        if not self.materialise:
            return None
        if self.torch is None:
            import torch

            self.torch = torch
        torch = self.torch
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype):
            raise _Content(f"{where}: this torch has no dtype {name}")
        octets = torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy())
        tensor = octets.view(dtype).reshape(shape) if octets.numel() else torch.empty(shape, dtype=dtype)
        if flags["parameter"]:
            return torch.nn.Parameter(tensor, requires_grad=flags["requires_grad"])
        return tensor.requires_grad_(True) if flags["requires_grad"] else tensor


def _check_bools(raw: memoryview, where: str) -> None:
    octets = np.frombuffer(raw, dtype=np.uint8)
    if octets.size and octets.max() > 1:
        raise _Content(f"{where}: booleans holding values other than 0 and 1")


# -------------------------------------------------------------------------------------- quarantine


def quarantine_checkpoint(path: os.PathLike | str, session_dir: os.PathLike | str) -> Path:
    """Move ``path`` into ``<session_dir>/quarantine/`` (never deleting anything) and return where
    it went: its own name, or ``<stem>.<n><suffix>`` (n = 1, 2, ...) when that is taken.  The
    directories involved are fsynced, so the move survives a power loss."""
    path = Path(path)
    folder = Path(session_dir) / "quarantine"
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    if created:
        _fsync_dir(folder.parent)
    stem, suffix = path.stem, path.suffix
    n = 0
    while True:
        target = folder / (path.name if n == 0 else f"{stem}.{n}{suffix}")
        n += 1
        try:
            os.link(path, target)  # fails if the name is taken: nothing is ever overwritten
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            if target.exists():
                continue
            os.rename(path, target)
            break
        os.unlink(path)
        break
    _fsync_dir(folder)
    if path.parent.resolve() != folder.resolve():
        _fsync_dir(path.parent)
    return target


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems refuse to fsync a directory
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
