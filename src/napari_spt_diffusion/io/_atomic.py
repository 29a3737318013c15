"""Atomic file writes: a file appears complete, or not at all.

Every write goes to a temporary file in the target's folder (the same file system, so
that the final rename is atomic), is flushed to the disk (``fsync``) and is then
renamed onto the target with ``os.replace``. A write that fails or is interrupted
(``KeyboardInterrupt`` included) removes its temporary and leaves the target as it was.

* :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json`
  write one file from data in memory.
* :func:`atomic_path` hands a temporary path to code that writes the file itself
  (tifffile, pandas, ``torch.jit.save``) and renames it into place when that succeeds.
* :class:`AtomicFileSet` writes several files all or nothing, refusing existing
  targets unless asked to replace them (the movie, result and truth files).

These functions raise ``OSError`` as the operating system does, except
:class:`AtomicFileSet`, which reports problems a user can fix as :class:`InputError`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._errors import InputError

__all__ = [
    "AtomicFileSet",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_outputs",
    "temporary_path",
]


def temporary_path(target: str | os.PathLike[str]) -> Path:
    """A fresh hidden temporary name beside ``target`` (``.<name>.<random>.tmp``)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


def _fsync(path: Path) -> None:
    """Flush a written file's data to the disk."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def atomic_path(target: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """Context manager yielding a temporary path to write ``target`` through.

    When the ``with`` block ends normally, the file written at the temporary path is
    flushed to the disk and renamed onto ``target`` (replacing an existing file); when
    it ends by an exception, the temporary is removed and ``target`` is untouched.

    Parameters
    ----------
    target
        The file to write; its folder must exist.
    mode
        Permission bits given to the file (e.g. ``0o644``); default: those the file
        was created with (the process's umask applies).

    Yields
    ------
    pathlib.Path
        The temporary path (not yet created) in ``target``'s folder.
    """
    target = Path(target)
    tmp = temporary_path(target)
    try:
        yield tmp
        _fsync(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    finally:
        _unlink_quietly(tmp)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path` for ``mode``)."""
    with atomic_path(path, mode=mode) as tmp:
        with open(tmp, "xb") as handle:
            handle.write(data)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", mode: int | None = None
) -> None:
    """Write ``text`` to ``path`` atomically, encoded as ``encoding``; newlines are written as given."""
    atomic_write_bytes(path, text.encode(encoding), mode=mode)


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    allow_nan: bool = True,
    mode: int | None = None,
) -> None:
    """Write ``obj`` to ``path`` atomically as JSON text (UTF-8) ending in a newline.

    ``indent``, ``sort_keys`` and ``allow_nan`` are passed to :func:`json.dumps`; a value
    that cannot be serialised raises before anything is written.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan) + "\n"
    atomic_write_text(path, text, mode=mode)


# ------------------------------------------------------------------ file sets
def _check_target(target: Path, overwrite: bool) -> None:
    """Raise :class:`InputError` if ``target`` could not be written (see :func:`check_outputs`)."""
    folder = target.parent
    if not folder.exists():
        raise InputError(f"folder {folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"folder {folder} is not writable")
    if target.is_dir():
        raise InputError(f"{target} is a folder, not a file name")
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")


def check_outputs(paths: Iterable[str | os.PathLike[str]], overwrite: bool = False) -> None:
    """Raise :class:`InputError` now if any of ``paths`` could not be written later.

    Checks that each folder exists and is writable and that no file exists (unless
    ``overwrite``), so that a long computation does not end in a refused write.
    """
    AtomicFileSet([Path(p) for p in paths], overwrite)


class AtomicFileSet:
    """Several files written beside their targets, then renamed into place together.

    Creating the set refuses existing targets (unless ``overwrite``), missing or
    read-only folders and two targets of the same name, before anything is written.
    Write each file at :meth:`temp` ``(target)``, then call :meth:`commit`: it flushes
    every temporary to the disk and renames it onto its target, removing the targets
    already placed if a later rename fails (when nothing was overwritten). Leaving the
    ``with`` block by an exception, ``KeyboardInterrupt`` included, deletes every
    temporary; an ``OSError`` is reported as an :class:`InputError`.

    Parameters
    ----------
    targets
        The files to write, in the order they are renamed into place.
    overwrite
        Replace existing files.
    """

    def __init__(self, targets: Iterable[Path], overwrite: bool) -> None:
        self.targets = [Path(t) for t in targets]
        self.overwrite = bool(overwrite)
        self.temps: dict[Path, Path] = {}
        for target in self.targets:
            _check_target(target, self.overwrite)
        if len(set(self.targets)) != len(self.targets):
            raise InputError("two outputs would go to the same file")

    def temp(self, target: Path) -> Path:
        """The temporary path to write ``target`` at."""
        target = Path(target)
        tmp = temporary_path(target)
        self.temps[target] = tmp
        return tmp

    def commit(self) -> list[Path]:
        """Rename every temporary onto its target; returns the targets."""
        placed: list[Path] = []
        try:
            for target in self.targets:
                _fsync(self.temps[target])
            for target in self.targets:
                if not self.overwrite and target.exists():
                    raise InputError(f"{target} appeared while writing; nothing was overwritten")
                os.replace(self.temps[target], target)
                placed.append(target)
        except BaseException:
            if not self.overwrite:
                for target in placed:
                    _unlink_quietly(target)
            raise
        finally:
            self.discard()
        return placed

    def discard(self) -> None:
        """Delete the temporaries still present."""
        for tmp in self.temps.values():
            _unlink_quietly(tmp)

    def __enter__(self) -> AtomicFileSet:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.discard()
        if isinstance(exc, OSError) and not isinstance(exc, InputError):
            where = exc.filename or (self.targets[0].parent if self.targets else "")
            raise InputError(f"cannot write to {where}: {exc.strerror or exc}") from exc

