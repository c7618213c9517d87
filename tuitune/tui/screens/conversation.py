"""The shared machinery of Compare (screens/compare.py) and Chat (screens/chat.py): a prompt box that sends
to one or more model panes, which generate at the same time, and saves every exchange to the history store as
it streams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from tuitune.engines.base import Sampling, Stats
from tuitune.tui.screens.dialogs import ExamplePicker, ModelPicker, PaneParams
from tuitune.tui.widgets.pane import ComparePane, PaneChanged, PaneRequest
from tuitune.tui.widgets.params import ParamsPanel
from tuitune.tui.widgets.prompt import PromptBox

if TYPE_CHECKING:
    from tuitune.history import Conversation
    from tuitune.tui.app import TuituneApp

VERDICTS = {"a": "A is better", "b": "B is better", "tie": "a tie", "bad": "both bad"}


class ConversationScreen(Screen):
    KIND = "compare"
    MAX_PANES = 4

    BINDINGS = [
        Binding("escape", "stop_all", "Stop", id="conversation.stop"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="conversation.regenerate"),
        Binding("ctrl+n", "new", "New", id="conversation.new"),
        Binding("ctrl+g", "examples", "Examples", id="conversation.examples"),
        Binding("ctrl+o", "toggle_params", "Params", id="conversation.params"),
        Binding("ctrl+y", "copy", "Copy", id="conversation.copy", priority=True),  # over the prompt box's redo
    ]

    def __init__(self, panes: list[tuple[str, str]], prompt: str | None = None):
        super().__init__()
        self.initial_panes = panes
        self.initial_prompt = prompt
        self.sampling = Sampling()
        self.system = ""
        self.conversation_id: int | None = None

    @property
    def tuitune(self) -> TuituneApp:
        return self.app  # type: ignore[return-value]

    @property
    def panes(self) -> list[ComparePane]:
        return list(self.query(ComparePane))

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="workspace"), Horizontal(id="panes"):
            for index, (model, mode) in enumerate(self.initial_panes):
                yield ComparePane(index, model, mode)
        yield Static(id="vote-bar")
        yield PromptBox(id="prompt", placeholder=self.placeholder())
        yield Footer()

    def placeholder(self) -> str:
        return "Type a prompt · Enter sends to every pane · Ctrl+J newline · Tab moves to the panes"

    def on_mount(self) -> None:
        self.query_one("#vote-bar", Static).display = False
        self.query_one(PromptBox).focus()
        if self.initial_prompt:  # `tuitune --compare A,B --prompt TEXT`
            prompt, self.initial_prompt = self.initial_prompt, None
            self.call_after_refresh(lambda: self.run_worker(self.send(prompt)))
        # Load models only once the first frame is on screen: importing llama.cpp holds the GIL for a while.
        self.call_after_refresh(self.set_timer, 0.5, self._preload_all)

    def _preload_all(self) -> None:
        for pane in self.panes:
            pane.preload()

    # -- sending -----------------------------------------------------------------------------------
    @on(PromptBox.Submitted)
    async def on_submitted(self, event: PromptBox.Submitted) -> None:
        if await self.send(event.text):
            event.prompt_box.clear()

    def _ensure_conversation(self, title_source: str) -> int | None:
        store = self.tuitune.history
        if store is None:
            return None
        if self.conversation_id is None:
            from tuitune.history import title_from_prompt

            self.conversation_id = store.create_conversation(
                self.KIND, title_from_prompt(title_source), self.pane_specs(), self.params_dict()
            )
        return self.conversation_id

    def pane_specs(self) -> list[Any]:
        from tuitune.history import Pane

        return [Pane(p.index, p.settings.model, p.settings.mode, dict(p.settings.overrides), None) for p in self.panes]

    def params_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        params = asdict(self.sampling)
        params["stop"] = list(params["stop"])
        params["system"] = self.system
        return params

    async def send(self, text: str, panes: list[ComparePane] | None = None) -> bool:
        panes = panes or self.panes
        busy = [pane.letter for pane in panes if pane.busy]
        if busy:
            self.notify(f"pane {', '.join(busy)} is still answering — Esc stops it", severity="warning")
            return False
        conversation = self._ensure_conversation(text)
        store = self.tuitune.history
        self.query_one("#vote-bar", Static).display = False
        for pane in panes:
            pane.shared = self.sampling
            turn = len(pane.turns)
            message_id = None
            if store is not None and conversation is not None:
                store.add_message(conversation, pane.index, turn, "user", text)
                message_id = store.add_message(conversation, pane.index, turn, "assistant", "", status="streaming")
            await pane.send(text, self.system or None, message_id)
        return True

    @on(ComparePane.Finished)
    def on_pane_finished(self) -> None:
        if len(self.panes) >= 2 and not any(pane.busy for pane in self.panes):
            bar = self.query_one("#vote-bar", Static)
            bar.update("Vote: [b]F6[/] A better · [b]F7[/] B better · [b]F8[/] tie · [b]F9[/] both bad")
            bar.display = self.KIND == "compare"

    # -- actions -----------------------------------------------------------------------------------
    def action_stop_all(self) -> None:
        for pane in self.panes:
            pane.stop()

    async def regenerate(self, panes: list[ComparePane]) -> None:
        store = self.tuitune.history
        for pane in panes:
            if pane.busy:
                pane.stop()
                self.notify(f"pane {pane.letter} stopped; press again to regenerate", severity="warning")
                return
        for pane in panes:
            if not pane.turns:
                continue
            turn_index = len(pane.turns) - 1
            last = await pane.drop_last_turn()
            if store is not None and self.conversation_id is not None:
                store.delete_messages_from(self.conversation_id, pane.index, turn_index)
            await self.send(last.prompt, [pane])

    async def action_regenerate(self) -> None:
        await self.regenerate(self.panes)

    async def action_new(self) -> None:
        for pane in self.panes:
            await pane.clear()
        self.conversation_id = None
        self.query_one("#vote-bar", Static).display = False
        self.query_one(PromptBox).focus()
        self.notify("new conversation")

    def action_examples(self) -> None:
        prompts = self.tuitune.example_prompts()
        if not prompts:
            self.notify("no example suite found", severity="warning")
            return

        def chosen(text: str | None) -> None:
            if text:
                self.run_worker(self.send(text))

        self.app.push_screen(ExamplePicker(prompts), chosen)

    async def action_toggle_params(self) -> None:
        panels = self.query(ParamsPanel)
        if panels:
            panel = panels.first()
            panel.display = not panel.display
        else:  # composed on first use: sixteen widgets fewer to build before the first frame
            panel = ParamsPanel(self.sampling, self.system, id="params")
            await self.query_one("#workspace", Horizontal).mount(panel)
        if panel.display:
            panel.query("Input").first().focus()
        else:
            self.query_one(PromptBox).focus()

    def action_copy(self) -> None:
        focused = self.focused if isinstance(self.focused, ComparePane) else None
        (focused or self.panes[0]).action_copy()

    @on(ParamsPanel.Changed)
    def on_params_changed(self, event: ParamsPanel.Changed) -> None:
        self.sampling, self.system = event.sampling, event.system
        for pane in self.panes:
            pane.shared = self.sampling
            pane.refresh_header()

    @on(PaneChanged)
    def on_pane_changed(self) -> None:
        store = self.tuitune.history
        if store is not None and self.conversation_id is not None:
            store.set_panes(self.conversation_id, self.pane_specs())

    @on(PaneRequest)
    async def on_pane_request(self, event: PaneRequest) -> None:
        pane = event.pane
        if event.action == "pick_model":
            self.pick_model(pane)
        elif event.action == "params":

            def applied(overrides: dict[str, Any] | None) -> None:
                if overrides is not None:
                    pane.settings.overrides = overrides
                    pane.refresh_header()
                    self.post_message(PaneChanged(pane))

            self.app.push_screen(PaneParams(pane.letter, pane.settings.overrides, self.sampling), applied)
        elif event.action == "regenerate":
            await self.regenerate([pane])
        elif event.action == "close":
            await self.close_pane(pane)

    def pick_model(self, pane: ComparePane) -> None:
        def chosen(model_id: str | None) -> None:
            if model_id and model_id != pane.settings.model:
                self.set_pane_model(pane, model_id)

        installed = self.tuitune.installed_map()
        title = f"Model for pane {pane.letter}"
        self.app.push_screen(ModelPicker(self.tuitune.catalog, installed, pane.settings.model, title), chosen)

    def set_pane_model(self, pane: ComparePane, model_id: str, mode: str | None = None) -> None:
        entry = self.tuitune.catalog_entry(model_id)
        pane.stop()
        pane.settings.model = model_id
        pane.settings.mode = mode or (entry.mode if entry else "chat")
        pane.refresh_header()
        pane.preload()  # closes the previous model under the pane's lock, then loads this one
        pane.post_message(PaneChanged(pane))

    async def close_pane(self, pane: ComparePane) -> None:
        if len(self.panes) <= 1:
            self.notify("the last pane stays", severity="warning")
            return
        pane.stop()
        await pane.remove()
        for index, remaining in enumerate(self.panes):
            remaining.index = index
            remaining.refresh_header()
        self.query_one(PromptBox).focus()

    def palette_commands(self) -> list[tuple[str, str, Any]]:
        """Commands this screen adds to the command palette: (title, help, callback)."""
        commands = [
            ("Stop all", "Stop every pane's answer", self.action_stop_all),
            ("Regenerate", "Answer the last prompt again in every pane", self.action_regenerate),
            ("New conversation", "Clear the panes and start a new saved conversation", self.action_new),
            ("Example prompts", "Pick one of the why-finetune prompts", self.action_examples),
            ("Parameters", "Show or hide the shared parameters panel", self.action_toggle_params),
        ]
        for pane in self.panes:
            commands += [
                (f"Pane {pane.letter}: choose model", pane.settings.model, lambda p=pane: self.pick_model(p)),
                (f"Pane {pane.letter}: toggle raw/chat", f"now {pane.settings.mode}", pane.action_toggle_mode),
                (f"Pane {pane.letter}: parameters", "Override the shared parameters", pane.action_pane_params),
                (f"Pane {pane.letter}: stop", "Stop this pane's answer", pane.action_stop),
                (f"Pane {pane.letter}: copy answer", "Copy the last answer to the clipboard", pane.action_copy),
                (f"Pane {pane.letter}: regenerate", "Answer the last prompt again", pane.action_regenerate),
            ]
        return commands

    async def load_conversation(self, conversation: Conversation) -> None:
        """Show a saved conversation so it can be read and continued."""
        for pane in self.panes:
            await pane.remove()
        container = self.query_one("#panes", Horizontal)
        specs = conversation.panes or []
        new_panes = [ComparePane(spec.index, spec.model, spec.mode, spec.params) for spec in specs]
        await container.mount_all(new_panes)
        params = dict(conversation.params or {})
        self.system = params.pop("system", "") or ""
        known = {k: v for k, v in params.items() if k in Sampling.__dataclass_fields__}
        if "stop" in known:
            known["stop"] = tuple(known["stop"])
        self.sampling = Sampling(**known)
        if self.query(ParamsPanel):
            self.query_one(ParamsPanel).set_values(self.sampling, self.system)
        for pane in new_panes:
            pane.shared = self.sampling
            turns: dict[int, list[Any]] = {}
            for message in conversation.messages:
                if message.pane_index != pane.index:
                    continue
                slot = turns.setdefault(message.turn, ["", pane.settings.mode, "", None, None])
                if message.role == "user":
                    slot[0] = message.content
                elif message.role == "assistant":
                    slot[2] = message.content
                    slot[3] = Stats(**message.stats) if message.stats else None
                    slot[4] = message.error
            await pane.load_turns([tuple(turns[t]) for t in sorted(turns)])
            pane.preload()
        self.conversation_id = conversation.id
        self.query_one(PromptBox).focus()
