"""``tuitune serve MODEL``: a catalog model behind the OpenAI-compatible API, with llama-cpp-python's server.

The model is loaded the way tuitune loads it locally (same GGUF, context length and chat template, or the
catalog's fallback format), so a remote pane and a local pane with the same greedy settings write the same
text. A finetuned entry is its base GGUF with the LoRA adapter attached; ``adapter_scale`` sets its
strength. The server binds to loopback unless told otherwise: it has no key unless ``api_key_env`` names one.

Two things llama-cpp-python's server does not do are done here: the port is bound before anything is loaded or
printed (a taken port is one line, not "serving … at" and a uvicorn traceback), and a request for another
model is answered 404 ``model_not_found`` as OpenAI answers it, instead of silently by the one model there is.
"""

from __future__ import annotations

import ctypes
import errno
import hmac
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError

# The routes whose request body names a model; llama-cpp-python answers any name with the model it has.
MODEL_ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/embeddings")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _model_settings(model_ref: str, n_ctx: int | None, gpu_layers: int | None = None) -> dict:
    """Keyword arguments for llama-cpp-python's ModelSettings, from the catalog entry (or a .gguf path).

    The GPU layers are decided as for a local pane (``engines/offload.py``): the server's own default is 0.
    """
    import llama_cpp

    from tuitune.engines import resolve_model
    from tuitune.engines.llama import DEFAULT_CONTEXT
    from tuitune.engines.offload import decide_offload
    from tuitune.gguf import read_gguf
    from tuitune.sources import base_entry, model_path

    model = resolve_model(model_ref)
    entry = model.entry
    if entry is not None and entry.remote:
        raise TuituneError(f"'{entry.id}' is a remote endpoint; serve a local model (base, chat or finetuned)")
    adapter = None
    chat_format = None
    if entry is None:
        path = model.path
    elif entry.kind == "finetuned":
        base = base_entry(entry)
        path, adapter = model_path(base), entry.adapter
        chat_format = entry.chat_format or base.chat_format
        gpu_layers = next((n for n in (gpu_layers, entry.gpu_layers, base.gpu_layers) if n is not None), None)
        n_ctx = n_ctx or entry.context_length or base.context_length
    else:
        path, chat_format = model_path(entry), entry.chat_format
        n_ctx = n_ctx or entry.context_length
        gpu_layers = entry.gpu_layers if gpu_layers is None else gpu_layers
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
    settings["n_gpu_layers"] = decide_offload(model.id, info, settings["n_ctx"], gpu_layers, llama_cpp)[0]
    if not has_template:
        settings["chat_format"] = chat_format or "llama-2"
    if adapter is not None:
        if not adapter.exists():
            raise TuituneError(f"the adapter of '{model.id}' is missing: {adapter}; train or export it again")
        settings["lora_path"] = str(adapter)
    return settings


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound and listening on ``host:port``, or one line saying why not.

    Listening at once means a client that connects while the model loads waits instead of being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart right after a stop
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as error:
        sock.close()
        raise TuituneError(_listen_problem(host, port, error)) from None
    return sock


def _listen_problem(host: str, port: int, error: Exception) -> str:
    if isinstance(error, OverflowError):
        return f"--port {port} is not a port number; pick one from 1 to 65535"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve --host {host}; give an address of this machine, e.g. 127.0.0.1"
    code = getattr(error, "errno", None)
    if code == errno.EADDRINUSE:
        return f"port {port} is in use; pick another with --port"
    if code == errno.EACCES:
        return f"port {port} needs administrator rights; pick one above 1023 with --port"
    if code == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; check --host"
    reason = getattr(error, "strerror", None) or str(error)
    return f"cannot listen on {host} port {port} ({reason}); check --host and --port"


class OnlyServedModel:
    """ASGI wrapper around the server: a request naming a model it does not serve gets OpenAI's 404.

    A client that asks for "gpt-4o" and silently gets a 135M model compares the wrong thing; a 404 with
    ``code: model_not_found`` is what OpenAI-compatible clients know how to report. A request without a
    ``model`` field, one that is not authorized (the server answers 401 first) and every other route pass
    through untouched.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], served: str, names: set[str], api_key: str | None):
        self.app, self.served, self.names, self.api_key = app, served, names, api_key

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in MODEL_ROUTES:
            return await self.app(scope, receive, send)
        if not self._authorized(scope):
            return await self.app(scope, receive, send)
        messages, body = [], b""
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # the client went away: let the app see it
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        model = _requested_model(body)
        if model is not None and model not in self.names:
            return await self._not_found(send, model)
        pending = iter(messages)

        async def replay() -> dict[str, Any]:
            return next(pending, None) or await receive()

        return await self.app(scope, replay, send)

    def _authorized(self, scope: dict[str, Any]) -> bool:
        if not self.api_key:
            return True
        header: bytes = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, credentials = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.api_key.encode())

    async def _not_found(self, send: Callable, model: str) -> None:
        message = f"The model '{model}' does not exist on this server; it serves '{self.served}' (GET /v1/models)"
        error = {"message": message, "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
        payload = json.dumps({"error": error}).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _requested_model(body: bytes) -> str | None:
    """The ``model`` a request body names; None when it names none (or is not JSON: the app answers that)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


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
    gpu_layers: int | None = None,
) -> int:
    try:
        import uvicorn
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as error:
        raise TuituneError(
            f"serving needs llama-cpp-python's server ({error.name} is missing): pip install 'tuitune[server]'"
        ) from None
    settings = _model_settings(model_ref, n_ctx, gpu_layers)
    if adapter_scale != 1.0 and "lora_path" not in settings:
        raise TuituneError(f"--adapter-scale applies to finetuned (LoRA) models; '{model_ref}' is not one")
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env, "").strip()
        if not api_key:
            raise TuituneError(f"--api-key-env {api_key_env}: that variable is not set (export it first)")
    sock = _listen(host, port)  # before the model loads and before "serving … at" is printed
    try:
        port = sock.getsockname()[1]  # the real one, also when --port 0 let the system pick
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
        path = Path(settings["model"])
        names = {alias, path.name, path.stem, str(path)}  # the catalog id GET /v1/models reports, or the file
        guarded = OnlyServedModel(app, alias, names, api_key)
        uvicorn.Server(uvicorn.Config(guarded, host=host, port=port, log_level="warning")).run(sockets=[sock])
    finally:
        sock.close()
    return 0
