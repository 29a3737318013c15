"""Remember widget parameters between sessions (a small JSON file per widget).

The folder is ``$NAPARI_SPT_DIFFUSION_CONFIG_DIR`` when set (tests point it at a
temporary folder), else the platform's user configuration folder from ``platformdirs``
(``~/.config/napari-spt-diffusion`` on Linux, ``~/Library/Application Support/...`` on
macOS, ``%LOCALAPPDATA%\\napari-spt-diffusion`` on Windows). Reading never fails:
a missing or corrupt file gives ``{}``; writing failures are ignored (a read-only
home must not break the plugin).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..io._atomic import atomic_write_text

__all__ = ["config_dir", "load_values", "save_values"]


def config_dir() -> Path:
    """Folder holding the remembered parameters."""
    env = os.environ.get("NAPARI_SPT_DIFFUSION_CONFIG_DIR")
    if env:
        return Path(env)
    from platformdirs import user_config_dir

    return Path(user_config_dir("napari-spt-diffusion", appauthor=False))


def load_values(name: str) -> dict[str, Any]:
    """Parameters saved under ``name`` (``{}`` if none)."""
    try:
        values = json.loads((config_dir() / f"{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def save_values(name: str, values: dict[str, Any]) -> None:
    """Save JSON-serialisable parameters under ``name`` (atomic replace; errors ignored)."""
    folder = config_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"{name}.json", json.dumps(values, indent=1, sort_keys=True))
    except (OSError, TypeError, ValueError):
        pass
