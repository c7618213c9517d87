"""The Textual user interface. Depends on the core modules; nothing in the core imports it."""

from __future__ import annotations


def run_tui(compare_models: list[str] | None = None, prompt: str | None = None) -> int:
    from tuitune.tui.app import TuituneApp

    app = TuituneApp(compare_models=compare_models, prompt=prompt)
    app.run()
    return app.return_code or 0
