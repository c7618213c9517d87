"""Keeping a streaming answer in view: follow the last line of text unless the user scrolled up to read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.containers import VerticalScroll
from textual.widget import Widget

if TYPE_CHECKING:
    from tuitune.tui.widgets.turn import TurnView


class FollowingScroll(VerticalScroll):
    """The pane's scrolling list of turns. Not a focus stop of its own: the pane is, and scrolls it."""

    can_focus = False
    FOLLOW_STEP_FRACTION = 3  # the view moves this fraction of its height ahead when the text reaches the bottom

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.followed_to: int | None = None  # offset the view was last put at (None: the end)

    def following(self) -> bool:
        """False once the user has scrolled up from where the view was last put."""
        return self.followed_to is None or self.scroll_y >= self.followed_to - 2

    def to_end(self) -> None:
        self.followed_to = None
        self.call_after_refresh(self.scroll_end, animate=False, immediate=True)

    def follow_live_text(self, turn: TurnView, attempts: int = 0) -> None:
        """While streaming, keep the last line of text (not the blank reservation below it) in view.

        When the text reaches the bottom, the view moves a third of a screen ahead rather than one line: every
        scroll repaints the whole pane, and following line by line cost the UI thread as much as the rest of
        the streaming together, time taken from the model's threads on a small machine. A line that stays
        put while it is read is also easier to read than one that climbs ten times a second.
        """
        live = turn.live
        if live is None or not live.is_mounted or not self.following():
            return  # the user scrolled up to read: leave the view alone
        height = self.scrollable_content_region.height
        text_bottom = _virtual_top(live, self) + live.text_lines + 1
        shows_end = max(0, text_bottom - height)  # the least offset at which the last text line is in view
        # At most a third of a screen past that, and never further than leaves the last line on screen: while
        # the text is shorter than the view (shows_end 0) that is the top, so a short answer is not scrolled away.
        ahead = max(shows_end, text_bottom - height + max(1, height // self.FOLLOW_STEP_FRACTION))
        current = int(self.scroll_y)
        if shows_end <= current <= ahead:
            self.followed_to = current
            return
        reachable = min(ahead, int(self.max_scroll_y))
        self.followed_to = reachable  # where the view is put, so the scrolled-up test compares like with like
        if reachable != current:  # also back up, when a late scroll_end overshot into the reservation
            self.scroll_to(y=reachable, animate=False, immediate=True)
        if shows_end > reachable and attempts < 10:  # the layout lags the text on a busy machine: follow once it grew
            self.call_after_refresh(self.follow_live_text, turn, attempts + 1)


def _virtual_top(widget: Widget, scroller: Widget) -> int:
    """``widget``'s top row in ``scroller``'s scrollable (virtual) space, the way Textual's scroll_to_widget
    walks up: from layout data that does not depend on the scroll offset, so a scroll since the last
    layout (a late ``scroll_end``) cannot skew it the way ``region`` is skewed."""
    top = widget.virtual_region.y
    node = widget.parent
    while isinstance(node, Widget) and node is not scroller:
        top += node.virtual_region.y + node.styles.border.spacing.top
        node = node.parent
    return top
