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
* :func:`check_outputs` checks targets before a long computation (a test file is created
  and removed in each folder) and removes the temporaries that a killed earlier write
  of the same targets left behind (:func:`remove_stale_temporaries`).

Temporaries are named ``.<name>.<pid>-<12 hex digits>.tmp`` beside their target; the
process id tells a leftover of a dead process from the temporary of a live one.
``SIGINT`` and ``SIGTERM`` are held back while a set is renamed into place (a few
microseconds, in the main thread) and delivered right after, so that they never leave half a set;
``SIGKILL`` cannot be held back: a reader detects such a mix through the checksums
that the last file of a result set records (see :mod:`.results`).

These functions raise ``OSError`` as the operating system does, except
:class:`AtomicFileSet` and :func:`check_outputs`, which report problems a user can fix
as :class:`InputError`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .._pause import pause_point
from ._errors import InputError

__all__ = [
    "AtomicFileSet",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_outputs",
    "check_writable_folder",
    "remove_stale_temporaries",
    "temporary_path",
]


def temporary_path(target: str | os.PathLike[str]) -> Path:
    """A fresh hidden temporary name beside ``target`` (``.<name>.<pid>-<random>.tmp``)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")


def _temporary_pattern(name: str) -> re.Pattern[str]:
    """Names of this module's temporaries of a target called ``name`` (earlier versions
    did not record the process id: such leftovers are always stale)."""
    return re.compile(rf"\.{re.escape(name)}\.(?:(\d+)-)?[0-9a-f]{{12}}\.tmp")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or cannot tell: keep its files)
    return True


def remove_stale_temporaries(targets: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Delete the temporaries of ``targets`` left behind by a killed earlier write.

    Only files named like this module's temporaries of one of ``targets``
    (``.<name>.<pid>-<12 hex>.tmp`` in the target's folder) whose process has ended are
    removed; those of a process still running are left alone.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    removed: list[Path] = []
    for target in targets:
        target = Path(target)
        pattern = _temporary_pattern(target.name)
        try:
            entries = list(os.scandir(target.parent))
        except OSError:
            continue
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or (match.group(1) is not None and _process_alive(int(match.group(1)))):
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


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


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the renames just made) to the disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold back SIGINT and SIGTERM inside the block; they are delivered when it ends.

    Their handlers are replaced by one that notes the signal, and the signals noted are
    raised again once the handlers are back (a Python handler then runs at once: Ctrl-C
    raises ``KeyboardInterrupt``). Masking the signals would not do: the kernel hands a
    signal to any thread that does not block it, and Python then runs the handler all the
    same. Only the main thread may set handlers; elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is None or handler == signal.SIG_IGN:
            continue  # ignored, or set outside Python: leave it
        previous[signum] = handler
        signal.signal(signum, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)  # the handler put back runs here


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
        raise InputError(f"{target} already exists; give --overwrite (overwrite=True in Python) to replace it")


def _probe_folder(target: Path) -> None:
    """Create and delete a temporary beside ``target``: the one sure test that the folder
    takes new files (permission bits say nothing for root, a read-only mount or /proc)."""
    probe = temporary_path(target)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise InputError(f"cannot write to folder {target.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    _unlink_quietly(probe)


def check_writable_folder(folder: str | os.PathLike[str]) -> None:
    """Raise :class:`InputError` unless ``folder`` takes new files (a test file is created and removed)."""
    _probe_folder(Path(folder) / "write-test")


def check_outputs(paths: Iterable[str | os.PathLike[str]], overwrite: bool = False) -> list[Path]:
    """Raise :class:`InputError` now if any of ``paths`` could not be written later.

    Checks that each folder exists and takes new files (by creating and deleting a
    temporary in it) and that no file exists (unless ``overwrite``), so that a long
    computation does not end in a refused write. Removes the temporaries of ``paths``
    that a killed earlier write left behind (:func:`remove_stale_temporaries`).

    Returns
    -------
    list of pathlib.Path
        The stale temporaries removed.
    """
    return AtomicFileSet([Path(p) for p in paths], overwrite).stale_removed


class AtomicFileSet:
    """Several files written beside their targets, then renamed into place together.

    Creating the set refuses existing targets (unless ``overwrite``), missing or
    read-only folders and two targets of the same name, before anything is written,
    and removes the temporaries of these targets that a killed earlier write left
    (:attr:`stale_removed`). Write each file at :meth:`temp` ``(target)``, then call
    :meth:`commit`: it flushes every temporary to the disk, renames them onto their
    targets in the order given (SIGINT and SIGTERM held back meanwhile) and flushes the
    folder; it removes the targets already placed if a later rename fails (when nothing
    was overwritten). Leaving the ``with`` block by an exception, ``KeyboardInterrupt``
    included, deletes every temporary; an ``OSError`` is reported as an :class:`InputError`.

    A ``KeyboardInterrupt`` that arrived during the renames is raised once they are
    done, with the attribute ``files_written`` (the targets, all in place).

    Parameters
    ----------
    targets
        The files to write, in the order they are renamed into place: put last a file
        that vouches for the others (a result set's ``_meta.json`` holds their checksums).
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
        for one_per_folder in {t.parent: t for t in self.targets}.values():
            _probe_folder(one_per_folder)
        self.stale_removed: list[Path] = remove_stale_temporaries(self.targets)

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
            pause_point("writing")
            try:
                with _interrupts_held():
                    for target in self.targets:
                        if not self.overwrite and target.exists():
                            raise InputError(f"{target} appeared while writing; nothing was overwritten")
                        os.replace(self.temps[target], target)
                        placed.append(target)
                        if len(placed) == 1:
                            pause_point("renaming")
                    for folder in {t.parent for t in self.targets}:
                        _fsync_folder(folder)
            except KeyboardInterrupt as exc:
                if len(placed) == len(self.targets):  # held back during the renames: the set is complete
                    exc.files_written = list(placed)  # type: ignore[attr-defined]
                    placed = []  # nothing to undo
                raise
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

