"""Read TensorFlow V2 checkpoints (tensor bundles) without TensorFlow or protobuf.

A V2 checkpoint ``PREFIX`` is two kinds of file:

- ``PREFIX.index``: a LevelDB-format table (SSTable) mapping each variable name to a ``BundleEntryProto``
  (dtype, shape, shard id, byte offset and size in the shard, masked CRC32C of the bytes); the entry with
  the empty key is the ``BundleHeaderProto`` (number of shards, endianness). Blocks may be snappy-compressed.
- ``PREFIX.data-SSSSS-of-NNNNN``: the raw little-endian tensor bytes, one file per shard.

Only what is needed for plain (unpartitioned, numeric) variables is decoded: a tiny protobuf wire-format
reader, the table's block format, snappy decompression and CRC32C.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

__all__ = ["CheckpointError", "TensorEntry", "parse_index", "read_tensors", "load_checkpoint", "crc32c", "mask_crc"]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48

# tensorflow/core/framework/types.proto DataType -> numpy dtype (little-endian)
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}


class CheckpointError(ValueError):
    """A file that is not a readable TensorFlow V2 checkpoint (truncated, corrupt or unsupported)."""


@dataclass(frozen=True)
class TensorEntry:
    """One variable of a bundle: numpy dtype, shape, and where its bytes lie."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored


# --- protobuf wire format -----------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("varint longer than 10 bytes")


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field number, wire type, value)`` of a serialised message; values are ints or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = bytes(buf[pos : pos + n]), pos + n
        elif wire == 5:
            val, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise CheckpointError("truncated protobuf message")
        yield num, wire, val


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for num, _, val in _fields(buf):
        if num == 2:  # TensorShapeProto.dim
            dims.append(next((_signed(v) for n, _, v in _fields(val) if n == 1), 0))  # Dim.size
        elif num == 3 and val:
            raise CheckpointError("tensor of unknown rank")
    return tuple(dims)


def _entry(name: str, buf: bytes) -> TensorEntry:
    f = {"dtype": 0, "shape": b"", "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
    keys = {1: "dtype", 2: "shape", 3: "shard_id", 4: "offset", 5: "size", 6: "crc32c"}
    for num, _, val in _fields(buf):
        if num == 7:
            raise CheckpointError(f"{name}: partitioned (sliced) variables are not supported")
        if num in keys:
            f[keys[num]] = val
    if f["dtype"] not in DTYPES:
        raise CheckpointError(f"{name}: unsupported dtype enum {f['dtype']}")
    return TensorEntry(name, DTYPES[f["dtype"]], _shape(f["shape"]), f["shard_id"], f["offset"], f["size"], f["crc32c"])


# --- CRC32C (Castagnoli), vectorised over chunks with numpy ----------------------------------------


def _crc_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0x82F63B78), t >> 1).astype(np.uint32)
    return t


_TABLE = _crc_table()
_TABLE_L = [int(v) for v in _TABLE]
_CHUNK = 1024


def _raw_crc(reg: int, data: bytes) -> int:
    t = _TABLE_L
    for b in data:
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _zeros_operator(n: int) -> list[list[int]]:
    """Tables applying "feed n zero bytes" to a CRC register, one per register byte (the map is linear)."""
    basis = [_raw_crc(1 << i, bytes(n)) for i in range(32)]
    tables = []
    for byte in range(4):
        tab = [0] * 256
        for v in range(1, 256):
            low = v & -v
            tab[v] = tab[v ^ low] ^ basis[byte * 8 + low.bit_length() - 1]
        tables.append(tab)
    return tables


_ZEROS = _zeros_operator(_CHUNK)


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C of ``data`` (as used by LevelDB tables and TF bundles), unmasked."""
    data = memoryview(data).cast("B")
    n_chunks = len(data) // _CHUNK
    reg = 0xFFFFFFFF
    if n_chunks:
        # CRCs of all chunks at once from a zero register, then chained: crc(A+B) = Z(crc(A)) ^ crc0(B).
        chunks = np.frombuffer(data[: n_chunks * _CHUNK], dtype=np.uint8).reshape(n_chunks, _CHUNK)
        regs = np.zeros(n_chunks, dtype=np.uint32)
        for j in range(_CHUNK):
            regs = _TABLE[(regs ^ chunks[:, j]) & 0xFF] ^ (regs >> 8)
        z0, z1, z2, z3 = _ZEROS
        for c in regs.tolist():
            reg = z0[reg & 0xFF] ^ z1[(reg >> 8) & 0xFF] ^ z2[(reg >> 16) & 0xFF] ^ z3[reg >> 24] ^ c
    return _raw_crc(reg, data[n_chunks * _CHUNK :]) ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB's masking of a stored CRC."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --- snappy and the table format ------------------------------------------------------------------


def snappy_decompress(buf: bytes) -> bytes:
    """Decompress one raw snappy block (the format LevelDB tables use)."""
    n, pos = _varint(buf, 0)
    out = bytearray()
    while pos < len(buf):
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(buf[pos : pos + extra], "little")
                pos += extra
            length += 1
            out += buf[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length, offset = 4 + ((tag >> 2) & 7), ((tag >> 5) << 8) | buf[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            length, offset = (tag >> 2) + 1, int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise CheckpointError("corrupt snappy block: bad copy offset")
        start = len(out) - offset
        for i in range(length):  # copies may overlap their own output
            out.append(out[start + i])
    if len(out) != n:
        raise CheckpointError(f"corrupt snappy block: {len(out)} bytes, header says {n}")
    return bytes(out)


def _block(table: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + 5 > len(table):
        raise CheckpointError("table block beyond the end of the index file")
    contents, kind = table[offset : offset + size], table[offset + size]
    stored = int.from_bytes(table[offset + size + 1 : offset + size + 5], "little")
    if mask_crc(crc32c(table[offset : offset + size + 1])) != stored:
        raise CheckpointError("index block checksum mismatch")
    if kind == 1:
        return snappy_decompress(contents)
    if kind != 0:
        raise CheckpointError(f"unsupported table block compression {kind}")
    return contents


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise CheckpointError("table block too short")
    n_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * n_restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + vlen]
        pos += vlen


def _table_entries(table: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(table) < FOOTER_SIZE or int.from_bytes(table[-8:], "little") != TABLE_MAGIC:
        raise CheckpointError("not a TensorFlow V2 checkpoint index (bad table magic)")
    footer = table[-FOOTER_SIZE:]
    _, pos = _varint(footer, 0)  # metaindex handle: offset
    _, pos = _varint(footer, pos)  # metaindex handle: size
    for _, handle in _block_entries(_block(table, footer[pos:])):
        yield from _block_entries(_block(table, handle))


# --- public API -----------------------------------------------------------------------------------


def parse_index(index: bytes) -> tuple[int, dict[str, TensorEntry]]:
    """Parse a ``.index`` file: ``(number of shards, {variable name: entry})``."""
    num_shards, entries = None, {}
    for key, value in _table_entries(index):
        if key == b"":
            header = {num: val for num, _, val in _fields(value)}
            if header.get(2, 0) != 0:
                raise CheckpointError("big-endian checkpoints are not supported")
            num_shards = header.get(1, 0)
        else:
            name = key.decode("utf-8")
            entries[name] = _entry(name, value)
    if num_shards is None:
        raise CheckpointError("checkpoint index has no bundle header")
    return num_shards, entries


def read_tensors(
    index: bytes, shard: Callable[[int], bytes], names: Iterable[str] | None = None, verify: bool = True
) -> dict[str, np.ndarray]:
    """Read variables of a bundle: ``shard(i)`` returns the bytes of data file ``i``.

    Returns ``{name: array}`` (native byte order, writable copies), for ``names`` or every variable.
    With ``verify`` each tensor's CRC32C is checked. Raises CheckpointError (a ValueError).
    """
    _, entries = parse_index(index)
    wanted = list(entries) if names is None else list(names)
    shards: dict[int, bytes] = {}
    out = {}
    for name in wanted:
        if name not in entries:
            raise CheckpointError(f"checkpoint has no variable {name!r}")
        e = entries[name]
        data = shards.setdefault(e.shard_id, shard(e.shard_id))
        raw = data[e.offset : e.offset + e.size]
        expected = int(np.prod(e.shape, dtype=np.int64)) * e.dtype.itemsize
        if len(raw) != e.size or e.size != expected:
            raise CheckpointError(f"{name}: {len(raw)} bytes for shape {e.shape} {e.dtype} (need {expected})")
        if verify and e.crc32c is not None and mask_crc(crc32c(raw)) != e.crc32c:
            raise CheckpointError(f"{name}: CRC32C mismatch, the data file is corrupt")
        out[name] = np.frombuffer(raw, dtype=e.dtype).reshape(e.shape).astype(e.dtype.newbyteorder("="))
    return out


def load_checkpoint(prefix: str | Path, names: Iterable[str] | None = None, verify: bool = True) -> dict[str, np.ndarray]:
    """Read a V2 checkpoint from files ``PREFIX.index`` and ``PREFIX.data-*`` (see :func:`read_tensors`)."""
    prefix = str(prefix)
    index = Path(prefix + ".index").read_bytes()
    num_shards, _ = parse_index(index)
    return read_tensors(
        index, lambda i: Path(f"{prefix}.data-{i:05d}-of-{num_shards:05d}").read_bytes(), names, verify
    )
