"""Pages of a memory-mapped movie dropped from the process that read them.

The pages of a file mapped with ``numpy.memmap`` that were read stay mapped, and count in the
process's resident memory, until the map is closed. ``madvise(MADV_DONTNEED)`` drops them from
the process (they stay in the kernel's page cache and are read again from there when needed).
Used by :class:`~napari_spt_diffusion.streaming.ReleasingFrames` and by the spot worker
processes (:mod:`~napari_spt_diffusion.tracking.spot_processes`).
"""

from __future__ import annotations

import mmap

import numpy as np

__all__ = ["release_pages"]


def release_pages(movie: np.memmap) -> bool:
    """Drop the mapped pages of ``movie`` from this process; False where that cannot be done (a
    closed map, an array that numpy does not map, a system without ``madvise``): only memory is
    at stake then."""
    handle = getattr(movie, "_mmap", None)
    if handle is None or not hasattr(handle, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    try:
        handle.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):
        return False
    return True
