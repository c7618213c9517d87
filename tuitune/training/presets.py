"""Training presets: hyper-parameters per model family and named recipes, from ``presets.toml``.

The shipped file (next to ``models.toml``) and the user's ``CONFIG_DIR/presets.toml`` are read like the
catalog: untrusted TOML, every problem reported with the file, the line and the field, because a traceback
from a config file is useless to the person who wrote it. ``resolve`` layers the values: TrainConfig's
defaults, then the preset, then what the user gave (flags or form fields), and remembers where each
effective value came from, so ``tuitune train`` can print it and config.json can record it.
Standard library only: the CLI and the TUI read presets without torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError
from tuitune.paths import app_dirs, project_file
from tuitune.untrusted import load_config_toml, read_config_text

NONE = "none"  # --preset none: the plain defaults
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# TrainConfig fields a preset may set, with the TOML type each must have.
SETTINGS: dict[str, tuple[type, ...]] = {
    "lr": (float, int), "rank": (int,), "alpha": (float, int), "dropout": (float, int), "target_modules": (list,),
    "batch_size": (int,), "grad_accum": (int,), "max_length": (int,), "epochs": (float, int), "max_steps": (int,),
    "neftune_alpha": (float, int), "seed": (int,), "warmup_ratio": (float, int), "val_split": (float, int),
    "save_every": (int,), "eval_every": (int,),
}  # fmt: skip
RECIPE = ("base", "data", "val", "run_name")  # a recipe also says what to train, on what, under which name
META = ("name", "description", "family")
# What `tuitune train` prints and the Train form shows, in this order.
SHOWN = ("base", "data", "val", "epochs", "max_steps", "lr", "rank", "alpha", "dropout", "target_modules",
         "batch_size", "grad_accum", "max_length")  # fmt: skip


class PresetError(TuituneError):
    """A presets file that cannot be used, or a preset name that names none."""


@dataclass(frozen=True)
class Preset:
    """One [[preset]] table: settings layered over TrainConfig's defaults; a recipe also names base and data."""

    name: str
    description: str = ""
    family: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
    data: str | None = None  # absolute (resolved against the presets file)
    val: str | None = None
    run_name: str | None = None
    origin: Path | None = None
    line: int | None = None


def shipped_presets_path() -> Path | None:
    override = os.environ.get("TUITUNE_PRESETS")
    return Path(override) if override else project_file("presets.toml")


def user_presets_path() -> Path:
    return app_dirs().config / "presets.toml"


def _table_lines(text: str) -> list[tuple[int, int]]:
    """(first, last) line of each [[preset]] table, to name the line of a field."""
    starts = [number for number, line in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*preset\s*\]\]", line)]
    total = text.count("\n") + 1
    ends = [start - 1 for start in starts[1:]] + [total]
    return list(zip(starts, ends, strict=True))


def _field_line(text: str, span: tuple[int, int] | None, key: str) -> int | None:
    if span is None:
        return None
    lines = text.splitlines()
    for number in range(span[0], min(span[1], len(lines)) + 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[number - 1]):
            return number
    return span[0]


def _check_value(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be the setting ``key`` (None when it can)."""
    kinds = SETTINGS[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        want = "a list of module names" if kinds == (list,) else "a whole number" if kinds == (int,) else "a number"
        return f"must be {want}, not {type(value).__name__} {value!r}"[:160]
    if key == "target_modules" and not all(isinstance(name, str) and _NAME.match(name) for name in value):
        return 'must be a list of module names such as ["q_proj", "v_proj"]'
    return None


def _parse_table(raw: Any, index: int, path: Path, text: str, span: tuple[int, int] | None) -> Preset:
    def fail(key: str | None, why: str) -> PresetError:
        line = _field_line(text, span, key) if key else (span[0] if span else None)
        where = f"{path}{f', line {line}' if line else ''}: preset #{index + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            where += f" '{raw['name'][:40]}'"
        return PresetError(f"{where}{f' field {key!r}' if key else ''}: {why}")

    if not isinstance(raw, dict):
        raise fail(None, "must be a table written as [[preset]]")
    unknown = sorted(set(raw) - set(SETTINGS) - set(RECIPE) - set(META))
    if unknown:
        known = ", ".join((*META, *SETTINGS, *RECIPE))
        raise fail(unknown[0], f"unknown field; a preset may set {known}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name) or name == NONE:
        raise fail("name", "needs a name of letters, digits, '.', '_' and '-' (not 'none')")
    for key in ("description", "family", *RECIPE):
        if key in raw and not (isinstance(raw[key], str) and raw[key].strip()):
            raise fail(key, "must be a non-empty string")
    settings = {}
    for key in SETTINGS:
        if key in raw:
            problem = _check_value(key, raw[key])
            if problem:
                raise fail(key, problem)
            settings[key] = float(raw[key]) if float in SETTINGS[key] else raw[key]
    if "epochs" in settings and "max_steps" in settings:
        raise fail("max_steps", "give epochs or max_steps, not both")
    from tuitune.training.runs import TrainConfig

    for key, value in settings.items():  # the same ranges as the command line's, named by field
        try:
            TrainConfig(name="check", base="check", data="check", **{key: value}).validate()
        except TuituneError as error:
            raise fail(key, str(error).replace(f"--{key.replace('_', '-')}", "the value")) from None
    if ("data" in raw) != ("base" in raw):
        raise fail("data" if "base" in raw else "base", "a recipe names both base and data")
    if "run_name" in raw and not _NAME.match(raw["run_name"]):
        raise fail("run_name", "may use only letters, digits, '.', '_' and '-'")
    paths = {key: str((path.parent / Path(raw[key]).expanduser()).resolve()) for key in ("data", "val") if key in raw}
    return Preset(name=name, description=raw.get("description", ""), family=raw.get("family"), settings=settings,
                  base=raw.get("base"), data=paths.get("data"), val=paths.get("val"), run_name=raw.get("run_name"),
                  origin=path, line=span[0] if span else None)  # fmt: skip


def parse_presets_file(path: Path) -> list[Preset]:
    """Every preset in one file; a duplicate name or two defaults for one family is an error."""
    text = read_config_text(path, PresetError, "presets file")
    data = load_config_toml(text, path, PresetError)
    unknown = sorted(set(data) - {"preset"})
    if unknown:
        raise PresetError(f"{path}: unknown top-level key '{unknown[0]}'; presets go in [[preset]] tables")
    tables = data.get("preset", [])
    if not isinstance(tables, list):
        raise PresetError(f"{path}: 'preset' must be an array of tables written as [[preset]]")
    spans = _table_lines(text)
    presets: list[Preset] = []
    for index, raw in enumerate(tables):
        preset = _parse_table(raw, index, path, text, spans[index] if index < len(spans) else None)
        for other in presets:
            same_family = preset.family is not None and other.family == preset.family
            clash = "name" if other.name == preset.name else "family" if same_family else None
            if clash:
                raise PresetError(f"{path}, line {preset.line}: preset '{preset.name}' field '{clash}': "
                                  f"'{getattr(preset, clash)}' is also preset '{other.name}' (line {other.line}); "
                                  "keep one")  # fmt: skip
        presets.append(preset)
    return presets


def load_presets(shipped: Path | None = None, user: Path | None = None) -> dict[str, Preset]:
    """The shipped presets, then the user's: a user preset replaces the shipped one with its name or family."""
    merged: dict[str, Preset] = {}
    for path in (shipped or shipped_presets_path(), user or user_presets_path()):
        if path is None or not path.exists():
            continue
        for preset in parse_presets_file(path):
            for name, old in list(merged.items()):
                if preset.family and old.family == preset.family:
                    del merged[name]
            merged[preset.name] = preset
    return merged


def choose(presets: dict[str, Preset], name: str | None, family: str | None) -> Preset | None:
    """The preset named ``name`` ('none': no preset); without a name, the one for ``family`` (if any)."""
    if name is None:
        return next((preset for preset in presets.values() if family and preset.family == family), None)
    if name == NONE:
        return None
    if name not in presets:
        names = ", ".join([*sorted(presets), NONE])
        raise PresetError(f"no preset named '{name}'; choose one of {names} (or add it to {user_presets_path()})")
    return presets[name]


def recipe_for(name: str | None) -> Preset | None:
    """The named preset, when it names a base model (what `train --preset NAME` starts from); else None."""
    if name is None or name == NONE:
        return None
    preset = choose(load_presets(), name, None)
    return preset if preset is not None and preset.base else None


@dataclass
class Resolved:
    """Effective settings and, per setting, where it came from: the given source, 'preset NAME' or 'default'."""

    values: dict[str, Any]
    sources: dict[str, str]
    preset: Preset | None

    def record(self) -> dict[str, Any]:
        """What config.json keeps under ``preset``."""
        return {"name": self.preset.name if self.preset else None,
                "origin": str(self.preset.origin) if self.preset and self.preset.origin else None,
                "sources": {key: self.sources[key] for key in SHOWN if key in self.sources}}  # fmt: skip

    def lines(self) -> list[str]:
        """One line per shown setting: "lr 0.001  (preset gemma3)"."""
        rows = []
        for key in SHOWN:
            value = self.values.get(key)
            if value is None and self.sources.get(key) == "default":
                continue
            if key == "target_modules":
                value = ",".join(value) if value else "per architecture (attention; + MLP for gemma3)"
            elif key in ("data", "val"):
                value = Path(str(value)).name
            rows.append(f"{key.replace('_', ' ')} {value}  ({self.sources.get(key, 'default')})")
        return rows


def resolve(preset: Preset | None, given: dict[str, Any], given_as: str = "flag") -> Resolved:
    """TrainConfig's defaults < the preset < ``given`` (values the user set; None means not given)."""
    from tuitune.training.runs import TrainConfig

    defaults = {item.name: getattr(TrainConfig(name="", base="", data=""), item.name) for item in fields(TrainConfig)}
    values = {key: defaults[key] for key in (*SETTINGS, "val")}
    sources = dict.fromkeys(values, "default")
    if preset is not None:
        layer = dict(preset.settings)
        layer.update({key: getattr(preset, key) for key in ("base", "data", "val") if getattr(preset, key)})
        if given.get("max_steps") is not None:  # a length given on the command line replaces the preset's
            layer.pop("epochs", None)
        if given.get("epochs") is not None:
            layer.pop("max_steps", None)
        values.update(layer)
        sources.update(dict.fromkeys(layer, f"preset {preset.name}"))
    for key, value in given.items():
        if value is not None:
            values[key], sources[key] = value, given_as
    return Resolved(values, sources, preset)
