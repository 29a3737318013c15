"""Qt layout helpers shared by the dock widgets: a scroll area and a collapsible group.

napari docks a magicgui container's ``.native`` widget (never magicgui's own scroll
area), so a dock that must scroll holds a :class:`~qtpy.QtWidgets.QScrollArea` itself:
:func:`mount_scrollable` puts the body of a widget into one, inside the (otherwise
empty) outer magicgui container that napari docks.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget
from superqt import QCollapsible

__all__ = ["collapsible", "mount_scrollable", "stack"]


def stack(*widgets: Any, spacing: int = 2) -> QWidget:
    """A plain widget holding ``widgets`` (magicgui widgets or QWidgets) top to bottom."""
    body = QWidget()
    layout = QVBoxLayout(body)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(spacing)
    for widget in widgets:
        layout.addWidget(getattr(widget, "native", widget))
    layout.addStretch(1)
    return body


def collapsible(title: str, content: Any, *, expanded: bool = False) -> QCollapsible:
    """A group with a clickable title that shows or hides ``content`` (no animation)."""
    group = QCollapsible(title)
    group.setDuration(0)
    group.addWidget(getattr(content, "native", content))
    group.layout().setContentsMargins(0, 0, 0, 0)
    if expanded:
        group.expand(animate=False)
    else:
        group.collapse(animate=False)
    return group


class _FitWidth(QObject):
    """Keeps a scroll area as wide as its body's minimum (which grows once styled and shown)."""

    def __init__(self, area: QScrollArea) -> None:
        super().__init__(area)
        self.area = area

    def fit(self) -> None:
        body = self.area.widget()
        if body is not None:
            bar = self.area.verticalScrollBar().sizeHint().width()
            self.area.setMinimumWidth(body.minimumSizeHint().width() + bar + 4)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # Qt name
        if event.type() in (QEvent.LayoutRequest, QEvent.Show, QEvent.StyleChange, QEvent.PolishRequest):
            self.fit()
        return False


def mount_scrollable(outer: Any, body: QWidget) -> QScrollArea:
    """Put ``body`` into a vertical scroll area that fills the magicgui container ``outer``.

    The area is as wide as the body needs (no horizontal scrolling) and may be as short
    as a few rows: the dock never forces the main window to grow taller.
    """
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    area.setVerticalScrollBarPolicy(Qt.ScrollBarAsNeeded)
    area.setWidget(body)
    fitter = _FitWidth(area)
    body.installEventFilter(fitter)
    fitter.fit()
    area.setMinimumHeight(120)
    layout = outer.native.layout()
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(area)
    return area
