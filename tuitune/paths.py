"""Where tuitune keeps things: platformdirs locations, each overridable by an environment variable.

The overrides exist so tests and scripts can isolate state (``TUITUNE_CONFIG_DIR`` and friends).

Folders holding the history, runs, settings, eval results and exports are private (mode 0700): create them with
``private_app_dir``, never ``mkdir``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

APP_NAME = "tuitune"
_ENV_VARS = {"config": "TUITUNE_CONFIG_DIR", "data": "TUITUNE_DATA_DIR", "cache": "TUITUNE_CACHE_DIR",
             "logs": "TUITUNE_LOG_DIR"}  # fmt: skip


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
        config=_dir(_ENV_VARS["config"], platformdirs.user_config_dir(APP_NAME)),
        data=_dir(_ENV_VARS["data"], platformdirs.user_data_dir(APP_NAME)),
        cache=_dir(_ENV_VARS["cache"], platformdirs.user_cache_dir(APP_NAME)),
        logs=_dir(_ENV_VARS["logs"], platformdirs.user_log_dir(APP_NAME)),
    )


def _ours(folder: Path, dirs: AppDirs) -> bool:
    """A folder tuitune named: inside one of its folders, or one of them at its default place.

    A folder given by a TUITUNE_*_DIR variable that already exists is the user's choice (it may be shared on
    purpose), so its mode is left alone; what tuitune creates inside it is still private.
    """
    for kind, env_var in _ENV_VARS.items():
        root = Path(os.path.abspath(getattr(dirs, kind)))
        if folder == root:
            if not os.environ.get(env_var):
                return True
        elif folder.is_relative_to(root):
            return True
    return False


def private_app_dir(path: Path) -> Path:
    """Create a folder for private things (history, runs, settings…) with mode 0700, whatever the umask.

    New folders are created 0700 all the way down; existing ones tuitune named (``_ours``) are tightened to 0700,
    so a data folder made world-readable by an older version becomes private too. Returns the folder; raises
    OSError.
    """
    from tuitune.atomic import private_dir, tighten_dir

    path = Path(os.path.abspath(path.expanduser()))
    private_dir(path)
    dirs = app_dirs()
    for folder in (path, *path.parents):
        if _ours(folder, dirs):
            tighten_dir(folder)
    return path


def project_file(name: str) -> Path | None:
    """A file shipped with tuitune (``models.toml``, ``suites/…``): source checkout first, then the wheel copy."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir.parent / name, package_dir / "_shipped" / name):
        if candidate.exists():
            return candidate
    return None
