"""Model files and catalog entries that several test modules build: the Hub's SmolLM2 repo, a minimal GGUF."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

from tests.support.hub_server import Repo
from tuitune.catalog import ModelEntry, Source

SMOL_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "smollm2-135m-instruct-q4_1.gguf"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def hf_entry(repo: str = SMOL_REPO, file: str | None = SMOL_FILE, pattern: str | None = None) -> ModelEntry:
    source = Source(kind="hf", repo=repo, file=file, pattern=pattern)
    return ModelEntry(id="hub-model", name="hub model", kind="chat", family="llama", mode="chat", source=source)


def write_user_catalog(config: Path, entry_lines: str) -> None:
    config.mkdir(parents=True, exist_ok=True)
    (config / "models.toml").write_text(entry_lines, encoding="utf-8")


SMOL_ENTRY = f"""
[[model]]
id = "smol-hub"
name = "SmolLM2 135M Instruct (Hub)"
kind = "chat"
family = "llama"
source = {{ hf = "{SMOL_REPO}", file = "{SMOL_FILE}" }}
"""


def tiny_gguf(path: Path) -> Path:
    """The smallest file read_gguf accepts: a v3 header with no tensors and no metadata, padded to 32 bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"GGUF" + struct.pack("<IQQ", 3, 0, 0)).ljust(32, b"\0"))
    return path


COMMIT = Repo({}).commit


def link_or_copy(source: Path, target: Path) -> Path:
    """The big demo model into a fake store as a hard link (no link a scanner could see leaving the store)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def ollama_manifest(root: Path, name: str, digest: object, *, layer_type: str = "application/vnd.ollama.image.model"):
    registry, namespace, model, tag = name.split("/")
    path = root / "manifests" / registry / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    layers = [
        {"mediaType": layer_type, "digest": digest, "size": 1},
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "e" * 64, "size": 1},
    ]
    path.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))
    return path
