"""GGUF header reading: real models parse; missing, truncated and foreign files get a clear reason."""

from __future__ import annotations

import contextlib
import math
import re
import struct
import tracemalloc
from pathlib import Path

import pytest

from tests.support.gguf_bytes import ARCH, ARRAY, FLOAT64, STRING, UINT32, array, gguf, gguf_string, kv, tensor
from tuitune.errors import ModelFileError
from tuitune.gguf import read_gguf


def test_reads_the_demo_models(gemma_path: Path, smollm_path: Path):
    gemma = read_gguf(gemma_path)
    assert (gemma.architecture, gemma.quantization, gemma.chat_template) == ("gemma3", "Q4_K_M", None)
    assert gemma.context_length == 32768 and gemma.vocab_size == 262144
    assert gemma.expected_size == gemma.file_size
    smollm = read_gguf(smollm_path)
    assert (smollm.architecture, smollm.quantization) == ("llama", "Q4_1")
    assert "im_start" in smollm.chat_template
    assert smollm.expected_size == smollm.file_size


def copy_prefix(source: Path, target: Path, size: int) -> Path:
    with source.open("rb") as src:
        target.write_bytes(src.read(size))
    return target


def test_truncated_data_is_reported_with_sizes(smollm_path: Path, tmp_path: Path):
    cut = copy_prefix(smollm_path, tmp_path / "cut.gguf", 40_000_000)
    with pytest.raises(ModelFileError, match=r"truncated \(40,000,000 of 98,362,432 bytes\)"):
        read_gguf(cut)


def test_truncated_header_is_reported(smollm_path: Path, tmp_path: Path):
    cut = copy_prefix(smollm_path, tmp_path / "cut.gguf", 2000)
    with pytest.raises(ModelFileError, match="truncated inside its GGUF header"):
        read_gguf(cut)


def test_not_a_gguf(tmp_path: Path):
    fake = tmp_path / "model.gguf"
    fake.write_text("<html>404 Not Found</html>")
    with pytest.raises(ModelFileError, match="is not a GGUF file"):
        read_gguf(fake)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ModelFileError, match="does not exist"):
        read_gguf(tmp_path / "nope.gguf")


# -- headers built byte by byte: every lie in a count or length is a ModelFileError that says what is wrong -----


def write_gguf(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    return path


def test_a_hand_built_header_parses(tmp_path: Path):
    name = kv("general.name", STRING, gguf_string("tiny"))
    context = kv("llama.context_length", UINT32, struct.pack("<I", 2048))
    tokens = array("tokenizer.ggml.tokens", STRING, 2, gguf_string("a") + gguf_string("b"))
    info = read_gguf(write_gguf(tmp_path, gguf([ARCH, name, context, tokens]) + bytes(64)))
    assert (info.architecture, info.name, info.context_length, info.vocab_size) == ("llama", "tiny", 2048, 2)
    assert info.metadata["tokenizer.ggml.tokens"] == ["a", "b"]


def test_tensor_data_starts_at_the_aligned_offset_from_the_start_of_the_file(tmp_path: Path):
    """The header here ends 4 bytes past a multiple of 32. The reader once left the 4 magic bytes out of its
    offsets, started the data 32 bytes early, and took a file cut 32 bytes short for complete."""
    bare = gguf([ARCH, kv("x", STRING, gguf_string(""))], [tensor("w", [8])])  # one F32 tensor: 32 bytes of data
    header = gguf([ARCH, kv("x", STRING, gguf_string("-" * ((100 - len(bare)) % 32)))], [tensor("w", [8])])
    assert len(header) % 32 == 4
    data_start = (len(header) + 31) // 32 * 32
    complete = read_gguf(write_gguf(tmp_path, header.ljust(data_start + 32, b"\0")))
    assert complete.expected_size == complete.file_size == data_start + 32
    with pytest.raises(ModelFileError, match=rf"truncated \({data_start + 28:,} of {data_start + 32:,} bytes\)"):
        read_gguf(write_gguf(tmp_path, header.ljust(data_start + 28, b"\0")))


@pytest.mark.parametrize("item_type, name", [(FLOAT64, "FLOAT64"), (UINT32, "UINT32"), (STRING, "STRING")])
@pytest.mark.parametrize("count", [2**40, 2**61, 2**64 - 1])
def test_a_huge_array_count_is_checked_against_the_bytes_left(tmp_path: Path, item_type: int, name: str, count: int):
    """2^40 FLOAT64 values once raised MemoryError, 2^61 OverflowError: the count is now checked before reading."""
    path = write_gguf(tmp_path, gguf([ARCH, array("tokenizer.ggml.scores", item_type, count)]) + bytes(16))
    with pytest.raises(
        ModelFileError, match=rf"array 'tokenizer.ggml.scores' of {count:,} {name} values .* but 16 are left"
    ):
        read_gguf(path)


def test_a_string_longer_than_the_file_is_refused_before_it_is_allocated(tmp_path: Path):
    path = write_gguf(tmp_path, gguf([kv("general.name", STRING, gguf_string("tiny", length=50_000_000))]))
    tracemalloc.start()
    try:
        with pytest.raises(
            ModelFileError, match=r"metadata 'general.name' at byte 56 needs 50,000,000 bytes but 4 are left"
        ):
            read_gguf(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


@pytest.mark.parametrize("length", [2**26 + 1, 2**61, 2**64 - 1])
def test_a_huge_key_length_is_corrupt(tmp_path: Path, length: int):
    path = write_gguf(tmp_path, gguf([gguf_string("k", length=length)]) + bytes(16))
    with pytest.raises(
        ModelFileError, match=rf"corrupt GGUF header \(the name of metadata entry 0 claims {length:,} bytes"
    ):
        read_gguf(path)


def test_a_huge_string_in_a_skipped_array_is_corrupt(tmp_path: Path):
    strings = gguf_string("a") * 70 + struct.pack("<Q", 2**62)
    path = write_gguf(tmp_path, gguf([array("tokenizer.ggml.tokens", STRING, 71, strings)]))
    with pytest.raises(
        ModelFileError, match=r"item 70 of array 'tokenizer.ggml.tokens' claims 4,611,686,018,427,387,904"
    ):
        read_gguf(path)


@pytest.mark.parametrize(
    "entry, problem",
    [
        (kv("general.foo", 13, b"\0" * 8), "metadata 'general.foo' has unknown type 13"),
        (kv("general.foo", 2**32 - 1, b""), "metadata 'general.foo' has unknown type 4294967295"),
        (array("general.foo", 99, 0), "array 'general.foo' holds items of unknown type 99"),
        (array("general.foo", ARRAY, 1, struct.pack("<IQ", UINT32, 0)), "array 'general.foo' holds arrays of arrays"),
    ],
    ids=["type-13", "type-max", "array-of-99", "array-of-arrays"],
)
def test_an_unknown_value_type_names_its_key(tmp_path: Path, entry: bytes, problem: str):
    with pytest.raises(ModelFileError, match=re.escape(problem)):
        read_gguf(write_gguf(tmp_path, gguf([ARCH, entry])))


@pytest.mark.parametrize(
    "cut, what",
    [
        (6, "the version at byte 4 needs 4 bytes but 2 are left"),
        (20, "the metadata count at byte 16 needs 8 bytes but 4 are left"),
        (24, "the metadata table of 1 entries at byte 24 needs 13 bytes but 0 are left"),
        (52, "the type of 'general.architecture' at byte 52 needs 4 bytes but 0 are left"),
    ],
)
def test_a_truncated_header_says_where_it_ends(tmp_path: Path, cut: int, what: str):
    path = write_gguf(tmp_path, gguf([ARCH])[:cut])
    with pytest.raises(ModelFileError, match=f"truncated inside its GGUF header, or corrupt: {re.escape(what)}"):
        read_gguf(path)


@pytest.mark.parametrize("count", [2**63, 2**64 - 1])  # 2^64 - 1 is -1 read as a signed count
def test_a_huge_or_negative_tensor_count_is_refused_at_once(tmp_path: Path, count: int):
    path = write_gguf(tmp_path, gguf([ARCH], tensor_count=count) + bytes(100))
    with pytest.raises(ModelFileError, match=rf"the tensor table of {count:,} tensors .* needs {count * 24:,} bytes"):
        read_gguf(path)


def test_a_huge_metadata_count_is_refused_at_once(tmp_path: Path):
    with pytest.raises(ModelFileError, match=r"the metadata table of 18,446,744,073,709,551,615 entries"):
        read_gguf(write_gguf(tmp_path, gguf([ARCH], kv_count=2**64 - 1)))


@pytest.mark.parametrize(
    "bad_tensor, problem",
    [
        (tensor("w", [], n_dims=2**32 - 1), "tensor 'w' has 4,294,967,295 dimensions; GGML allows 4"),
        (
            tensor("w", [2**62, 2**62, 2, 2]),
            "tensor 'w' has 85,070,591,730,234,615,865,843,651,857,942,052,864 elements",
        ),
    ],
    ids=["2^32-dims", "2^126-elements"],
)
def test_impossible_tensor_shapes_are_corrupt(tmp_path: Path, bad_tensor: bytes, problem: str):
    with pytest.raises(ModelFileError, match=re.escape(problem)):
        read_gguf(write_gguf(tmp_path, gguf([ARCH], [bad_tensor]) + bytes(64)))


@pytest.mark.parametrize(
    "value_type, payload",
    [
        (UINT32, struct.pack("<I", 0)),
        (UINT32, struct.pack("<I", 48)),
        (STRING, gguf_string("32")),
        (FLOAT64, struct.pack("<d", math.nan)),
    ],
    ids=["zero", "48", "string", "nan"],
)
def test_a_bad_alignment_is_corrupt(tmp_path: Path, value_type: int, payload: bytes):
    """An alignment of 0 once divided by zero; a string one raised ValueError."""
    path = write_gguf(tmp_path, gguf([ARCH, kv("general.alignment", value_type, payload)]))
    with pytest.raises(ModelFileError, match=r"general.alignment is .*, not a power of two"):
        read_gguf(path)


def test_metadata_of_the_wrong_type_reads_as_unknown(tmp_path: Path):
    """general.file_type as text once raised ValueError from .quantization, wherever the app showed it."""
    entries = [
        kv("general.architecture", UINT32, struct.pack("<I", 7)),
        kv("general.file_type", STRING, gguf_string("Q4_K_M")),
        kv("unknown.context_length", STRING, gguf_string("lots")),
        kv("general.name", FLOAT64, struct.pack("<d", math.inf)),
    ]
    info = read_gguf(write_gguf(tmp_path, gguf(entries) + bytes(32)))
    assert (info.architecture, info.quantization, info.context_length, info.name) == ("unknown", None, None, None)


# -- issue 17: every prefix of a real header, tensor tables that lie, counts that size lists elsewhere -----------


def test_every_prefix_of_a_real_header_is_a_model_file_error(smollm_path: Path, tmp_path: Path):
    """Cut anywhere in the header (counts, keys, the vocabulary, the tensor table), the file is one clear
    ModelFileError to read_gguf and to the export's end-of-turn reader: never struct.error, MemoryError, …"""
    from gguf import GGUFReader

    from tuitune.export import end_of_turn_tokens

    header_end = GGUFReader(smollm_path).data_offset  # where the tensor data starts: the header is all before it
    cuts = sorted(
        {*range(0, 400), *range(400, header_end, header_end // 25), *range(header_end - 700, header_end + 1, 9)},
        reverse=True,  # each cut shortens the same file
    )
    path = copy_prefix(smollm_path, tmp_path / "cut.gguf", header_end)
    with path.open("r+b") as handle:
        for index, cut in enumerate(cuts):
            handle.truncate(cut)
            handle.flush()
            with pytest.raises(ModelFileError):
                read_gguf(path)
            if index % 10 == 0:  # it stops after the metadata: a cut tensor table still gives its tokens
                with contextlib.suppress(ModelFileError):
                    assert isinstance(end_of_turn_tokens(path), list)


@pytest.mark.parametrize(
    "bad_tensor, problem",
    [
        (tensor("w", [2**64 - 1, 0]), "tensor 'w' has a dimension of 18,446,744,073,709,551,615"),
        (tensor("w", [8], offset=4), "tensor 'w' is at data offset 4, off the 32-byte grid"),
        (tensor("w", [8], offset=2**64 - 1), "tensor 'w' is at data offset 18,446,744,073,709,551,615"),
        (tensor("w", [33], tensor_type=2), "tensor 'w' has 33 elements, not a multiple of its type's block of 32"),
    ],
    ids=["dim-2^64-1-times-0", "offset-4", "offset-2^64-1", "33-in-q4_0"],
)
def test_tensor_tables_llama_cpp_refuses_are_corrupt(tmp_path: Path, bad_tensor: bytes, problem: str):
    """These once read as a model (a dimension of -1 times 0 is no elements) or as a truncated download."""
    with pytest.raises(ModelFileError, match=r"corrupt GGUF header \(" + re.escape(problem)):
        read_gguf(write_gguf(tmp_path, gguf([ARCH], [bad_tensor]) + bytes(64)))


@pytest.mark.parametrize(
    "entries, tensors, layers",
    [
        ([kv("llama.block_count", UINT32, struct.pack("<I", 2**32 - 1))], [], "4,294,967,295"),
        ([kv("llama.block_count", 10, struct.pack("<Q", 2**40))], [], "1,099,511,627,776"),
        ([kv("llama.block_count", 10, struct.pack("<Q", 2**63))], [], "9,223,372,036,854,775,808"),
        ([], [tensor("blk.99999999999.attn_q.weight", [32])], "100,000,000,000"),
    ],
    ids=["block_count-2^32-1", "block_count-2^40", "block_count-2^63", "blk-10^11"],
)
def test_a_huge_layer_count_is_refused_before_the_offload_planner_sizes_lists(
    tmp_path: Path, entries: list[bytes], tensors: list[bytes], layers: str
):
    """``[0] * layers`` raised MemoryError at 2^40 layers and OverflowError at 2^63, wherever a model loaded."""
    from tuitune.engines.offload import footprint_from_gguf, layer_count

    data = gguf([ARCH, *entries], tensors)
    info = read_gguf(write_gguf(tmp_path, data.ljust((len(data) + 31) // 32 * 32 + 128, b"\0")))
    for planner in (layer_count, footprint_from_gguf):
        with pytest.raises(ModelFileError, match=rf"says {layers} layers; llama.cpp allows 512"):
            planner(info)
