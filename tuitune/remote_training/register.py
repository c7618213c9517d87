"""A succeeded job becomes a catalog model: a finetune served by the service, paired with its base.

The entry is kind ``finetuned`` with the endpoint's ``base_url`` and key variable and the fine-tuned model's
id, so it runs through the same OpenAI engine as any endpoint; its ``base``/``pair`` is the catalog endpoint
that serves the base model (the one trained from, or another with the same URL and model), so Compare and
``tuitune compare`` put the two side by side.
"""

from __future__ import annotations

from tuitune.errors import TuituneError
from tuitune.safe_text import inert
from tuitune.training.runs import TrainConfig


def base_endpoint(remote: dict, catalog) -> str | None:
    """The catalog endpoint serving the base model: the one named with --remote if it serves it, else any."""
    named = remote.get("endpoint")
    candidates = [named] + [entry.id for entry in catalog if entry.id != named]
    for model_id in candidates:
        if model_id not in catalog:
            continue
        entry = catalog.get(model_id)
        config = entry.endpoint
        same_url = str(config.get("base_url", "")).rstrip("/") == str(remote.get("base_url", "")).rstrip("/")
        if entry.kind == "endpoint" and config.get("model") == remote.get("model") and same_url:
            return entry.id
    return None


def register(config: TrainConfig, fine_tuned_model: str) -> str:
    """Add the finetune to the user's catalog as ``config.name``; returns the line that says what happened."""
    from tuitune.catalog import add_user_entry, load_catalog

    remote = config.remote or {}
    if not fine_tuned_model:
        return "the job succeeded but the service named no fine-tuned model; see its console"
    catalog = load_catalog()
    if config.name in catalog:
        return f"'{config.name}' is already in the catalog; fine-tuned model {inert(fine_tuned_model)}"
    base = base_endpoint(remote, catalog)
    family = catalog.get(remote["endpoint"]).family if remote.get("endpoint") in catalog else "remote"
    fields = {"id": config.name, "name": f"{remote.get('model')} finetuned ({config.name})", "kind": "finetuned",
              "family": family, "mode": "chat", "base_url": remote.get("base_url"),
              "model": fine_tuned_model}  # fmt: skip
    if remote.get("api_key_env"):
        fields["api_key_env"] = remote["api_key_env"]
    if remote.get("headers"):
        fields["headers"] = dict(remote["headers"])
    if base is not None:
        fields["base"] = base
    fields["description"] = f"fine-tuned on {remote.get('endpoint')} (job {remote.get('job_id')})"
    try:
        add_user_entry(fields)
    except TuituneError as error:
        return f"fine-tuned model {inert(fine_tuned_model)}; not added to the catalog: {error}"
    with_base = (
        f"; `tuitune compare --models {base},{config.name}` puts it beside its base"
        if base
        else ("; add the base as an endpoint (tuitune endpoint add) to compare the two")
    )
    return f"done: fine-tuned model {inert(fine_tuned_model)} added to the catalog as '{config.name}'{with_base}"
