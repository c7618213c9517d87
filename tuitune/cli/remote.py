"""`tuitune endpoint add|test` and `tuitune serve`: models over the OpenAI-compatible API.

A key must never be echoed: flags that name a key's environment variable are checked for a pasted key,
and the message then says what is wrong without repeating the value.
"""

from __future__ import annotations

import argparse
import os
import re

from tuitune.errors import TuituneError
from tuitune.safe_text import inert

ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEY_PREFIXES = ("sk-", "sk_")
PASTED_KEY = "--api-key-env takes the name of an environment variable (like OPENAI_API_KEY), not the key itself"


def looks_like_a_key(value: str) -> bool:
    """True for what is no variable name, or reads like a secret: ``sk-…``, or long with mixed case and digits.

    Variable names are short, or upper case (OPENAI_API_KEY); tokens such as ``hf_AbC…`` are long and mixed.
    """
    if not ENV_VAR_NAME.fullmatch(value) or value.startswith(KEY_PREFIXES):
        return True
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value) and any(c.isdigit() for c in value)
    return len(value) >= 20 and mixed


def _check_key_env(value: str | None) -> None:
    if value is not None and looks_like_a_key(value):
        raise TuituneError(PASTED_KEY)  # never echo it: a pasted key would land in the scrollback a second time


def _key_value(text: str, separator: str, what: str) -> tuple[str, str]:
    name, found, value = text.partition(separator)
    if not found or not name.strip():
        raise TuituneError(f"{what} '{text}' should look like NAME{separator}VALUE")
    return name.strip(), value.strip()


def _parameter_value(text: str) -> object:
    """``--param top_k=20`` → 20: numbers and true/false as such, anything else a string."""
    import json

    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, (int, float, bool, str)) else text


def cmd_endpoint_add(args: argparse.Namespace) -> int:
    from tuitune.catalog import _ID_PATTERN, add_user_entry, load_catalog

    _check_key_env(args.api_key_env)  # first: no other message may quote the command line before this one
    if not _ID_PATTERN.match(args.name):
        raise TuituneError(f"NAME '{args.name}' may use only letters, digits, '.', '_' and '-'")
    if args.name in load_catalog():
        raise TuituneError(f"'{args.name}' is already a model in the catalog; choose another NAME")
    fields: dict[str, object] = {"id": args.name, "name": args.display_name or f"{args.model} @ {args.base_url}",
                                 "kind": "endpoint", "family": args.family, "mode": args.mode,
                                 "base_url": args.base_url.rstrip("/"), "model": args.model}  # fmt: skip
    if args.api_key_env:
        fields["api_key_env"] = args.api_key_env
    if args.header:
        fields["headers"] = dict(_key_value(item, ":", "--header") for item in args.header)
    if args.param:
        fields["parameters"] = {
            name: _parameter_value(value) for name, value in (_key_value(p, "=", "--param") for p in args.param)
        }
    if args.timeout is not None:
        fields["timeout"] = args.timeout
    if args.pair:
        fields["pair"] = args.pair
    user = add_user_entry(fields)
    print(f"added endpoint '{args.name}' to {inert(str(user))}; `tuitune endpoint test {args.name}` checks it")
    return 0


def _key_source(variable: str | None) -> str:
    """How the key is found, naming the variable unless the catalog holds something that reads like a key."""
    if not variable:
        return "none"
    state = "set" if os.environ.get(variable) else "NOT SET"
    if looks_like_a_key(variable):
        return f"from an environment variable whose name looks like a key ({state}); put the variable's name there"
    return f"from {variable} ({state})"


def cmd_endpoint_test(args: argparse.Namespace) -> int:
    from tuitune.catalog import load_catalog
    from tuitune.engines import Message, Request, Sampling, open_engine, resolve_model

    entry = load_catalog().get(args.name)
    if not entry.remote:
        raise TuituneError(f"'{entry.id}' is a {entry.kind} model, not an endpoint")
    engine = open_engine(resolve_model(entry.id))
    endpoint = engine.endpoint
    served = inert(endpoint.model)
    print(f"{inert(entry.id)}: {inert(endpoint.base_url)}, model {served}, key {_key_source(endpoint.api_key_env)}")
    models = engine.list_models()
    print(f"the server offers {len(models)} model(s):")
    for model in models:
        print(f"  {inert(model)}{'   <- this entry' if model == endpoint.model else ''}")
    if endpoint.model not in models:
        print(f"note: '{served}' is not in that list; some servers accept other names, most answer 404")
    generation = engine.generate(Request.chat([Message("user", "Say hello.")], Sampling(temperature=0, max_tokens=8)))
    text = generation.run()
    print(f"chat check: {inert(text)!r} ({generation.stats.summary()})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    _check_key_env(args.api_key_env)  # serve's own messages quote the variable's name
    from tuitune.serve import serve

    return serve(args.model, host=args.host, port=args.port, adapter_scale=args.adapter_scale, n_ctx=args.ctx,
                 api_key_env=args.api_key_env, gpu_layers=args.gpu_layers)  # fmt: skip
