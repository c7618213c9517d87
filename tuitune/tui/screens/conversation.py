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

from tuitune.engines.base import RANDOM_SEED, Sampling, Stats
from tuitune.tui.screens.dialogs import Confirm, ExamplePicker, ModelPicker, PaneParams
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
        self.n_ctx = 0  # context size from the parameters panel; 0 = the model's default
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
        self._restore_shared_parameters()
        self.query_one("#vote-bar", Static).display = False
        self.query_one(PromptBox).focus()
        if self.initial_prompt:  # `tuitune --compare A,B --prompt TEXT`
            prompt, self.initial_prompt = self.initial_prompt, None
            self.call_after_refresh(lambda: self.run_worker(self.send(prompt)))
        # Load models only once the first frame is on screen: importing llama.cpp holds the GIL for a while.
        self.call_after_refresh(self.set_timer, 0.5, self._preload_all)

    def _restore_shared_parameters(self) -> None:
        """The shared parameters as the user left them last time (settings.toml; validated when read)."""
        saved = dict(self.tuitune.settings.sampling)
        self.system = str(saved.pop("system", "") or "")
        self.n_ctx = int(saved.pop("n_ctx", 0) or 0)
        known = {key: value for key, value in saved.items() if key in Sampling.__dataclass_fields__}
        if "stop" in known:
            known["stop"] = tuple(known["stop"])
        self.sampling = Sampling(**known)
        for pane in self.panes:
            pane.shared, pane.n_ctx = self.sampling, self.n_ctx
            pane.refresh_header()

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

    def params_problem(self) -> str | None:
        """The first invalid field of the parameters panel: nothing is sent with values the user did not mean."""
        for panel in self.query(ParamsPanel):
            for message in panel.errors().values():
                return message
        return None

    async def send(
        self,
        text: str,
        panes: list[ComparePane] | None = None,
        seeds: dict[int, int] | None = None,
        number: int | None = None,
    ) -> bool:
        """Send ``text`` to ``panes`` (default: all); ``seeds`` pins a seed per pane index and ``number`` the turn
        (regenerate answers the same turn again)."""
        panes = panes or self.panes
        busy = [pane.letter for pane in panes if pane.busy]
        if busy:
            self.notify(f"pane {', '.join(busy)} is still answering — Esc stops it", severity="warning")
            return False
        problem = self.params_problem()
        if problem:
            self.notify(f"not sent: {problem} (parameters, Ctrl+O)", severity="error", markup=False)
            return False
        conversation = self._ensure_conversation(text)
        store = self.tuitune.history
        self.query_one("#vote-bar", Static).display = False
        number = number if number is not None else self.next_turn_number()
        for pane in panes:
            pane.shared, pane.n_ctx = self.sampling, self.n_ctx
            seed = (seeds or {}).get(pane.index)
            message_id = None
            run = self.run_record(pane, seed)
            if store is not None and conversation is not None:
                store.add_message(conversation, pane.index, number, "user", text)
                message_id = store.add_message(
                    conversation, pane.index, number, "assistant", "", status="streaming", model=pane.settings.model,
                    mode=pane.settings.mode, adapter_scale=run.pop("adapter_scale"), run=run,
                )  # fmt: skip
            await pane.send(text, self.system or None, message_id, seed, record=run, number=number)
        return True

    def next_turn_number(self) -> int:
        """One number per prompt sent to every pane, so a pane added later lines up with the others in History."""
        return max((turn.number for pane in self.panes for turn in pane.turns), default=-1) + 1

    def run_record(self, pane: ComparePane, seed: int | None) -> dict[str, Any]:
        """What an answer runs with, as the history stores it next to the answer."""
        from dataclasses import asdict

        run = asdict(pane.effective_sampling())
        run["stop"] = list(run["stop"])
        if seed is not None:
            run["seed"] = seed
        run["system"] = self.system if pane.settings.mode == "chat" else ""
        run["n_ctx"] = self.n_ctx
        entry = self.tuitune.catalog_entry(pane.settings.model)
        run["adapter_scale"] = pane.settings.adapter_scale if entry and entry.has_adapter else None
        return run

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
        """Answer the last prompt again, each pane with its next seed (unless it pins one): a regeneration that
        gives the same text for the same seed would look like a broken button. A busy pane stops first."""
        for pane in panes:
            if pane.turns:
                pane.when_idle(lambda pane=pane: self._regenerate_pane(pane))

    async def _regenerate_pane(self, pane: ComparePane) -> None:
        if not pane.turns or pane.busy or not pane.is_mounted:
            return
        store = self.tuitune.history
        last_stats = pane.turns[-1].stats
        sampling = pane.effective_sampling()
        seed: int | None = None
        if "seed" not in pane.settings.overrides and sampling.seed != RANDOM_SEED:
            previous = last_stats.seed if last_stats is not None and last_stats.seed is not None else sampling.seed
            seed = (previous + 1) % 2**31
        last = await pane.drop_last_turn()
        if last is None:
            return
        if store is not None and self.conversation_id is not None:
            store.delete_messages_from(self.conversation_id, pane.index, last.number)
        if await self.send(last.prompt, [pane], {pane.index: seed} if seed is not None else None, last.number):
            greedy = " (temperature 0 is greedy: the same answer)" if sampling.temperature == 0 else ""
            pinned = "seed" in pane.settings.overrides
            what = f"seed {seed}" if seed is not None else "its pinned seed" if pinned else "a random seed"
            self.notify(f"pane {pane.letter}: regenerating with {what}{greedy}", markup=False)

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
            panel = ParamsPanel(self.sampling, self.system, self.n_ctx, id="params")
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
        self.sampling, self.system, self.n_ctx = event.sampling, event.system, event.n_ctx
        for pane in self.panes:
            pane.shared = self.sampling
            pane.refresh_header()
        self.tuitune.update_settings(sampling={**self.params_dict(), "n_ctx": self.n_ctx})

    @on(PaneChanged)
    def on_pane_changed(self) -> None:
        store = self.tuitune.history
        if store is not None and self.conversation_id is not None:
            store.set_panes(self.conversation_id, self.pane_specs())

    def dialog_open(self) -> bool:
        """A dialog is already up: key repeats must not stack a second one on top."""
        return self.app.screen is not self

    @on(PaneRequest)
    async def on_pane_request(self, event: PaneRequest) -> None:
        pane = event.pane
        if not pane.is_mounted or (event.action != "regenerate" and self.dialog_open()):
            return
        if event.action == "pick_model":
            self.pick_model(pane)
        elif event.action == "params":
            if pane.refuse_while_busy("change its parameters"):
                return

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
        if self.dialog_open() or pane.refuse_while_busy("change its model"):
            return

        def chosen(model_id: str | None) -> None:
            if model_id and model_id != pane.settings.model:
                self.set_pane_model(pane, model_id)

        installed = self.tuitune.installed_map()
        title = f"Model for pane {pane.letter}"
        self.app.push_screen(ModelPicker(self.tuitune.catalog, installed, pane.settings.model, title), chosen)

    def set_pane_model(self, pane: ComparePane, model_id: str, mode: str | None = None) -> None:
        if pane.refuse_while_busy("change its model"):
            return
        entry = self.tuitune.catalog_entry(model_id)
        pane.settings.model = model_id
        pane.settings.mode = mode or (entry.mode if entry else "chat")
        pane.refresh_header()
        pane.show_empty_hint()
        pane.preload()  # closes the previous model under the pane's lock, then loads this one
        pane.post_message(PaneChanged(pane))

    async def close_pane(self, pane: ComparePane, confirmed: bool = False) -> None:
        """Close a pane; one that holds answers asks first (they stay in History either way)."""
        if len(self.panes) <= 1:
            self.notify("the last pane stays", severity="warning")
            return
        if any(other.busy for other in self.panes if other is not pane):
            self.notify("wait for the answers, or stop them (Esc), before closing a pane", severity="warning")
            return
        if pane.turns and not confirmed:
            if self.dialog_open():
                return

            async def answered(yes: bool | None) -> None:
                if yes and pane.is_mounted:
                    await self.close_pane(pane, confirmed=True)

            question = f"Close pane {pane.letter} ({pane.settings.model})? Its answers stay in History."
            self.app.push_screen(Confirm(question), answered)
            return
        pane.stop()
        await pane.remove()
        moved = {remaining.index: index for index, remaining in enumerate(self.panes)}
        for index, remaining in enumerate(self.panes):
            remaining.index = index
            remaining.refresh_header()
        self._continue_as_new_conversation(moved)
        self.query_one(PromptBox).focus()

    def _continue_as_new_conversation(self, moved: dict[int, int]) -> None:
        """A pane was closed: the panes after it moved left (B is now A), so what follows is saved as a new
        conversation holding what the remaining panes show, each answer under the pane and model that gave it.
        The conversation as it was stays in History untouched."""
        store = self.tuitune.history
        if store is None or self.conversation_id is None:
            return
        old = store.load(self.conversation_id)
        if not old.messages:
            store.set_panes(self.conversation_id, self.pane_specs())
            return
        new_id = store.create_conversation(self.KIND, old.title, self.pane_specs(), self.params_dict())
        for message in old.messages:
            if message.pane_index not in moved:
                continue
            copied = store.add_message(
                new_id, moved[message.pane_index], message.turn, message.role, message.content, message.status,
                model=message.model, mode=message.mode, adapter_scale=message.adapter_scale, run=message.run,
            )  # fmt: skip
            if message.stats or message.error:
                store.update_message(copied, message.content, stats=message.stats, error=message.error)
        self.conversation_id = new_id
        self.notify("pane closed: the conversation continues as a new one in History (the old one is kept)")

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

    async def replace_panes(self, panes: list[ComparePane]) -> None:
        """Swap every pane for ``panes`` (a reopened or a new conversation); answers in flight are stopped."""
        for pane in self.panes:
            pane.stop()
            await pane.remove()
        await self.query_one("#panes", Horizontal).mount_all(panes)
        for pane in panes:
            pane.shared, pane.n_ctx = self.sampling, self.n_ctx
        self.panes_changed()

    def panes_changed(self) -> None:
        """Panes were added, closed or replaced (Compare re-arranges its grid and synced scrolling)."""

    async def new_comparison(self, models: list[str], prompt: str | None = None) -> None:
        """A new conversation with exactly ``models`` (Ctrl+O from Train): whatever was open stays in History as
        it was, and nothing of it is reused, so each answer is saved under the model that gave it."""
        panes = []
        for index, model in enumerate(models[: self.MAX_PANES]):
            entry = self.tuitune.catalog_entry(model)
            panes.append(ComparePane(index, model, entry.mode if entry else "chat"))
        await self.replace_panes(panes)
        self.conversation_id = None
        self.query_one("#vote-bar", Static).display = False
        for pane in panes:
            pane.preload()
        self.query_one(PromptBox).focus()
        if prompt:
            await self.send(prompt)

    async def load_conversation(self, conversation: Conversation) -> None:
        """Show a saved conversation so it can be read and continued."""
        specs = conversation.panes or []
        new_panes = [ComparePane(spec.index, spec.model, spec.mode, spec.params) for spec in specs]
        params = dict(conversation.params or {})
        self.system = params.pop("system", "") or ""
        known = {k: v for k, v in params.items() if k in Sampling.__dataclass_fields__}
        if "stop" in known:
            known["stop"] = tuple(known["stop"])
        self.sampling = Sampling(**known)
        await self.replace_panes(new_panes)
        if self.query(ParamsPanel):
            self.query_one(ParamsPanel).set_values(self.sampling, self.system, self.n_ctx)
        stats_fields = Stats.__dataclass_fields__
        for pane in new_panes:
            turns: dict[int, list[Any]] = {}
            for message in conversation.messages:
                if message.pane_index != pane.index:
                    continue
                slot = turns.setdefault(message.turn, ["", pane.settings.mode, "", None, None, message.turn])
                if message.role == "user":
                    slot[0] = message.content
                elif message.role == "assistant":
                    slot[1] = message.mode or slot[1]
                    slot[2] = message.content
                    known_stats = {k: v for k, v in (message.stats or {}).items() if k in stats_fields}
                    slot[3] = Stats(**known_stats) if known_stats else None
                    slot[4] = message.error
            await pane.load_turns([tuple(turns[t]) for t in sorted(turns)])
            pane.preload()
        self.conversation_id = conversation.id
        self.query_one(PromptBox).focus()
