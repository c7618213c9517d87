"""The argparse parser: every command, its flags and help text, and the function that runs it."""

from __future__ import annotations

import argparse

from tuitune import __version__
from tuitune.cli.chat import cmd_chat, cmd_compare
from tuitune.cli.doctor import cmd_doctor
from tuitune.cli.evaluate import EVAL_MODES, cmd_eval
from tuitune.cli.export import cmd_export
from tuitune.cli.leaderboard import SOURCE_CHOICES, bootstrap_rounds, cmd_leaderboard
from tuitune.cli.models import cmd_models, cmd_models_add, cmd_paths, cmd_pull, cmd_rm
from tuitune.cli.remote import cmd_endpoint_add, cmd_endpoint_test, cmd_serve
from tuitune.cli.runs import cmd_runs
from tuitune.cli.training import cmd_data_check, cmd_export_adapter, cmd_train
from tuitune.errors import TuituneError

DEMO_PAIR = "gemma-3-270m,smollm2-135m-instruct"
DOG_PROMPT = "Tell me how to train my dog to sit"


def _add_sampling_flags(
    parser: argparse.ArgumentParser, title: str, max_tokens_help: str, temperature_help: str
) -> None:
    group = parser.add_argument_group(title)
    group.add_argument("--max-tokens", type=int, metavar="N", help=max_tokens_help)
    group.add_argument("--temperature", type=float, metavar="T", help=temperature_help)
    group.add_argument("--top-p", type=float, metavar="P")
    group.add_argument("--top-k", type=int, metavar="K")
    group.add_argument("--min-p", type=float, metavar="P")
    group.add_argument("--repeat-penalty", type=float, metavar="R", help="default 1.0 (off)")
    group.add_argument("--seed", metavar="S", help="integer, or 'random' for a fresh seed per answer")
    group.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")


def _add_generation_flags(parser: argparse.ArgumentParser) -> None:
    _add_sampling_flags(parser, "sampling (defaults: temperature 0.7, top-p 0.95, top-k 40, min-p 0.05, seed 42)",
                        "answer length limit (default 256)", "0 = greedy, deterministic")  # fmt: skip
    parser.add_argument("--system", metavar="TEXT", help="system prompt (chat mode)")
    parser.add_argument("--ctx", type=int, metavar="N", help="context size in tokens (default: model's, up to 4096)")
    parser.add_argument("--json", action="store_true", help="print one JSON result instead of text")


def _adapter_scale(text: str) -> float:
    from tuitune.engines.llama import check_adapter_scale

    try:
        return check_adapter_scale(text)
    except TuituneError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _adapter_scales(text: str) -> list[float]:
    """``--adapter-scale 1`` or ``0,0.5,1`` (a sweep): each value checked like a single scale."""
    values = [part.strip() for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give a number from 0 to 1, or several: 0,0.5,1")
    return [_adapter_scale(value) for value in values]


def _add_adapter_scale_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--adapter-scale", type=_adapter_scale, metavar="S",
        help="LoRA strength of a finetuned model: 0 = its base … 1 = the finetune (default 1)",
    )  # fmt: skip


def _gpu_layers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of layers: give a whole number ≥ 0 (0 = the CPU)")
    return value


def _add_gpu_layers_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gpu-layers", type=_gpu_layers, metavar="N",
        help="at most N layers on the GPU, 0 = CPU only (default: the catalog's gpu_layers, else every layer that "
        "fits in free GPU memory; no effect on a CPU build)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuitune",
        description="See what finetuning does to a language model: base vs chat, side by side.",
        epilog=f'Try: tuitune compare "{DOG_PROMPT}" --models {DEMO_PAIR}',
    )
    parser.add_argument("--version", action="version", version=f"tuitune {__version__}")
    parser.add_argument("--compare", metavar="A,B", help="open the TUI's Compare screen with these models")
    parser.add_argument("--prompt", metavar="TEXT", help="with --compare: send this prompt at start")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    models = commands.add_parser(
        "models", help="list the model catalog, and GGUF models found in the HF cache, Ollama and LM Studio",
    )  # fmt: skip
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)
    models_commands = models.add_subparsers(dest="models_command", metavar="{add}")
    models_add = models_commands.add_parser(
        "add", help="add a model found on disk to your catalog (its file stays where it is)",
        description="REFERENCE is one `tuitune models` lists under 'found on disk', e.g. ollama:llama3.2:1b, "
        "or ORG/REPO[:QUANT] for a GGUF in the Hugging Face cache.",
    )  # fmt: skip
    models_add.add_argument("reference", metavar="REFERENCE")
    models_add.add_argument("--kind", metavar="base|chat", help="a base (raw completion) or a chat model (required)")
    models_add.add_argument("--id", metavar="ID", help="catalog id (default: from the file name)")
    models_add.add_argument("--pair", metavar="CATALOG_ID", help="the model to compare it with by default")
    models_add.add_argument("--name", metavar="TEXT", help="name shown in lists (default: the id)")
    models_add.set_defaults(func=cmd_models_add)

    chat = commands.add_parser("chat", help="chat with one model (one answer, or a REPL without PROMPT)")
    chat.add_argument("model", metavar="MODEL", help="catalog id, ORG/REPO[:QUANT] in the HF cache, or a .gguf path")
    chat.add_argument("prompt", metavar="PROMPT", nargs="?")
    chat.add_argument("--mode", choices=("raw", "chat"), help="raw completion or chat template (default: catalog's)")
    _add_generation_flags(chat)
    _add_adapter_scale_flag(chat)
    _add_gpu_layers_flag(chat)
    chat.set_defaults(func=cmd_chat)

    compare = commands.add_parser("compare", help="the same prompt on several models at once")
    compare.add_argument("prompt", metavar="PROMPT", nargs="?")
    compare.add_argument("--models", metavar="A,B[,C,D]", required=True, help="ids, ORG/REPO[:QUANT] or .gguf")
    compare.add_argument(
        "--mode", choices=("auto", "raw", "chat", "both"), default="auto",
        help="auto: each model's default; both: every model raw and templated (the lab's 2×2)",
    )  # fmt: skip
    compare.add_argument("--suite", metavar="FILE", help="run every prompt of a suite TOML file")
    _add_generation_flags(compare)
    _add_adapter_scale_flag(compare)
    _add_gpu_layers_flag(compare)
    compare.set_defaults(func=cmd_compare)

    evaluate = commands.add_parser(
        "eval", help="score models on a suite's checks, or by held-out loss on a dataset",
        description="--suite: every prompt on every model (greedy by default), each answer scored by the suite's "
        "checks; a scoreboard and a per-prompt matrix. --data: mean loss and perplexity of a dataset's reference "
        "replies under each model, computed by llama.cpp. Failed checks are results: the exit code is 0 unless a "
        "model could not run.",
    )  # fmt: skip
    evaluate.add_argument("--suite", metavar="FILE", help="a suite TOML file with checks (e.g. suites/identity.toml)")
    evaluate.add_argument("--data", metavar="FILE", help="held-out loss on a dataset in any format train accepts")
    evaluate.add_argument("--models", metavar="A,B[,…]", required=True, help="ids, ORG/REPO[:QUANT] or .gguf")
    evaluate.add_argument(
        "--adapter-scale", type=_adapter_scales, metavar="S|S1,S2,…",
        help="LoRA strength of the finetuned models; several values: one column per strength (a sweep)",
    )  # fmt: skip
    evaluate.add_argument("--repeat", type=int, metavar="N", help="answers per prompt, repeat i with seed + i (1)")
    evaluate.add_argument("--mode", choices=EVAL_MODES, default="auto", help="auto: each model's default mode")
    _add_sampling_flags(evaluate, "sampling (defaults: greedy, 200 tokens, seed 42)",
                        "answer length limit (default 200)", "default 0 (greedy, deterministic)")  # fmt: skip
    evaluate.add_argument("--json", action="store_true", help="everything as JSON, the answers included")
    evaluate.add_argument("--format", choices=("md", "csv"), help="Markdown or CSV (no answers) instead of text")
    evaluate.add_argument("--out", metavar="FILE", help="write the report to FILE (Markdown unless --json/--format)")
    judge = evaluate.add_argument_group("judge (a model grades the suite's judge_rubric checks and pairs of columns)")
    judge.add_argument("--judge", metavar="MODEL", help="the judge: a catalog id, endpoint, ORG/REPO[:QUANT] or .gguf")
    judge.add_argument("--judge-pairs", metavar="A,B", help="compare these two columns (else: the suite's [judge])")
    judge.add_argument("--judge-temperature", type=float, metavar="T", help="the judge's temperature (default 0)")
    judge.add_argument("--judge-max-tokens", type=int, metavar="N", help="the judge's reply limit (default 128)")
    judge.add_argument("--judge-timeout", type=float, metavar="S", help="seconds per judge call (default 120)")
    judge.add_argument(
        "--judge-free",
        action="store_true",
        default=None,
        help="let the judge reply in free text (default: a grammar admits only the verdict JSON)",
    )
    evaluate.add_argument(
        "--compare-to", metavar="last|RUN_ID",
        help="compare with a kept run: last (this suite's latest) or an id `tuitune runs` lists",
    )  # fmt: skip
    _add_gpu_layers_flag(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    runs = commands.add_parser("runs", help="training runs (local and on a service), then the kept eval runs")
    runs.add_argument("--json", action="store_true")
    runs.add_argument("--limit", type=int, metavar="N", help="only the N newest runs")
    runs.add_argument(
        "--training",
        action="store_true",
        help="training runs only, local and on a service (--json: one object per run)",
    )
    runs.set_defaults(func=cmd_runs)
    runs_commands = runs.add_subparsers(dest="runs_command", metavar="{show}")
    runs_show = runs_commands.add_parser("show", help="one kept run: settings, scoreboard and matrix")
    runs_show.add_argument("id", type=int, metavar="ID")
    runs_show.add_argument("--json", action="store_true", help="the run's settings and its whole results JSON")
    runs_show.set_defaults(func=cmd_runs)

    export = commands.add_parser(
        "export-adapter", help="convert a PEFT LoRA adapter directory into a llama.cpp adapter .gguf",
        description="Writes the LoRA GGUF llama.cpp attaches to MODEL's GGUF. DoRA, per-layer rank/alpha, "
        "modules_to_save and trained biases have no llama.cpp equivalent and are refused.",
    )  # fmt: skip
    export.add_argument("peft_dir", metavar="PEFT_DIR", help="directory with adapter_config.json + safetensors")
    export.add_argument("--base", required=True, metavar="MODEL", help="catalog id or .gguf the adapter was trained on")
    export.add_argument("--out", required=True, metavar="FILE.gguf", help="where to write the adapter")
    export.set_defaults(func=cmd_export_adapter)

    bundle = commands.add_parser(
        "export", help="write a finetune for llama.cpp / LM Studio, Ollama, or transformers and vLLM",
        description="Formats: lora-gguf (the adapter GGUF + README.txt naming its base), merged-gguf (the base with "
        "the adapter merged in: one standalone GGUF, f16 or quantized by llama.cpp), ollama (a Modelfile: FROM "
        "the base GGUF, ADAPTER the adapter, stop tokens from the GGUF; with --quant FROM a merged GGUF beside "
        "it), peft (adapter_config.json + safetensors). DIR must not exist; it appears only when the export is "
        "complete.",
    )  # fmt: skip
    bundle.add_argument("name", metavar="NAME", help="a finetuned catalog model (kind finetuned)")
    bundle.add_argument("--format", required=True, metavar="FORMAT", help="lora-gguf, merged-gguf, ollama or peft")
    bundle.add_argument("--out", required=True, metavar="DIR", help="new folder to write")
    bundle.add_argument("--copy", action="store_true",
                        help="ollama: copy the base and adapter GGUFs next to the Modelfile (default: absolute "
                        "paths to the existing files, no multi-GB copy)")  # fmt: skip
    bundle.add_argument("--quant", metavar="TYPE",
                        help="merged-gguf (default f16) and ollama: store the merged model as f16, q8_0, q6_k, "
                        "q5_k_m, q4_k_m, q4_0, … (llama.cpp's quantizer)")  # fmt: skip
    bundle.add_argument("--adapter-scale", metavar="S",
                        help="merged model: merge the adapter at strength S, 0 (the base) … 1 (default)")  # fmt: skip
    bundle.set_defaults(func=cmd_export)

    data = commands.add_parser("data", help="check a training dataset")
    data_commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    check = data_commands.add_parser("check", help="report every problem with its line, and token counts")
    check.add_argument("file", metavar="FILE")
    check.add_argument("--base", metavar="MODEL", help="count tokens with this model's tokenizer and template")
    check.add_argument("--max-length", type=int, default=512, metavar="N", help="tokens per example (default 512)")
    check.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"),
                       help="with --base: plan the memory of training there (default auto)")  # fmt: skip
    check.add_argument("--quantize", choices=("none", "4bit"), help="with --base: plan a 4-bit (QLoRA) run")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_data_check)

    train = commands.add_parser("train", help="LoRA-finetune a catalog model (runs in a subprocess, resumable)")
    train.add_argument("--name", metavar="NAME",
                       help="run name and the finetuned model's id (a recipe preset gives a default)")  # fmt: skip
    train.add_argument("--preset", metavar="NAME",
                       help="hyper-parameters (and, for a recipe like instruct-demo, base and data) from "
                       "presets.toml; default: the base model's family preset; none: the plain defaults. Flags "
                       "override it")  # fmt: skip
    train.add_argument("--base", metavar="MODEL", help="catalog id of the model to finetune")
    train.add_argument("--data", metavar="FILE", help="chat, prompt/completion or alpaca JSONL/JSON")
    train.add_argument("--val", metavar="FILE", help="validation set (else --val-split of the data)")
    train.add_argument("--val-split", type=float, metavar="F", help="share of the data held out (default 0)")
    train.add_argument("--epochs", type=float, metavar="N", help="default 3 (or the preset's)")
    train.add_argument("--max-steps", type=int, metavar="N")
    train.add_argument("--lr", type=float, metavar="LR", help="default: the preset's, else 1e-3")
    train.add_argument("--rank", type=int, metavar="R", help="LoRA rank (default: the preset's, else 16)")
    train.add_argument("--alpha", type=float, metavar="A", help="LoRA alpha (default: the preset's, else 32)")
    train.add_argument("--dropout", type=float, metavar="P", help="LoRA dropout (default 0.05)")
    train.add_argument("--target-modules", metavar="A,B",
                       help="default: the preset's, else attention (+ MLP for gemma3)")  # fmt: skip
    train.add_argument("--batch-size", type=int, metavar="N", help="default 8")
    train.add_argument("--grad-accum", type=int, metavar="N", help="default 1")
    train.add_argument("--max-length", type=int, metavar="N", help="tokens per example (default 512)")
    train.add_argument("--neftune-alpha", type=float, metavar="A", help="NEFTune noise (off by default)")
    train.add_argument("--seed", type=int, metavar="S", help="default 42")
    train.add_argument("--weights", choices=("auto", "gguf", "hub"),
                       help="start from the dequantized GGUF, or the catalog's train_weights safetensors repo "
                       "(downloaded from the Hub); auto (default) uses that repo once downloaded")  # fmt: skip
    train.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps (default 10)")
    train.add_argument("--eval-every", type=int, metavar="N", help="validation loss every N steps (default 10)")
    train.add_argument("--early-stop", type=int, metavar="PATIENCE",
                       help="stop when the validation loss has not improved for PATIENCE evaluations, and export "
                       "the best checkpoint (needs --val or --val-split)")  # fmt: skip
    train.add_argument("--min-delta", type=float, metavar="D",
                       help="with --early-stop: an improvement lowers the best by more than D (default 0)")  # fmt: skip
    train.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"),
                       help="auto (default): cuda, then mps, then cpu; bf16 on a GPU, fp32 on the CPU")  # fmt: skip
    train.add_argument("--quantize", choices=("none", "4bit"),
                       help="4bit: QLoRA, frozen weights in bitsandbytes nf4 (a quarter of bf16)")  # fmt: skip
    train.add_argument("--grad-checkpoint", action="store_true",
                       help="recompute activations in the backward pass: less memory for long sequences and big "
                       "models, about a third slower")  # fmt: skip
    train.add_argument("--nproc", type=int, metavar="N",
                       help="processes under torchrun (DDP: one per GPU; gloo on the CPU); the global batch is "
                       "split across them")  # fmt: skip
    train.add_argument("--prepare", action="store_true",
                       help="check everything and write the run's config, but start nothing (for torchrun across "
                       "machines: docs/training.md)")  # fmt: skip
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run NAME from its last checkpoint (a job on a service: follow it again)",
    )
    train.add_argument(
        "--remote",
        metavar="ENDPOINT",
        help="train on a fine-tuning service (an OpenAI-compatible endpoint in the catalog): --base is "
        "the service's model name; takes --epochs, --batch-size, --lr-multiplier, --suffix",
    )
    train.add_argument("--lr-multiplier", type=float, metavar="X", help="--remote: scales the service's learning rate")
    train.add_argument("--suffix", metavar="S", help="--remote: added to the fine-tuned model's name")
    train.add_argument("--cancel", action="store_true", help="cancel the job of the remote run NAME on its service")
    train.set_defaults(func=cmd_train)

    pull = commands.add_parser(
        "pull", help="download a model from the Hugging Face Hub (resumes an interrupted pull)",
        description="tuitune pull MODEL_ID; tuitune pull ORG/REPO[:QUANT] (llama.cpp's -hf form, into the HF cache); "
        "or tuitune pull REPO_ID FILENAME to add a user catalog entry. "
        "HF_ENDPOINT picks the Hub, HF_TOKEN (or `hf auth login`) is sent for gated repos.",
    )  # fmt: skip
    pull.add_argument("targets", nargs="+", metavar="MODEL_ID | ORG/REPO[:QUANT] | REPO_ID FILENAME")
    pull.add_argument("--revision", metavar="R", help="branch, tag or commit (default main)")
    pull.add_argument("--name", metavar="ID", help="catalog id for a REPO FILE pull (default: from the file name)")
    pull.add_argument("--kind", choices=("base", "chat"), help="for a REPO FILE pull (default: guessed from the name)")
    pull.add_argument("--quiet", action="store_true", help="no progress output")
    pull.set_defaults(func=cmd_pull)

    rm = commands.add_parser("rm", help="delete a downloaded model's file (the catalog entry stays)")
    rm.add_argument("model", metavar="MODEL_ID")
    rm.set_defaults(func=cmd_rm)

    endpoint = commands.add_parser("endpoint", help="remote models on OpenAI-compatible servers")
    endpoint_commands = endpoint.add_subparsers(dest="endpoint_command", metavar="{add,test}", required=True)
    add = endpoint_commands.add_parser(
        "add", help="add a remote model to your catalog",
        description="The key is never stored: --api-key-env names the environment variable that holds it.",
    )  # fmt: skip
    add.add_argument("name", metavar="NAME", help="the id to use in chat, compare and the TUI")
    add.add_argument("--base-url", required=True, metavar="URL", help="API root, e.g. http://127.0.0.1:8000/v1")
    add.add_argument("--model", required=True, metavar="M", help="the model name the server expects")
    add.add_argument("--api-key-env", metavar="VAR", help="name of the environment variable holding the key")
    add.add_argument("--header", action="append", metavar="'NAME: VALUE'", help="extra request header (repeat)")
    add.add_argument("--param", action="append", metavar="NAME=VALUE", help="extra request field (repeat)")
    add.add_argument("--timeout", type=float, metavar="S", help="seconds without data before giving up (60)")
    add.add_argument("--mode", choices=("chat", "raw"), default="chat", help="default mode (chat)")
    add.add_argument("--family", default="remote", help="model family shown in lists (remote)")
    add.add_argument("--pair", metavar="MODEL", help="the model to compare it with by default")
    add.add_argument("--display-name", metavar="TEXT", help="name shown in lists")
    add.set_defaults(func=cmd_endpoint_add)
    test = endpoint_commands.add_parser("test", help="check an endpoint: list its models, ask for a short answer")
    test.add_argument("name", metavar="NAME")
    test.set_defaults(func=cmd_endpoint_test)

    serve = commands.add_parser(
        "serve", help="serve a catalog model over the OpenAI-compatible API (llama-cpp-python's server)",
        description="Binds to 127.0.0.1 unless --host says otherwise. Needs the server extra: "
        "pip install 'tuitune[server]'.",
    )  # fmt: skip
    serve.add_argument(
        "model", metavar="MODEL", help="catalog id (base, chat or finetuned), ORG/REPO[:QUANT] or a .gguf path"
    )
    serve.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    serve.add_argument("--adapter-scale", type=_adapter_scale, default=1.0, metavar="S", help="LoRA strength 0…1")
    serve.add_argument("--ctx", type=int, metavar="N", help="context length (default: the catalog's, ≤ 4096)")
    serve.add_argument("--api-key-env", metavar="VAR", help="require the key in this environment variable")
    _add_gpu_layers_flag(serve)
    serve.set_defaults(func=cmd_serve)

    paths = commands.add_parser("paths", help="where tuitune keeps config, data, cache and logs")
    paths.set_defaults(func=cmd_paths)

    doctor = commands.add_parser(
        "doctor", help="what this machine runs models with: llama.cpp's backend, GPUs, memory, torch",
        description="The first thing to look at when models are slow: versions, llama.cpp's build (GPU offload, "
        "CPU features), GPUs and their free memory, RAM, CPU cores, and the device training would use. "
        "Loads no model.",
    )  # fmt: skip
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=cmd_doctor)

    leaderboard = commands.add_parser(
        "leaderboard", help="rank models from Compare votes and judge verdicts (Bradley–Terry, Elo scale, 95%% CI)",
        description="One Bradley–Terry fit over every pairwise outcome: a tie is half a win each way, a "
        "'both bad' vote a tie. Ratings average 1000 within each group of models that met.",
    )  # fmt: skip
    leaderboard.add_argument("--json", action="store_true")
    leaderboard.add_argument("--source", choices=SOURCE_CHOICES, default="both", help="which outcomes (default both)")
    leaderboard.add_argument("--bootstrap", type=bootstrap_rounds, default=1000, metavar="N",
                             help="resampling rounds for the 95%% interval (default 1000, 0 = none)")  # fmt: skip
    leaderboard.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed (default 0)")
    leaderboard.set_defaults(func=cmd_leaderboard)
    return parser
