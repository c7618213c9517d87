"""The tuitune Textual app: Compare (home), Chat, Models and History, one mode each.

Startup does no network access and imports no model library: engines load in pane workers after the
first frame. Keys are rebindable through ``keymap.toml`` in the config directory (binding id = key).

Notifications, titles and palette entries carry model, server, file and history text, so the app makes them
inert here, once, whichever screen or widget raised them.
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

from rich.text import Text
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.content import Content
from textual.notifications import SeverityLevel
from textual.screen import Screen

from tuitune.catalog import Catalog, ModelEntry, load_catalog
from tuitune.engines.base import Engine, LoadControl
from tuitune.errors import TuituneError
from tuitune.paths import app_dirs, project_file
from tuitune.safe_text import inert
from tuitune.tui.text import literal_markup

# factory(model_id, n_ctx=None, load=None): ``n_ctx`` None is the model's default context; ``load`` reports the
# load's progress and stops it.
EngineFactory = Callable[..., Engine]
DEMO_PAIR = ("gemma-3-270m", "smollm2-135m-instruct")


def default_engine_factory(catalog: Callable[[], Catalog]) -> EngineFactory:
    """Opens models from the app's current catalog (it is reloaded when a pull or a training run adds one)."""

    def open_model(model_id: str, n_ctx: int | None = None, load: LoadControl | None = None) -> Engine:
        from tuitune.engines import open_engine, resolve_model

        return open_engine(resolve_model(model_id, catalog()), n_ctx=n_ctx, load=load)

    return open_model


class TuituneApp(App):
    CSS_PATH = "tuitune.tcss"
    TITLE = "tuitune"
    SUB_TITLE = "base vs chat vs your finetune"

    BINDINGS = [
        Binding("f1", "help", "Help", id="app.help"),
        Binding("f2", "switch_mode('compare')", "Compare", id="app.compare"),
        Binding("f3", "switch_mode('chat')", "Chat", id="app.chat"),
        Binding("f4", "switch_mode('models')", "Models", id="app.models"),
        Binding("f5", "switch_mode('history')", "History", id="app.history"),
        Binding("f10", "switch_mode('train')", "Train", id="app.train"),
        Binding("f11", "switch_mode('eval')", "Eval", id="app.eval"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    def __init__(
        self,
        compare_models: list[str] | None = None,
        prompt: str | None = None,
        engine_factory: EngineFactory | None = None,
        catalog: Catalog | None = None,
        history_path: Path | None = None,
        settings_path: Path | None = None,
    ):
        super().__init__()
        from tuitune.tui.widgets.guarded import guard_option_list_page_keys

        guard_option_list_page_keys()  # a Textual crash on page keys in a list not laid out yet
        from tuitune.settings import load_settings
        from tuitune.settings import settings_path as default_settings_path

        self.catalog = catalog if catalog is not None else load_catalog()
        self.engine_factory = engine_factory or default_engine_factory(lambda: self.catalog)
        self.history_path = history_path or app_dirs().data / "history.sqlite3"
        self.history = None
        self.startup_notes: list[str] = []
        self.settings_path = settings_path or default_settings_path()
        self.settings, problem = load_settings(self.settings_path)
        if problem:
            self.startup_notes.append(problem)
        self._settings_error: str | None = None  # the last save failure reported, so it is reported once
        self._theme_restored = False
        panes = self._initial_panes(compare_models)
        chat_model = panes[-1][0]
        chat_entry = self.catalog_entry(chat_model)
        self.add_mode("compare", lambda: self._compare_screen(panes, prompt))
        self.add_mode("chat", lambda: self._chat_screen(chat_model, chat_entry.mode if chat_entry else "chat"))
        self.add_mode("models", self._models_screen)
        self.add_mode("history", self._history_screen)
        self.add_mode("train", self._train_screen)
        self.add_mode("eval", self._eval_screen)

    # -- screens -----------------------------------------------------------------------------------
    def _compare_screen(self, panes: list[tuple[str, str]], prompt: str | None) -> Screen:
        from tuitune.tui.screens.compare import CompareScreen

        return CompareScreen(panes, prompt)

    def _chat_screen(self, model: str, mode: str) -> Screen:
        from tuitune.tui.screens.chat import ChatScreen

        return ChatScreen([(model, mode)])

    def _models_screen(self) -> Screen:
        from tuitune.tui.screens.models import ModelsScreen

        return ModelsScreen()

    def _history_screen(self) -> Screen:
        from tuitune.tui.screens.history import HistoryScreen

        return HistoryScreen()

    def _train_screen(self) -> Screen:
        from tuitune.tui.screens.train import TrainScreen

        return TrainScreen()

    def _eval_screen(self) -> Screen:
        from tuitune.tui.screens.eval import EvalScreen

        return EvalScreen()

    def reload_catalog(self) -> None:
        """Read the catalog again (a training run or a pull added an entry); keeps the old one on error."""
        try:
            self.catalog = load_catalog()
        except TuituneError as error:
            self.notify(f"catalog not reloaded: {error}", severity="error", markup=False)

    def _initial_panes(self, models: list[str] | None) -> list[tuple[str, str]]:
        saved = self.settings.compare
        if not models and saved and all(pane["model"] in self.catalog for pane in saved):
            return [(pane["model"], pane["mode"]) for pane in saved[:4]]
        if not models:
            ids = self.catalog.ids()
            models = [m for m in DEMO_PAIR if m in self.catalog] or ids[:2] or ["(no models)"]
        panes = []
        for model in models[:4]:
            entry = self.catalog_entry(model)
            panes.append((model, entry.mode if entry else "chat"))
        return panes

    def on_mount(self) -> None:
        # Decoding threads return from llama.cpp (C, no GIL) every token and must win the GIL back from the
        # UI thread; a 1 ms switch interval (default 5 ms) keeps them from queueing behind a repaint.
        sys.setswitchinterval(0.001)
        self._restore_theme()
        self._load_keymap()
        self._open_history()
        self.switch_mode("compare")
        for note in self.startup_notes:
            self.notify(note, severity="warning", timeout=8)

    # -- settings ----------------------------------------------------------------------------------
    def _restore_theme(self) -> None:
        theme = self.settings.theme
        if theme and theme in self.available_themes:  # a theme from another version or a removed plugin: skip
            self.theme = theme
        self._theme_restored = True

    def watch_theme(self, theme: str) -> None:
        """Remember a theme picked in the palette (not the one restored at startup)."""
        if self._theme_restored and theme != self.settings.theme:
            self.update_settings(theme=theme)

    def update_settings(self, **changes: object) -> None:
        """Replace fields of ``self.settings`` and save them; a failed save is one notification, never a crash."""
        from tuitune.settings import save_settings

        self.settings = dataclasses.replace(self.settings, **changes)  # type: ignore[arg-type]
        try:
            save_settings(self.settings, self.settings_path)
        except TuituneError as error:
            if str(error) != self._settings_error:  # the same failure on every change would be noise
                self.notify(str(error), severity="error", markup=False)
            self._settings_error = str(error)
        else:
            self._settings_error = None

    def _open_history(self) -> None:
        try:
            from tuitune.history import HistoryStore

            self.history = HistoryStore(self.history_path)
            recovered = self.history.recover_interrupted()
            if recovered:
                self.startup_notes.append(f"{recovered} answer(s) cut off by a crash were kept as 'cancelled'")
        except TuituneError as error:
            self.history = None
            self.startup_notes.append(f"history is off: {error}")

    def _load_keymap(self) -> None:
        path = app_dirs().config / "keymap.toml"
        if not path.exists():
            return
        try:
            keymap = tomllib.loads(path.read_text(encoding="utf-8"))
            if not all(isinstance(v, str) for v in keymap.values()):
                raise ValueError('every value must be a key string such as "ctrl+k"')
            self.set_keymap(keymap)
        except (OSError, ValueError, tomllib.TOMLDecodeError) as error:
            self.startup_notes.append(f"{path}: ignored ({error})")

    # -- services for screens ----------------------------------------------------------------------
    def open_engine(self, model_id: str, n_ctx: int | None = None, load: LoadControl | None = None) -> Engine:
        """Called from pane worker threads."""
        return self.engine_factory(model_id, n_ctx=n_ctx, load=load)

    def catalog_entry(self, model_id: str) -> ModelEntry | None:
        return self.catalog.get(model_id) if model_id in self.catalog else None

    def installed_map(self) -> dict[str, bool]:
        from tuitune.sources import is_installed

        return {entry.id: is_installed(entry) for entry in self.catalog}

    def example_prompts(self) -> list[tuple[str, str]]:
        return _example_prompts()

    async def open_chat(self, model_id: str) -> None:
        await self.switch_mode("chat")
        self.screen.open_model(model_id)  # type: ignore[attr-defined]

    async def open_compare(self, models: list[str], prompt: str | None = None) -> None:
        """A new comparison of ``models`` (never a reopened conversation's panes), asked ``prompt``."""
        await self.switch_mode("compare")
        await self.screen.new_comparison(models, prompt)  # type: ignore[attr-defined]

    async def open_conversation(self, conversation_id: int) -> None:
        if self.history is None:
            return
        conversation = self.history.load(conversation_id)
        await self.switch_mode("chat" if conversation.kind == "chat" else "compare")
        await self.screen.load_conversation(conversation)  # type: ignore[attr-defined]

    # -- what reaches the terminal ----------------------------------------------------------------
    def notify(
        self,
        message: str | Text | Content,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every toast (``Widget.notify`` lands here too) is made inert; thread-safe like Textual's.

        A Rich ``Text`` (as ``styled`` builds) is shown literally, as its plain text. A string keeps the caller's
        ``markup`` choice, so text from models, servers or files must come with ``markup=False`` (or as
        ``styled``). ``inert`` is idempotent: text that was made inert already comes through unchanged.
        """
        if isinstance(message, Text | Content):
            message, markup = message.plain, False
        super().notify(inert(message), title=inert(title), severity=severity, timeout=timeout, markup=markup)

    def format_title(self, title: str, sub_title: str) -> Content:
        """The header's title: the app's or a screen's, which may name a model or a conversation."""
        return super().format_title(inert(title), inert(sub_title))

    # -- help and palette --------------------------------------------------------------------------
    def action_help(self) -> None:
        from tuitune.tui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for mode, help_text in (
            ("compare", "Base vs chat side by side"),
            ("chat", "One model, one conversation"),
            ("models", "The catalog and GGUF details"),
            ("history", "Saved chats and comparisons"),
            ("train", "LoRA-finetune a model and watch its loss curve"),
            ("eval", "Score models on a suite's checks: pass rates and a prompt × model matrix"),
        ):
            yield SystemCommand(f"Go to {mode.title()}", help_text, lambda m=mode: self.switch_mode(m))
        yield SystemCommand("Help", "Keys, paths and tips", self.action_help)
        for title, help_text, callback in getattr(screen, "palette_commands", lambda: [])():
            # the palette reads titles and help as markup: a model id or a conversation title is shown literally
            yield SystemCommand(literal_markup(title), literal_markup(help_text), callback)


@cache
def _example_prompts() -> list[tuple[str, str]]:
    path = project_file("suites/why-finetune.toml")
    if path is None:
        return []
    from tuitune.suites import load_suite

    try:
        return [(prompt.id, prompt.text) for prompt in load_suite(path).prompts]
    except TuituneError:
        return []
