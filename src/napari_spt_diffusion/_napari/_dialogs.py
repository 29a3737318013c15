"""File dialogs and user notifications, wrapped in one place so tests can patch them.

Widgets call these through the module (``_dialogs.ask_save_path(...)``), never
``QFileDialog`` directly: a test replaces the function with ``monkeypatch``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ask_open_path", "ask_save_path", "notify_error", "notify_info", "notify_warning", "one_sentence"]


def ask_save_path(parent: Any, caption: str, start: str = "", file_filter: str = "") -> str | None:
    """Ask the user for a file to write; ``None`` when the dialog is cancelled."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(parent, caption, start, file_filter)
    return path or None


def ask_open_path(parent: Any, caption: str, start: str = "", file_filter: str = "") -> str | None:
    """Ask the user for an existing file to read; ``None`` when the dialog is cancelled."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getOpenFileName(parent, caption, start, file_filter)
    return path or None


def one_sentence(exc: BaseException | str) -> str:
    """The first line of an error message, with a full stop: what a user reads."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if text.endswith((".", "!", "?")) else text + "."


def notify_error(message: BaseException | str) -> None:
    """Show an error as a napari notification (one sentence, never raises)."""
    from napari.utils.notifications import show_error

    show_error(one_sentence(message))


def notify_warning(message: str) -> None:
    """Show a warning as a napari notification."""
    from napari.utils.notifications import show_warning

    show_warning(one_sentence(message))


def notify_info(message: str) -> None:
    """Show an information message as a napari notification."""
    from napari.utils.notifications import show_info

    show_info(message)
