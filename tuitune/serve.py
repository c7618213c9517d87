"""``tuitune serve MODEL``: a catalog model behind the OpenAI-compatible API, with llama-cpp-python's server.

The model is loaded the way tuitune loads it locally (same GGUF, context length and chat template, or the
catalog's fallback format), so a remote pane and a local pane with the same greedy settings write the same
text. A finetuned entry is its base GGUF with the LoRA adapter attached; ``adapter_scale`` sets its
strength. The server binds to loopback unless told otherwise: it has no key unless ``api_key_env`` names one.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import sys

from tuitune.errors import TuituneError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _model_settings(model_ref: str, n_ctx: int | None) -> dict:
    """Keyword arguments for llama-cpp-python's ModelSettings, from the catalog entry (or a .gguf path)."""
    from tuitune.engines import resolve_model
    from tuitune.engines.llama import DEFAULT_CONTEXT
    from tuitune.gguf import read_gguf
    from tuitune.sources import base_entry, model_path

    model = resolve_model(model_ref)
    entry = model.entry
    if entry is not None and entry.kind == "endpoint":
        raise TuituneError(f"'{entry.id}' is a remote endpoint; serve a local model (base, chat or finetuned)")
    adapter = None
    chat_format = None
    if entry is None:
        path = model.path
    elif entry.kind == "finetuned":
        base = base_entry(entry)
        path, adapter = model_path(base), entry.adapter
        chat_format = entry.chat_format or base.chat_format
        n_ctx = n_ctx or entry.context_length or base.context_length
    else:
        path, chat_format = model_path(entry), entry.chat_format
        n_ctx = n_ctx or entry.context_length
    info = read_gguf(path)
    has_template = bool(info.metadata.get("tokenizer.chat_template"))
    settings = {
        "model": str(path),
        "model_alias": model.id,
        "n_ctx": n_ctx or min(info.context_length or DEFAULT_CONTEXT, DEFAULT_CONTEXT),
        "n_threads": os.cpu_count() or 1,
        "n_threads_batch": os.cpu_count() or 1,
        "logits_all": False,
        "verbose": False,
    }
    if not has_template:
        settings["chat_format"] = chat_format or "llama-2"
    if adapter is not None:
        if not adapter.exists():
            raise TuituneError(f"the adapter of '{model.id}' is missing: {adapter}; train or export it again")
        settings["lora_path"] = str(adapter)
    return settings


def _set_adapter_scale(llm, scale: float) -> None:
    """Re-attach the already loaded adapter at ``scale`` (the server's settings have no scale field)."""
    import llama_cpp

    adapter = getattr(llm, "_lora_adapter", None)
    if adapter is None:
        raise TuituneError("the server loaded no LoRA adapter, so --adapter-scale has nothing to scale")
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    if llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, (ctypes.c_float * 1)(scale)):
        raise TuituneError(f"llama.cpp refused adapter scale {scale}")
    llm.lora_scale = scale


def serve(
    model_ref: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    adapter_scale: float = 1.0,
    n_ctx: int | None = None,
    api_key_env: str | None = None,
) -> int:
    try:
        import uvicorn
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as error:
        raise TuituneError(
            f"serving needs llama-cpp-python's server ({error.name} is missing): pip install 'tuitune[server]'"
        ) from None
    settings = _model_settings(model_ref, n_ctx)
    if adapter_scale != 1.0 and "lora_path" not in settings:
        raise TuituneError(f"--adapter-scale applies to finetuned (LoRA) models; '{model_ref}' is not one")
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env, "").strip()
        if not api_key:
            raise TuituneError(f"--api-key-env {api_key_env}: that variable is not set (export it first)")
    if not _is_loopback(host):
        print(
            f"warning: listening on {host}: other machines can reach this server"
            + ("" if api_key else "; it has no key (use --api-key-env VAR)"),
            file=sys.stderr,
        )
    from tuitune.engines import llama_log

    llama_log.install()  # llama.cpp's own chatter goes to the log file, not the terminal
    with llama_log.python_stderr_to_log():
        app = create_app(
            server_settings=ServerSettings(host=host, port=port, api_key=api_key),
            model_settings=[ModelSettings(**settings)],
        )
    if adapter_scale != 1.0:
        from llama_cpp.server import app as server_app

        _set_adapter_scale(server_app._llama_proxy(), adapter_scale)  # the proxy loaded the model eagerly
    alias = settings["model_alias"]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/v1"
    strength = f" (adapter strength {adapter_scale:g})" if "lora_path" in settings else ""
    print(f"serving {alias}{strength} at {url}", flush=True)
    print(f"use it: tuitune endpoint add NAME --base-url {url} --model {alias}"
          + (f" --api-key-env {api_key_env}" if api_key_env else ""), flush=True)  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0
