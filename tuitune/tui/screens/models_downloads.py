"""Hub downloads on the Models screen (``d``, ``x``, delete): one thread worker per download, with a cancel event.

Progress comes back as messages (the table's "installed" cell and a progress bar under the details). A
cancelled or interrupted download keeps its bytes, so the next ``d`` (or ``tuitune pull``) resumes it.
"""

from __future__ import annotations

import threading
from typing import Any

from rich.text import Text
from textual import work
from textual.message import Message
from textual.widgets import ProgressBar, Static

from tuitune.catalog import ModelEntry
from tuitune.errors import TuituneError
from tuitune.tui.screens.models_details import is_downloadable, source_text


class DownloadUpdate(Message):
    """From a download worker: progress (``progress`` set) or the end (``result``: "done" or a message)."""

    def __init__(self, model_id: str, progress: Any = None, result: str | None = None, failed: bool = False):
        super().__init__()
        self.model_id, self.progress, self.result, self.failed = model_id, progress, result, failed


def progress_text(progress: Any) -> str:
    from tuitune.downloads import human_bytes

    if progress is None:
        return "starting…"
    if progress.phase == "checking":
        return f"checking {human_bytes(progress.done)} kept from an earlier download…"
    if progress.phase == "verifying":
        return "verifying sha256…"
    eta = progress.eta_s
    eta_text = f" · ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else ""
    return f"{human_bytes(progress.done)} of {human_bytes(progress.total)} · {human_bytes(progress.speed)}/s{eta_text}"


class DownloadsMixin:
    """The download actions of ``ModelsScreen``; its ``downloads`` and ``download_progress`` hold their state."""

    downloads: dict[str, threading.Event]  # model id → its cancel event, while downloading
    download_progress: dict[str, Any]

    def show_download(self, model_id: str | None) -> None:
        """The progress bar under the details follows the highlighted model's download, if it has one."""
        box = self.query_one("#models-download")
        box.display = model_id in self.downloads
        if not box.display:
            return
        progress = self.download_progress.get(model_id)
        bar = self.query_one("#models-download-bar", ProgressBar)
        bar.update(total=getattr(progress, "total", None), progress=getattr(progress, "done", 0))
        label = Text(progress_text(progress) + "  ")
        label.append("x cancels; the bytes are kept", style="dim")
        self.query_one("#models-download-text", Static).update(label)

    # -- downloads -----------------------------------------------------------------------------------
    def action_download(self) -> None:
        entry = self.highlighted_entry()
        if entry is None:
            return
        if not is_downloadable(entry):
            self.notify(f"{entry.id} does not come from the Hub ({source_text(entry)})", severity="warning",
                        markup=False)  # fmt: skip
            return
        if entry.id in self.downloads:
            self.notify(f"{entry.id} is already downloading", markup=False)
            return
        if self.installed.get(entry.id):
            self.notify(f"{entry.id} is already downloaded", markup=False)
            return
        cancel = threading.Event()
        self.downloads[entry.id] = cancel
        self.download_progress.pop(entry.id, None)
        self.update_row(entry.id)
        self.download(entry, cancel)

    @work(thread=True, exit_on_error=False)
    def download(self, entry: ModelEntry, cancel: threading.Event) -> None:
        from tuitune.downloads import DownloadCancelled, pull_model

        def progress(update: Any) -> None:
            self.post_message(DownloadUpdate(entry.id, progress=update))

        try:
            path = pull_model(entry, progress=progress, cancel=cancel)
        except DownloadCancelled as stopped:
            self.post_message(DownloadUpdate(entry.id, result=str(stopped)))
        except TuituneError as error:
            self.post_message(DownloadUpdate(entry.id, result=str(error), failed=True))
        except Exception as error:  # never let a download take the app down
            self.post_message(DownloadUpdate(entry.id, result=f"download failed: {error!r}", failed=True))
        else:
            self.post_message(DownloadUpdate(entry.id, result=f"{entry.id} downloaded and verified: {path.name}"))

    def on_download_update(self, message: DownloadUpdate) -> None:
        if message.result is None:
            self.download_progress[message.model_id] = message.progress
        else:
            self.downloads.pop(message.model_id, None)
            self.download_progress.pop(message.model_id, None)
            self.notify(message.result, severity="error" if message.failed else "information", markup=False,
                        timeout=10 if message.failed else 5)  # fmt: skip
            self.recheck(message.model_id)
        self.update_row(message.model_id)
        if message.model_id == self.highlighted_id():
            self.show_download(message.model_id)

    def action_cancel_download(self) -> None:
        model_id = self.highlighted_id()
        if model_id not in self.downloads:
            running = ", ".join(self.downloads) or "none"
            self.notify(f"{model_id} is not downloading (downloads running: {running})", markup=False)
            return
        self.downloads[model_id].set()

    def action_delete_file(self) -> None:
        from tuitune.tui.screens.dialogs import Confirm

        entry = self.highlighted_entry()
        if entry is None:
            return
        if not is_downloadable(entry):
            self.notify(f"tuitune deletes only files it downloaded; {entry.id} comes from {source_text(entry)}",
                        severity="warning", markup=False)  # fmt: skip
            return
        if entry.id in self.downloads:
            self.notify("cancel the download first (x)", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            from tuitune.downloads import human_bytes, remove_model

            removed = remove_model(entry)
            freed = human_bytes(sum(size for _, size in removed))
            self.notify(f"deleted {entry.id}'s files ({freed}); the catalog entry stays" if removed
                        else f"nothing downloaded for {entry.id}", markup=False)  # fmt: skip
            self.recheck(entry.id)
            self.update_row(entry.id)

        self.app.push_screen(Confirm(f"Delete the downloaded file of {entry.id}? (press d to get it back)"), answered)

    def on_unmount(self) -> None:
        for cancel in self.downloads.values():  # threads stop after their current block; bytes are kept
            cancel.set()
