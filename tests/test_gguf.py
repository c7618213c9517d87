"""GGUF header reading: real models parse; missing, truncated and foreign files get a clear reason."""

from __future__ import annotations

from pathlib import Path

import pytest

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
