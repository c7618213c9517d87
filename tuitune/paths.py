"""Where tuitune keeps things: platformdirs locations, each overridable by an environment variable.

The overrides exist so tests and scripts can isolate state (``TUITUNE_CONFIG_DIR`` and friends).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "tuitune"


def _dir(env_var: str, default: str) -> Path:
    value = os.environ.get(env_var)
    return Path(value).expanduser() if value else Path(default)


@dataclass(frozen=True)
class AppDirs:
    config: Path
    data: Path
    cache: Path
    logs: Path

    @property
    def user_catalog(self) -> Path:
        return self.config / "models.toml"

    @property
    def llama_log(self) -> Path:
        return self.logs / "llama.log"


def app_dirs() -> AppDirs:
    """Resolve the directories now (environment overrides are read on every call)."""
    import platformdirs

    return AppDirs(
        config=_dir("TUITUNE_CONFIG_DIR", platformdirs.user_config_dir(APP_NAME)),
        data=_dir("TUITUNE_DATA_DIR", platformdirs.user_data_dir(APP_NAME)),
        cache=_dir("TUITUNE_CACHE_DIR", platformdirs.user_cache_dir(APP_NAME)),
        logs=_dir("TUITUNE_LOG_DIR", platformdirs.user_log_dir(APP_NAME)),
    )


def project_file(name: str) -> Path | None:
    """A file shipped with tuitune (``models.toml``, ``suites/…``): source checkout first, then the wheel copy."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir.parent / name, package_dir / "_shipped" / name):
        if candidate.exists():
            return candidate
    return None
