"""TF V2 checkpoint reader: round trips through a small writer below, corruption, and the real musicnn wheel."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tagstore.embedders._tfcheckpoint import (
    CheckpointError,
    crc32c,
    load_checkpoint,
    mask_crc,
    parse_index,
    read_tensors,
    snappy_decompress,
)

WHEEL_NAME = "musicnn-0.1.0-py3-none-any.whl"
DTYPE_ENUMS = {np.dtype("float32"): 1, np.dtype("float64"): 2, np.dtype("int32"): 3, np.dtype("int64"): 9,
               np.dtype("float16"): 19, np.dtype("uint8"): 4}


# --- a small V2 checkpoint writer (LevelDB table of BundleEntryProto + one data shard) ----------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(num: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(num << 3 | wire)
    if wire == 0:
        return key + _varint(payload)  # type: ignore[arg-type]
    if wire == 5:
        return key + int(payload).to_bytes(4, "little")  # type: ignore[arg-type]
    return key + _varint(len(payload)) + payload  # type: ignore[arg-type]


def _entry(arr: np.ndarray, offset: int) -> bytes:
    shape = b"".join(_field(2, 2, _field(1, 0, d)) for d in arr.shape)
    raw = arr.tobytes()
    return (_field(1, 0, DTYPE_ENUMS[arr.dtype]) + _field(2, 2, shape) + _field(4, 0, offset)
            + _field(5, 0, len(raw)) + _field(6, 5, mask_crc(crc32c(raw))))


def _snappy_literals(data: bytes) -> bytes:
    out = bytearray(_varint(len(data)))
    for i in range(0, len(data), 60):
        chunk = data[i : i + 60]
        out += bytes([(len(chunk) - 1) << 2]) + chunk
    return bytes(out)


def _block(entries: list[tuple[bytes, bytes]], restart_every: int = 4) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(prev)) and key[shared] == prev[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        prev = key
    restarts = restarts or [0]
    for r in restarts:
        out += r.to_bytes(4, "little")
    return bytes(out + len(restarts).to_bytes(4, "little"))


def write_checkpoint(prefix: str | Path, tensors: dict[str, np.ndarray], per_block: int = 3, snappy: bool = False) -> None:
    """Write ``PREFIX.index`` and ``PREFIX.data-00000-of-00001`` as TensorFlow's BundleWriter lays them out."""
    data, items = bytearray(), [(b"", _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1)))]  # header: 1 shard
    for name in sorted(tensors):
        arr = np.array(tensors[name], order="C")  # (ascontiguousarray would make scalars 1-d)
        items.append((name.encode(), _entry(arr, len(data))))
        data += arr.tobytes()
    table, index_entries = bytearray(), []
    for i in range(0, len(items), per_block):
        chunk = items[i : i + per_block]
        contents = _block(chunk)
        kind = 0
        if snappy:
            contents, kind = _snappy_literals(contents), 1
        handle = _varint(len(table)) + _varint(len(contents))
        table += contents + bytes([kind]) + mask_crc(crc32c(contents + bytes([kind]))).to_bytes(4, "little")
        index_entries.append((chunk[-1][0] + b"\xff", handle))

    def put(contents: bytes) -> bytes:
        handle = _varint(len(table)) + _varint(len(contents))
        table.extend(contents + b"\x00" + mask_crc(crc32c(contents + b"\x00")).to_bytes(4, "little"))
        return handle

    meta_handle = put(_block([]))
    index_handle = put(_block(index_entries, restart_every=1))
    footer = (meta_handle + index_handle).ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    Path(f"{prefix}.index").write_bytes(bytes(table) + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv2d/kernel": rng.standard_normal((7, 38, 1, 4)).astype(np.float32),
        "conv2d/bias": rng.standard_normal(4).astype(np.float32),
        "batch_normalization/moving_variance": rng.random(1).astype(np.float32),
        "dense/kernel": rng.standard_normal((300, 2)),  # float64
        "global_step": np.array(12345678901, dtype=np.int64),
        "half": rng.standard_normal((3, 5)).astype(np.float16),
        "bytes": rng.integers(0, 255, 5000, dtype=np.uint8),
        "empty": np.zeros((0, 3), dtype=np.int32),
    }


# --- tests -----------------------------------------------------------------------------------------


def test_crc32c_known_values() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    data = bytes(range(256)) * 40 + b"tail"  # crosses the vectorised chunk size
    reg = 0xFFFFFFFF
    for b in data:  # bitwise reference
        reg ^= b
        for _ in range(8):
            reg = (reg >> 1) ^ (0x82F63B78 if reg & 1 else 0)
    assert crc32c(data) == reg ^ 0xFFFFFFFF


def test_snappy_literals_and_copies() -> None:
    # "abcd" literal, then copy(len 8, offset 4) with a 1-byte offset, then copy(len 3, offset 10) with 2 bytes
    stream = bytes([15, 3 << 2]) + b"abcd" + bytes([(4 << 2) | 1, 4]) + bytes([(2 << 2) | 2, 10, 0])
    assert snappy_decompress(stream) == b"abcdabcdabcd" + b"cda"
    with pytest.raises(CheckpointError):
        snappy_decompress(bytes([5, (4 << 2) | 1, 9]))  # copy before any output


@pytest.mark.parametrize("snappy", [False, True])
def test_round_trip(tmp_path: Path, snappy: bool) -> None:
    tensors = _tensors()
    write_checkpoint(tmp_path / "model", tensors, snappy=snappy)
    num_shards, entries = parse_index((tmp_path / "model.index").read_bytes())
    assert num_shards == 1 and set(entries) == set(tensors)
    assert entries["conv2d/kernel"].shape == (7, 38, 1, 4) and entries["global_step"].shape == ()
    got = load_checkpoint(tmp_path / "model")
    for name, arr in tensors.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape
        np.testing.assert_array_equal(got[name], arr)
    assert got["conv2d/kernel"].flags.writeable


def test_selected_names_and_unknown_name(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "m", _tensors())
    index = (tmp_path / "m.index").read_bytes()
    data = (tmp_path / "m.data-00000-of-00001").read_bytes()
    assert set(read_tensors(index, lambda _i: data, names=["conv2d/bias"])) == {"conv2d/bias"}
    with pytest.raises(CheckpointError, match="no variable 'nope'"):
        read_tensors(index, lambda _i: data, names=["nope"])


def test_corruption_is_detected(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "m", _tensors())
    index = (tmp_path / "m.index").read_bytes()
    data = bytearray((tmp_path / "m.data-00000-of-00001").read_bytes())
    data[10] ^= 0xFF  # inside conv2d/bias or batch_normalization (the first tensors in name order)
    with pytest.raises(CheckpointError, match="CRC32C"):
        read_tensors(index, lambda _i: bytes(data))
    assert read_tensors(index, lambda _i: bytes(data), names=["dense/kernel"], verify=True)  # others intact
    with pytest.raises(CheckpointError, match="magic"):
        parse_index(index[:-1] + b"\x00")
    bad = bytearray(index)
    bad[20] ^= 0x01  # inside the first data block
    with pytest.raises(CheckpointError, match="checksum"):
        parse_index(bytes(bad))
    with pytest.raises(CheckpointError):
        read_tensors(index, lambda _i: bytes(data[:100]))  # truncated shard


def _wheel() -> Path | None:
    env = os.environ.get("TAGSTORE_MUSICNN_WHEEL")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / ".cache" / WHEEL_NAME)
    return next((p for p in candidates if p.is_file()), None)


def test_reads_the_musicnn_wheel() -> None:
    wheel = _wheel()
    if wheel is None:
        pytest.skip(f"no cached {WHEEL_NAME} (set TAGSTORE_MUSICNN_WHEEL or put it in .cache/)")
    from tagstore.embedders.musicnn import PARAM_SHAPES

    with zipfile.ZipFile(wheel) as zf:
        index = zf.read("musicnn/MSD_musicnn/.index")
        data = zf.read("musicnn/MSD_musicnn/.data-00000-of-00001")
    num_shards, entries = parse_index(index)
    assert num_shards == 1 and len(entries) == 150  # 64 variables, their Adam slots, beta powers
    tensors = read_tensors(index, lambda _i: data, names=PARAM_SHAPES)  # CRC-checked
    assert {k: v.shape for k, v in tensors.items()} == PARAM_SHAPES
    assert all(v.dtype == np.float32 and np.all(np.isfinite(v)) for v in tensors.values())
    assert np.all(tensors["batch_normalization_1/moving_variance"] > 0)
