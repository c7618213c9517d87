"""`tuitune export NAME --format FORMAT --out DIR`: a finetune for llama.cpp / LM Studio, Ollama or PEFT tools."""

from __future__ import annotations

import argparse
from pathlib import Path

from tuitune.safe_text import inert

USES = {
    "lora-gguf": "llama.cpp --lora / LM Studio (README.txt says which base it needs)",
    "ollama": "`ollama create NAME -f Modelfile` in that folder",
    "peft": "transformers (PeftModel.from_pretrained) and vLLM --lora-modules",
}


def cmd_export(args: argparse.Namespace) -> int:
    """Check the format before looking anything up, so a typo is reported without loading the catalog."""
    from tuitune.errors import TuituneError
    from tuitune.export import FORMATS, export, find_finetune

    if args.format not in FORMATS:
        raise TuituneError(f"unknown export format '{args.format}': use one of {', '.join(FORMATS)}")
    if args.copy and args.format != "ollama":
        raise TuituneError("--copy applies to --format ollama (the other formats always copy their files)")
    tune = find_finetune(args.name)
    out, notes = export(tune, args.format, Path(args.out).expanduser().absolute(), copy=args.copy)
    print(inert(f"wrote {out} ({args.format}) for {USES[args.format]}"))
    for note in notes:
        print(inert(f"note: {note}"))
    return 0
