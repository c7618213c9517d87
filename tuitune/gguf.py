"""Read a GGUF file's header without llama.cpp: metadata, tensor table, and a truncation check.

llama.cpp answers a bad file with "failed to load model" and nothing more; reading the header ourselves
lets tuitune say *why* (not a GGUF, truncated at N of M bytes) and show model details without loading it.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from tuitune.errors import ModelFileError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# ggml tensor types: (elements per block, bytes per block). Unknown types skip the size check.
_TYPE_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    9: (32, 36),  # Q8_1
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    15: (256, 292),  # Q8_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
}

# general.file_type → the quantization name people know.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
}  # fmt: skip

# Metadata value types: struct format for scalars, and the names the GGUF spec gives every type.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_TYPE_NAMES = {
    0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32", 7: "BOOL",
    8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64",
}  # fmt: skip
_KEEP_ARRAY_MAX = 64  # longer arrays (the vocabulary) are skipped, only their length is kept
_MAX_STRING = 1 << 26  # no key or value is near 64 MiB; a longer one is a corrupt length, not text
_MAX_DIMS = 4  # GGML_MAX_DIMS: llama.cpp refuses tensors with more
_INT64_MAX = 2**63 - 1
# The fewest bytes one entry can take, so a count can be checked against the bytes left before any loop:
# a key/value pair is a key length (8), a type (4) and at least a one-byte value; a tensor is a name length (8),
# n_dims (4), a type (4) and an offset (8).
_MIN_KV_BYTES, _MIN_TENSOR_BYTES, _MIN_STRING_BYTES = 13, 24, 8


@dataclass
class GGUFInfo:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensor_count: int
    file_size: int
    expected_size: int | None
    array_lengths: dict[str, int] = field(default_factory=dict)
    tensor_bytes: dict[str, int] = field(default_factory=dict)  # per tensor name, when its type is known
    tensor_elements: dict[str, int] = field(default_factory=dict)  # per tensor name: what the memory planner counts

    @property
    def architecture(self) -> str:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else "unknown"

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None

    @property
    def context_length(self) -> int | None:
        return _as_int(self.metadata.get(f"{self.architecture}.context_length"))

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None

    @property
    def quantization(self) -> str | None:
        file_type = _as_int(self.metadata.get("general.file_type"))
        return FILE_TYPES.get(file_type, f"type {file_type}") if file_type is not None else None

    @property
    def vocab_size(self) -> int | None:
        return self.array_lengths.get("tokenizer.ggml.tokens")


class _Reader:
    """Sequential reads over a file through a growing in-memory buffer (headers are parsed, never mapped).

    The vocabulary array alone holds up to ~260k strings; walking it with one ``read`` call per string
    took ~0.3 s for Gemma, in memory it takes a few milliseconds. Every length and count is checked against
    the bytes left in the file before anything is read or allocated: the header is untrusted input.
    """

    _CHUNK = 4 * 1024 * 1024

    def __init__(self, handle: BinaryIO, path: Path, file_size: int, start: int):
        self.handle = handle
        self.path = path
        self.file_size = file_size
        self.start = start  # file offset of buffer[0]
        self.buffer = bytearray()
        self.pos = 0

    def left(self) -> int:
        return self.file_size - self.start - self.pos

    def corrupt(self, what: str) -> ModelFileError:
        return ModelFileError(
            f"{self.path} has a corrupt GGUF header ({what}, at byte {self.start + self.pos:,}): "
            "the file is damaged or not a real model; re-download or reinstall it"
        )

    def need(self, size: int, what: str) -> None:
        """Raise unless ``size`` more bytes exist in the file (not only in the buffer)."""
        if size > self.left():
            raise ModelFileError(
                f"{self.path} is truncated inside its GGUF header, or corrupt: {what} at byte "
                f"{self.start + self.pos:,} needs {size:,} bytes but {max(self.left(), 0):,} are left; "
                "re-download or reinstall the model"
            )

    def _fill(self, size: int, what: str) -> None:
        self.need(size, what)
        while len(self.buffer) - self.pos < size:
            data = self.handle.read(max(self._CHUNK, size - (len(self.buffer) - self.pos)))
            if not data:  # the file shrank since it was measured
                raise ModelFileError(
                    f"{self.path} is truncated inside its GGUF header: re-download or reinstall the model"
                )
            self.buffer += data

    def tell(self) -> int:
        return self.start + self.pos

    def read(self, size: int, what: str) -> bytes:
        self._fill(size, what)
        data = bytes(self.buffer[self.pos : self.pos + size])
        self.pos += size
        return data

    def unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self._fill(size, what)
        value = struct.unpack_from(fmt, self.buffer, self.pos)[0]
        self.pos += size
        return value

    def string(self, what: str) -> str:
        length = self.unpack("<Q", f"the length of {what}")
        if length > _MAX_STRING:
            raise self.corrupt(f"{what} claims {length:,} bytes")
        return self.read(length, what).decode("utf-8", errors="replace")

    def value(self, value_type: int, what: str) -> Any:
        if value_type in _SCALARS:
            return self.unpack(_SCALARS[value_type], what)
        if value_type == _STRING:
            return self.string(what)
        raise self.corrupt(f"{what} has unknown type {value_type}")

    def array(self, key: str) -> tuple[list[Any] | None, int]:
        """(the items, or None when skipped, and the count) of the array whose type and count come next."""
        what = f"array {_shown(key)}"
        item_type = self.unpack("<I", f"the item type of {what}")
        count = self.unpack("<Q", f"the length of {what}")
        if item_type not in _SCALARS and item_type != _STRING:
            kind = "arrays of arrays" if item_type == _ARRAY else f"items of unknown type {item_type}"
            raise self.corrupt(f"{what} holds {kind}")
        item_size = struct.calcsize(_SCALARS[item_type]) if item_type in _SCALARS else _MIN_STRING_BYTES
        self.need(count * item_size, f"{what} of {count:,} {_TYPE_NAMES[item_type]} values")
        if count <= _KEEP_ARRAY_MAX:
            return [self.value(item_type, f"item {index} of {what}") for index in range(count)], count
        if item_type in _SCALARS:
            self._fill(count * item_size, what)
            self.pos += count * item_size
        else:
            self._skip_strings(count, what)
        return None, count

    def _skip_strings(self, count: int, what: str) -> None:
        unpack_length = struct.Struct("<Q").unpack_from
        buffer, pos = self.buffer, self.pos  # a bytearray grows in place, so the alias stays valid
        for index in range(count):
            if len(buffer) - pos < 8:
                self.pos = pos
                self._fill(8, f"item {index} of {what}")
            length = unpack_length(buffer, pos)[0]
            pos += 8
            if length > _MAX_STRING or len(buffer) - pos < length:
                self.pos = pos
                if length > _MAX_STRING:
                    raise self.corrupt(f"item {index} of {what} claims {length:,} bytes")
                self._fill(length, f"item {index} of {what}")
            pos += length
        self.pos = pos


def _shown(key: str) -> str:
    """A metadata key for a message: quoted, escaped, and short (it comes from the file)."""
    return repr(key if len(key) <= 60 else key[:59] + "…")


def _as_int(value: Any) -> int | None:
    """An integer metadata value as int; None when the file stores something else there."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _alignment(metadata: dict[str, Any], reader: _Reader) -> int:
    """general.alignment, which llama.cpp requires to be a power of two when it is set."""
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    alignment = _as_int(value)
    if alignment is None or alignment <= 0 or alignment & (alignment - 1):
        raise reader.corrupt(f"general.alignment is {value!r}, not a power of two")
    return alignment


def read_gguf(path: str | Path) -> GGUFInfo:
    """Parse the header of ``path``; raise ModelFileError with a clear reason if it is not a usable GGUF."""
    path = Path(path)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except (OSError, ValueError) as error:  # a folder it may not enter, a NUL in the name
        raise ModelFileError(f"cannot look at {path} ({error}); check the path and its permissions") from None
    if not exists:
        raise ModelFileError(f"model file {path} does not exist: check the path or reinstall the model")
    if is_dir:
        raise ModelFileError(f"{path} is a directory, not a .gguf file")
    reader: _Reader | None = None
    try:
        with path.open("rb") as handle:
            file_size = os.fstat(handle.fileno()).st_size
            magic = handle.read(4)
            if magic != GGUF_MAGIC:
                raise ModelFileError(
                    f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'): "
                    "tuitune runs llama.cpp GGUF models; convert or download a .gguf"
                )
            reader = _Reader(handle, path, file_size, len(magic))
            info = _read_header(reader, path, file_size)
    except OSError as error:
        raise ModelFileError(f"cannot read {path} ({error.strerror or error}); check its permissions") from None
    except (struct.error, ValueError, OverflowError, MemoryError) as error:
        # Every count is checked before use, so this is a check missed: still one line about the file, never a crash.
        where = f" at byte {reader.tell():,}" if reader is not None else ""
        raise ModelFileError(
            f"{path} has a corrupt GGUF header{where} ({type(error).__name__}: {str(error)[:80]}): "
            "the file is damaged or not a real model; re-download or reinstall it"
        ) from None
    if info.expected_size is not None and file_size < info.expected_size:
        raise ModelFileError(
            f"{path} is truncated ({file_size:,} of {info.expected_size:,} bytes): "
            "the download or copy did not finish; delete it and fetch the model again"
        )
    return info


def _read_header(reader: _Reader, path: Path, file_size: int) -> GGUFInfo:
    version = reader.unpack("<I", "the version")
    if version not in (2, 3):
        raise ModelFileError(f"{path} uses GGUF version {version}; tuitune reads versions 2 and 3")
    tensor_count = reader.unpack("<Q", "the tensor count")
    kv_count = reader.unpack("<Q", "the metadata count")
    reader.need(kv_count * _MIN_KV_BYTES, f"the metadata table of {kv_count:,} entries")
    metadata: dict[str, Any] = {}
    array_lengths: dict[str, int] = {}
    for index in range(kv_count):
        key = reader.string(f"the name of metadata entry {index}")
        value_type = reader.unpack("<I", f"the type of {_shown(key)}")
        if value_type == _ARRAY:
            items, array_lengths[key] = reader.array(key)
            if items is not None:
                metadata[key] = items
        else:
            metadata[key] = reader.value(value_type, f"metadata {_shown(key)}")
    reader.need(tensor_count * _MIN_TENSOR_BYTES, f"the tensor table of {tensor_count:,} tensors")
    alignment = _alignment(metadata, reader)  # checked before the tensors: each offset must be a multiple of it
    data_end = 0
    size_known = True
    tensor_bytes: dict[str, int] = {}  # what the GPU offload planner sums per layer
    tensor_elements: dict[str, int] = {}
    for index in range(tensor_count):
        name = reader.string(f"the name of tensor {index}")
        n_dims = reader.unpack("<I", f"the dimension count of tensor {_shown(name)}")
        if n_dims > _MAX_DIMS:
            raise reader.corrupt(f"tensor {_shown(name)} has {n_dims:,} dimensions; GGML allows {_MAX_DIMS}")
        dims = [reader.unpack("<Q", f"a dimension of tensor {_shown(name)}") for _ in range(n_dims)]
        if any(dim > _INT64_MAX for dim in dims):  # ggml reads dimensions as int64: these are negative there
            raise reader.corrupt(f"tensor {_shown(name)} has a dimension of {max(dims):,}, more than any file can hold")
        tensor_type = reader.unpack("<I", f"the type of tensor {_shown(name)}")
        offset = reader.unpack("<Q", f"the offset of tensor {_shown(name)}")
        elements = math.prod(dims)
        if elements > _INT64_MAX:
            raise reader.corrupt(f"tensor {_shown(name)} has {elements:,} elements, more than any file can hold")
        if offset % alignment:  # llama.cpp places every tensor on the alignment: another offset is a damaged table
            raise reader.corrupt(f"tensor {_shown(name)} is at data offset {offset:,}, off the {alignment}-byte grid")
        tensor_elements[name] = elements
        block = _TYPE_BLOCKS.get(tensor_type)
        if block is None:
            size_known = False
            continue
        if elements % block[0]:
            raise reader.corrupt(
                f"tensor {_shown(name)} has {elements:,} elements, not a multiple of its type's block of {block[0]}"
            )
        tensor_bytes[name] = elements // block[0] * block[1]
        data_end = max(data_end, offset + tensor_bytes[name])
    data_start = (reader.tell() + alignment - 1) // alignment * alignment
    expected = data_start + data_end if size_known else None
    return GGUFInfo(path, version, metadata, tensor_count, file_size, expected, array_lengths, tensor_bytes,
                    tensor_elements)  # fmt: skip
