"""`tuitune models`, `pull`, `rm` and `paths`: the catalog and the files behind it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from tuitune.cli.common import human_size
from tuitune.errors import TuituneError
from tuitune.safe_text import inert

if TYPE_CHECKING:
    from tuitune.catalog import Catalog


def cmd_models(args: argparse.Namespace) -> int:
    from tuitune.catalog import load_catalog
    from tuitune.safe_text import safe_json
    from tuitune.sources import is_installed

    catalog = load_catalog()
    rows = []
    for entry in catalog:
        rows.append(
            {
                "id": entry.id,
                "name": entry.name,
                "kind": entry.kind,
                "family": entry.family,
                "mode": entry.mode,
                "pair": entry.pair,
                "source": entry.source.describe() if entry.source else entry.endpoint.get("base_url", entry.base),
                "size": entry.size,
                "quant": entry.quant,
                "installed": is_installed(entry),
                "license": entry.license,
            }
        )
    found = _found_rows(catalog)
    if args.json:
        print(safe_json({"catalog_files": [str(p) for p in catalog.files], "models": rows, "found": found}, indent=2))
        return 0
    header = ("ID", "KIND", "FAMILY", "PAIR", "SOURCE", "SIZE", "INSTALLED")
    table = [header] + [
        (r["id"], r["kind"], r["family"], r["pair"] or "-", r["source"] or "-", human_size(r["size"]),
         "yes" if r["installed"] else "no")
        for r in rows
    ]  # fmt: skip
    table = [tuple(inert(str(cell)) for cell in row) for row in table]  # a user catalog is text from anywhere
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if found:
        print(f"\nfound on disk ({len(found)}; add one with: tuitune models add REFERENCE --kind base|chat)")
        _print_table(
            ("SOURCE", "REFERENCE", "SIZE", "QUANT", "TEMPLATE", "PROBLEM"),
            [(r["source"], r["reference"], human_size(r["size"]), r["quant"] or "-",
              "yes" if r["chat_template"] else "no", r["problem"] or "-") for r in found],
        )  # fmt: skip
    print(f"\ncatalog: {inert(', '.join(str(p) for p in catalog.files))}", file=sys.stderr)
    return 0


def _print_table(header: tuple[str, ...], rows: list[tuple]) -> None:
    """Columns padded to their widest cell; every cell made inert (file names and manifests are anyone's text)."""
    table = [tuple(inert(str(cell)).replace("\n", "\u240a") for cell in row) for row in [header, *rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _found_rows(catalog: Catalog) -> list[dict]:
    """Models found in the HF cache, Ollama and LM Studio and not already in ``catalog``, as table rows."""
    from tuitune.discovery import discover
    from tuitune.found_models import unlisted

    return [
        {"source": model.source, "reference": model.reference, "path": str(model.path), "size": model.size,
         "quant": model.quantization, "architecture": model.architecture, "chat_template": model.has_chat_template,
         "shards": model.shards, "problem": model.problem}
        for model in unlisted(discover(), catalog)
    ]  # fmt: skip


def cmd_models_add(args: argparse.Namespace) -> int:
    """`models add REFERENCE`: a user catalog entry whose source is the found file's path (nothing is copied)."""
    from tuitune.found_models import add_found

    added = add_found(args.reference, args.kind, model_id=args.id, pair=args.pair, name=args.name)
    model_id = inert(added.id)
    print(f"added '{model_id}' ({args.kind}) to {inert(str(added.catalog_file))}: {inert(str(added.model.path))}")
    print(f"try: tuitune chat {model_id}")
    return 0


class PullProgress:
    """A progress bar with bytes, speed and ETA on a terminal; a plain line every 10 % otherwise."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.last_step = -1
        self.phase = ""

    def __call__(self, progress) -> None:
        from tuitune.downloads import human_bytes

        eta = progress.eta_s
        eta_text = f"ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else "ETA ?"
        done = f"{human_bytes(progress.done)} / {human_bytes(progress.total)}"
        if progress.phase == "checking":
            line = f"checking the {human_bytes(progress.done)} kept from an earlier pull…"
        elif progress.phase in ("verifying", "done"):
            line = f"{done}  verifying sha256…" if progress.phase == "verifying" else f"{done}  done"
        else:
            line = f"{done}  {human_bytes(progress.speed)}/s  {eta_text}"
        fraction = progress.fraction
        if self.tty:
            width = 24
            filled = int(width * (fraction or 0))
            bar = "█" * filled + "·" * (width - filled)
            percent = f"{fraction * 100:3.0f}%" if fraction is not None else "  ?%"
            self.stream.write(f"\r{percent} {bar} {line}\x1b[K")
            if progress.phase == "done":
                self.stream.write("\n")
            self.stream.flush()
            return
        step = int((fraction or 0) * 10)
        if step != self.last_step or progress.phase != self.phase:
            self.last_step, self.phase = step, progress.phase
            percent = f"{fraction * 100:.0f}% " if fraction is not None else ""
            print(f"{percent}{line}", file=self.stream, flush=True)


def _entry_for_repo_file(args: argparse.Namespace, catalog):
    """`pull REPO FILE`: the user catalog entry for that file (existing, or one to add after the pull)."""
    import re

    from tuitune.catalog import ModelEntry, Source

    repo, filename = args.targets
    if repo.count("/") != 1:
        raise TuituneError(f"'{repo}' is not a Hub repo id (org/name)")
    if not filename.endswith(".gguf"):
        raise TuituneError(f"'{filename}' is not a .gguf file; tuitune runs GGUF models")
    model_id = args.name or re.sub(r"[^a-z0-9._-]+", "-", filename.removesuffix(".gguf").lower()).strip("-.")
    source = Source(kind="hf", repo=repo, file=filename, revision=args.revision or "main")
    if model_id in catalog:
        existing = catalog.get(model_id)
        if existing.source == source:
            return existing, False
        raise TuituneError(
            f"a model with id '{model_id}' is already in the catalog ({existing.origin}); choose another --name"
        )
    kind = args.kind or ("chat" if re.search(r"chat|instruct|(^|[-_.])it([-_.]|$)", filename, re.I) else "base")
    mode = "chat" if kind == "chat" else "raw"
    entry = ModelEntry(id=model_id, name=model_id, kind=kind, family="unknown", mode=mode, source=source)
    return entry, True


def _pull_reference(reference, args: argparse.Namespace) -> int:
    """`pull ORG/REPO[:QUANT]`: the file the reference means, into the HF cache; the catalog is left as it is."""
    from tuitune.downloads import human_bytes, pull_model
    from tuitune.references import cached_file, hub_entry

    if args.name or args.revision or args.kind:
        raise TuituneError(
            f"--name, --revision and --kind go with `pull REPO FILE`; {inert(reference.text)} runs as it is "
            "(`tuitune models add` puts a downloaded model in your catalog)"
        )
    path = cached_file(reference)
    if path is not None:
        print(f"{inert(reference.text)} is already downloaded: {inert(str(path))}")
        return 0
    entry = hub_entry(reference)
    progress = None if args.quiet else PullProgress(sys.stderr)
    try:
        path = pull_model(entry, progress=progress)
    except KeyboardInterrupt:
        raise TuituneError(
            f"pull of {inert(reference.text)} interrupted; the bytes so far are kept: pull again to resume"
        ) from None
    print(f"{inert(reference.text)}: {inert(str(path))} ({human_bytes(path.stat().st_size)}, sha256 verified)")
    print(f"run it with: tuitune chat {inert(reference.text)}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from tuitune.catalog import add_user_entry, load_catalog
    from tuitune.downloads import human_bytes, pull_model
    from tuitune.sources import hf_local_file

    catalog = load_catalog()
    if len(args.targets) == 1 and args.targets[0] not in catalog:
        from tuitune.references import parse_reference

        reference = parse_reference(args.targets[0])
        if reference is not None:
            return _pull_reference(reference, args)
    if len(args.targets) == 1:
        if args.name or args.revision or args.kind:
            raise TuituneError("--name, --revision and --kind go with `pull REPO FILE`")
        entry, new = catalog.get(args.targets[0]), False
        if entry.source is None or entry.source.kind != "hf":
            where = entry.source.describe() if entry.source else entry.kind
            raise TuituneError(f"model '{entry.id}' does not come from the Hub (source: {where})")
    elif len(args.targets) == 2:
        entry, new = _entry_for_repo_file(args, catalog)
    else:
        raise TuituneError("usage: tuitune pull MODEL_ID | tuitune pull REPO_ID FILENAME")
    if hf_local_file(entry) is not None and not new:
        print(f"{inert(entry.id)} is already downloaded: {inert(str(hf_local_file(entry)))}")
        return 0
    progress = None if args.quiet else PullProgress(sys.stderr)
    try:
        path = pull_model(entry, progress=progress)
    except KeyboardInterrupt:
        raise TuituneError(f"pull of {entry.id} interrupted; the bytes so far are kept: pull again to resume") from None
    if new:
        from tuitune.gguf import read_gguf

        info = read_gguf(path)
        fields = {"id": entry.id, "name": entry.name, "kind": entry.kind, "family": info.architecture or "unknown",
                  "mode": entry.mode, "size": info.file_size}  # fmt: skip
        if info.quantization:
            fields["quant"] = info.quantization
        source = {"hf": entry.source.repo, "file": entry.source.file}
        if entry.source.revision != "main":
            source["revision"] = entry.source.revision
        fields["source"] = source
        user = add_user_entry(fields)
        print(f"added '{inert(entry.id)}' ({entry.kind}) to {inert(str(user))}")
    print(f"{inert(entry.id)}: {inert(str(path))} ({human_bytes(path.stat().st_size)}, sha256 verified)")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from tuitune.catalog import load_catalog
    from tuitune.downloads import human_bytes, remove_model

    entry = load_catalog().get(args.model)
    model_id = inert(entry.id)
    removed = remove_model(entry)
    if not removed:
        print(f"nothing downloaded for {model_id}")
        return 0
    for path, size in removed:
        print(f"removed {inert(str(path))} ({human_bytes(size)})")
    print(f"{model_id} is no longer installed; its catalog entry stays (`tuitune pull {model_id}` gets it back)")
    return 0


def cmd_paths(args: argparse.Namespace) -> int:
    from tuitune.catalog import shipped_catalog_path
    from tuitune.paths import app_dirs

    dirs = app_dirs()
    rows = [
        ("catalog (shipped)", shipped_catalog_path()),
        ("catalog (yours)", dirs.user_catalog),
        ("config", dirs.config),
        ("data", dirs.data),
        ("cache", dirs.cache),
        ("logs", dirs.logs),
    ]
    for label, path in rows:
        print(f"{label:18} {inert(str(path))}")
    return 0
