"""GGUF files built byte by byte with struct.pack, lies in counts and lengths included (gguf-py's validation tests do the same)."""

from __future__ import annotations

import struct

UINT32, STRING, ARRAY, FLOAT64 = 4, 8, 9, 12


def gguf_string(text: str, length: int | None = None) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data) if length is None else length) + data


def kv(key: str, value_type: int, payload: bytes) -> bytes:
    return gguf_string(key) + struct.pack("<I", value_type) + payload


def array(key: str, item_type: int, count: int, items: bytes = b"") -> bytes:
    return kv(key, ARRAY, struct.pack("<IQ", item_type, count) + items)


def tensor(name: str, dims: list[int], tensor_type: int = 0, offset: int = 0, n_dims: int | None = None) -> bytes:
    head = gguf_string(name) + struct.pack("<I", len(dims) if n_dims is None else n_dims)
    return head + b"".join(struct.pack("<Q", dim) for dim in dims) + struct.pack("<IQ", tensor_type, offset)


def gguf(kvs=(), tensors=(), kv_count: int | None = None, tensor_count: int | None = None) -> bytes:
    counts = struct.pack(
        "<QQ", len(tensors) if tensor_count is None else tensor_count, len(kvs) if kv_count is None else kv_count
    )
    return b"GGUF" + struct.pack("<I", 3) + counts + b"".join(kvs) + b"".join(tensors)


ARCH = kv("general.architecture", STRING, gguf_string("llama"))
