"""`tuitune export NAME --format FORMAT --out DIR`: a finetune for llama.cpp / LM Studio, Ollama or PEFT tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuitune.safe_text import inert

USES = {
    "lora-gguf": "llama.cpp --lora / LM Studio (README.txt says which base it needs)",
    "merged-gguf": "llama.cpp -m / LM Studio / Ollama FROM: one standalone model file",
    "ollama": "`ollama create NAME -f Modelfile` in that folder",
    "peft": "transformers (PeftModel.from_pretrained) and vLLM --lora-modules",
}


def _progress(message: str) -> None:
    print(inert(message), file=sys.stderr, flush=True)


def cmd_export(args: argparse.Namespace) -> int:
    """Check the format and options before looking anything up, so a typo is reported without loading the catalog."""
    from tuitune.export import check_options, export, find_finetune

    quant = getattr(args, "quant", None)
    scale = getattr(args, "adapter_scale", None)
    check_options(args.format, args.copy, quant, scale)
    tune = find_finetune(args.name)
    out, notes = export(tune, args.format, Path(args.out).expanduser().absolute(), copy=args.copy, quant=quant,
                        adapter_scale=scale, progress=_progress)  # fmt: skip
    print(inert(f"wrote {out} ({args.format}) for {USES[args.format]}"))
    for note in notes:
        print(inert(f"note: {note}"))
    return 0
