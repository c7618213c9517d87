"""A guard for a Textual crash: PageUp/PageDown on an OptionList that has options but no size yet.

``OptionList._move_page`` (Textual 8.2) looks the highlighted option up in a line cache that is built only once
the list has a size, so a page key that arrives between the list getting options and a highlight and its first
layout raises ``KeyError: 0`` and takes the app down. Every list in the app can be hit: the command palette
(Ctrl+P, then PageDown while it fills), a Select's drop-down (the Train and Eval forms), a dialog's list opened
with a highlight. The lists that Textual composes itself cannot be swapped for a subclass, so the guard wraps
the two page actions on ``OptionList`` once: until the list is laid out a page key does nothing (the list is not
on screen yet). Home and End are safe upstream. Remove this once ``_move_page`` checks for the missing line.
"""

from __future__ import annotations

from collections.abc import Callable

from textual.widgets import OptionList


def can_page(option_list: OptionList) -> bool:
    """False while a page key would crash: a highlight, but no size to build the line cache from."""
    return option_list.highlighted is None or bool(option_list.scrollable_content_region)


def _guarded(action: Callable[[OptionList], None]) -> Callable[[OptionList], None]:
    def page(self: OptionList) -> None:
        if can_page(self):
            action(self)

    page.__doc__ = action.__doc__
    page._tuitune_guard = True  # type: ignore[attr-defined]
    return page


def guard_option_list_page_keys() -> None:
    """Install the guard (idempotent); the app calls it before its first screen."""
    for name in ("action_page_up", "action_page_down"):
        action = getattr(OptionList, name)
        if not getattr(action, "_tuitune_guard", False):
            setattr(OptionList, name, _guarded(action))
