"""Help: the keys of the current screen, where tuitune keeps its files, and how to rebind keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tuitune.paths import app_dirs
from tuitune.tui.text import styled

TIPS = """\
[b]Compare[/b] sends one prompt to every pane at once; each pane has its own model and mode:
  [b]raw[/b] continues your text (what a base model was trained to do);
  [b]chat[/b] wraps it in the model's chat template (what an instruct model expects).
[b]Tab[/b] moves to each pane; letters typed there go to the prompt box. On a pane:
  [b]Alt+M[/b] raw/chat · [b]Alt+O[/b] model · [b]Alt+P[/b] its parameters · [b]Alt+S[/b] stop
  [b]Alt+R[/b] regenerate · [b]Alt+C[/b] copy · [b]Alt+X[/b] close · [b]Alt+-[/b]/[b]Alt++[/b] adapter strength
  arrows, PgUp/PgDn, Home/End scroll it · no Alt key? [b]Ctrl+P[/b] lists every pane action
A pane's header says what it is doing: loading · ready · reading the prompt · generating
  · stopping. [b]Esc[/b] stops every pane, whichever it is doing.
Prompt box: [b]Enter[/b] sends · [b]Ctrl+J[/b] newline · [b]Ctrl+R[/b] regenerates with the next seed
  [b]Ctrl+Y[/b] copies · [b]Ctrl+G[/b] example prompts · [b]Ctrl+O[/b] parameters and context size
  [b]Ctrl+T[/b] adds a pane · [b]Ctrl+L[/b] synced scrolling · [b]Ctrl+N[/b] new conversation
Votes after an answer: [b]F6[/b] A better · [b]F7[/b] B better · [b]F8[/b] tie · [b]F9[/b] both bad
Chat: [b]Ctrl+E[/b] takes back your last message to edit and resend it
Models: [b]d[/b] downloads · [b]x[/b] cancels · [b]Del[/b] deletes the file · [b]r[/b] rescans
  · [b]a[/b] adds a model found on disk (HF cache, Ollama, LM Studio) to your catalog
Eval: [b]Ctrl+S[/b] runs a suite · [b]Esc[/b] stops · [b]f[/b] failures only · [b]d[/b] differences
  · [b]m[/b]/[b]j[/b]/[b]c[/b] export
[b]F2[/b] Compare · [b]F3[/b] Chat · [b]F4[/b] Models · [b]F5[/b] History · [b]F10[/b] Train · [b]F11[/b] Eval
[b]Ctrl+P[/b] every action · [b]Ctrl+Q[/b] quits
Theme, parameters, the Compare layout and the Train form are remembered (settings.toml).
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        dirs = app_dirs()
        places = "\n".join(
            f"  {label:8} {path}"
            for label, path in (
                ("config", dirs.config),
                ("data", dirs.data),
                ("cache", dirs.cache),
                ("logs", dirs.logs),
            )
        )
        keymap = styled(
            "Rebind keys in ",
            (str(dirs.config / "keymap.toml"), "bold"),
            ', binding id = key, e.g.\n  "conversation.regenerate" = "ctrl+k"   "pane.toggle_mode" = "f12"',
        )
        with VerticalScroll(classes="dialog help"):
            yield Static("[b]tuitune help[/b]  [dim]Esc closes[/]\n")
            yield Static(TIPS)
            yield Static(styled(("Where things live", "bold"), f"\n{places}\n"))
            yield Static(keymap)
