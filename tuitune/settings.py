"""What the app remembers between launches: theme, shared parameters, the Compare layout, the Train form.

Stored as ``settings.toml`` in the config directory. Loading never fails: a file that cannot be read or parsed
is moved aside to ``settings.toml.bad`` (so nothing the user wrote is lost) and replaced; a value of the wrong
type or out of range is dropped alone, and the rest is kept. Saving is atomic, so a crash mid-write leaves the
previous file, never half of a new one.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuitune.atomic import write_text
from tuitune.errors import TuituneError
from tuitune.paths import app_dirs, private_app_dir

MODES = ("raw", "chat")
MAX_PANES = 4


@dataclass
class Settings:
    theme: str | None = None
    # Sampling fields (temperature, top_p, top_k, min_p, repeat_penalty, max_tokens, seed, stop), "system" and
    # "n_ctx" (0 = the model's default).
    sampling: dict[str, Any] = field(default_factory=dict)
    compare: list[dict[str, str]] = field(default_factory=list)  # [{"model": id, "mode": "raw"|"chat"}], 1–4
    train: dict[str, str] = field(default_factory=dict)  # the Train form's values by field id


def settings_path() -> Path:
    return app_dirs().config / "settings.toml"


def load_settings(path: Path | None = None) -> tuple[Settings, str | None]:
    """Read the settings: ``(settings, problem)``, where problem is one line for the user or None. Never raises."""
    path = path or settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings(), None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return Settings(), _replace_bad(path, Settings(), f"could not be read ({reason})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return Settings(), _replace_bad(path, Settings(), f"is not valid TOML ({error})")
    settings, dropped = _from_dict(data)
    if dropped:
        return settings, _replace_bad(path, settings, f"had invalid values, dropped: {'; '.join(dropped)}")
    return settings, None


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write the settings atomically (``tuitune.atomic``: temporary file, fsync, rename) in a private folder.

    Raises TuituneError with one line on any OS error; the previous file is then left as it was.
    """
    import tomli_w

    path = path or settings_path()
    text = tomli_w.dumps(_to_dict(settings))
    try:
        private_app_dir(path.parent)
        write_text(path, text, perms=0o600)
    except OSError as error:
        raise TuituneError(f"settings not saved to {path}: {error.strerror or error}") from None


def _replace_bad(path: Path, settings: Settings, what: str) -> str:
    """Keep the user's file as ``<name>.bad``, write a clean one, and say so in one line."""
    bad = path.with_name(path.name + ".bad")
    try:
        os.replace(path, bad)
        kept = f"the original was kept as {bad.name}"
    except OSError as error:
        kept = f"it could not be moved aside ({error.strerror or error})"
    try:
        save_settings(settings, path)
        outcome = "replaced with a clean file"
    except TuituneError as error:
        outcome = f"not replaced ({error})"
    return " ".join(f"settings file {path} {what}; {outcome}, {kept}".split())  # one line, whatever the error says


def _to_dict(settings: Settings) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if settings.theme:
        data["theme"] = settings.theme
    sampling = dict(settings.sampling)
    if "stop" in sampling:
        sampling["stop"] = list(sampling["stop"])
    data["sampling"] = sampling
    data["compare"] = [dict(pane) for pane in settings.compare]
    data["train"] = dict(settings.train)
    return data


def _from_dict(data: dict[str, Any]) -> tuple[Settings, list[str]]:
    """Keep what is well-typed, field by field; ``dropped`` names what was not, and why. Unknown keys are ignored."""
    settings, dropped = Settings(), []
    theme = data.get("theme")
    if isinstance(theme, str):
        settings.theme = theme
    elif theme is not None:
        dropped.append("theme (must be a string)")

    sampling = data.get("sampling", {})
    if isinstance(sampling, dict):
        settings.sampling = _sampling(sampling, dropped)
    else:
        dropped.append("sampling (must be a table)")

    compare = data.get("compare", [])
    if isinstance(compare, list):
        for index, pane in enumerate(compare):
            if (
                isinstance(pane, dict)
                and isinstance(pane.get("model"), str)
                and pane["model"]
                and pane.get("mode") in MODES
            ):
                settings.compare.append({"model": pane["model"], "mode": pane["mode"]})
            else:
                dropped.append(f'compare[{index}] (needs a model id and mode "raw" or "chat")')
        if len(settings.compare) > MAX_PANES:
            dropped.append(f"compare panes past the first {MAX_PANES}")
            del settings.compare[MAX_PANES:]
    else:
        dropped.append("compare (must be a list of panes)")

    train = data.get("train", {})
    if isinstance(train, dict):
        for key, value in train.items():
            if isinstance(value, str):
                settings.train[key] = value
            else:
                dropped.append(f"train.{key} (must be a string)")
    else:
        dropped.append("train (must be a table)")
    return settings, dropped


def _sampling(raw: dict[str, Any], dropped: list[str]) -> dict[str, Any]:
    from tuitune.tui.widgets.params import FIELDS, check_value

    kept: dict[str, Any] = {}
    for key, value in raw.items():
        if key in FIELDS:
            try:
                kept[key] = check_value(key, value)
            except ValueError as error:
                dropped.append(f"sampling.{key} ({error})")
        elif key == "system":
            if isinstance(value, str):
                kept[key] = value
            else:
                dropped.append("sampling.system (must be a string)")
        elif key == "stop":
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                kept[key] = list(value)
            else:
                dropped.append("sampling.stop (must be a list of strings)")
    return kept
