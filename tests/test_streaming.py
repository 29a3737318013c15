"""Tests of streaming.py: long movies detected in windows of frames, localizations spilled to Parquet.

The chunked path must give the same tables as the in-memory path (same tracks, same values);
memory-mapped movies must not keep the pages read in the process.
"""

from __future__ import annotations

import mmap

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion import streaming
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.pipeline import Cancelled, PipelineError, Settings, track_and_estimate
from napari_spt_diffusion.simulation.movie import simulate_movie
from napari_spt_diffusion.tracking.spots import detect_and_localize

STANDARD = Acquisition()


@pytest.fixture(scope="module")
def movie():
    return simulate_movie((64, 64), 40, STANDARD, rng=5, model="aniso", particles=8, D1_range_um2_s=(0.5, 2.0)).movie


@pytest.fixture(scope="module")
def in_memory(movie, toy_models):
    settings = Settings(model=toy_models["pointwise"], device="cpu", min_track_length=3, chunk_frames=0,
                        trust_model=True)
    return track_and_estimate(movie, STANDARD, settings)


@pytest.mark.parametrize("chunk_frames,chunk_localizations", [(7, 200_000), (13, 30)])
def test_chunked_run_gives_the_same_tables_as_the_in_memory_run(movie, toy_models, in_memory, chunk_frames,
                                                                chunk_localizations):
    settings = Settings(model=toy_models["pointwise"], device="cpu", min_track_length=3, chunk_frames=chunk_frames,
                        chunk_localizations=chunk_localizations, trust_model=True)
    chunked = track_and_estimate(movie, STANDARD, settings)
    assert in_memory.meta["chunk_frames"] is None and chunked.meta["chunk_frames"] == chunk_frames
    assert len(in_memory.tracks) > 50 and in_memory.summary["track_id"].nunique() > 5
    # the model runs in float32 on batches that differ with the chunks of tracks: 1e-5 relative
    pd.testing.assert_frame_equal(chunked.tracks, in_memory.tracks, rtol=1e-5, atol=1e-9)
    pd.testing.assert_frame_equal(chunked.summary, in_memory.summary, rtol=1e-5, atol=1e-9)
    for key in ("n_localizations_detected", "n_tracks_linked", "search_range_px"):
        assert chunked.meta[key] == in_memory.meta[key]


def test_spill_keeps_every_localization_and_reads_rows_back(movie, tmp_path):
    whole = detect_and_localize(movie, STANDARD)
    spill = streaming.detect_to_spill(movie, STANDARD, Settings().detection, 9, tmp_path)
    assert spill is not None and spill.n == len(whole) > 0
    table = spill.linking_table()
    np.testing.assert_array_equal(table["frame"].to_numpy(), whole["frame"].to_numpy())
    np.testing.assert_allclose(table[["y_px", "x_px"]].to_numpy(), whole[["y_px", "x_px"]].to_numpy(), rtol=0,
                               atol=0)
    # rows from several row groups, in any order, come back with their own values
    pick = table.iloc[[len(table) - 1, 3, len(table) // 2, 0]].reset_index(drop=True)
    done = spill.complete(pick)
    expected = whole.iloc[[len(table) - 1, 3, len(table) // 2, 0]].reset_index(drop=True)
    for column in ("photons", "background", "snr", "sigma_px"):
        np.testing.assert_allclose(done[column].to_numpy(), expected[column].to_numpy(), rtol=0, atol=0)
    assert "nearest_other_px" in done.columns


def test_auto_chunking_and_bad_values():
    assert streaming.chunk_frames_for(100, None) is None
    assert streaming.chunk_frames_for(streaming.AUTO_CHUNK_ABOVE_FRAMES + 1, None) == streaming.DEFAULT_CHUNK_FRAMES
    assert streaming.chunk_frames_for(10**6, 0) is None
    assert streaming.chunk_frames_for(10, 3) == 3
    for bad in (-1, 2.5, True):
        with pytest.raises(PipelineError, match="chunk_frames"):
            Settings(chunk_frames=bad)


def test_cancel_inside_chunked_detection(movie, toy_models):
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 20

    settings = Settings(model=toy_models["sequence"], device="cpu", chunk_frames=5)
    with pytest.raises(Cancelled):
        track_and_estimate(movie, STANDARD, settings, should_stop=stop)


def _rss_file_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssFile:"):
                return int(line.split()[1])
    return -1


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED"), reason="needs madvise")
def test_memory_mapped_frames_are_released(tmp_path):
    path = tmp_path / "movie.raw"
    frames = np.memmap(path, dtype=np.uint16, mode="w+", shape=(64, 256, 256))  # 8 MB
    frames[:] = 7
    frames.flush()
    del frames
    movie = np.memmap(path, dtype=np.uint16, mode="r", shape=(64, 256, 256))
    reader = streaming.releasing(movie)
    assert isinstance(reader, streaming.ReleasingFrames) and reader.shape == (64, 256, 256)
    before = _rss_file_kb()
    old = streaming.RELEASE_EVERY_BYTES
    streaming.RELEASE_EVERY_BYTES = 1 << 20  # every 8 frames
    try:
        total = sum(int(reader[t][0, 0]) for t in range(64))
    finally:
        streaming.RELEASE_EVERY_BYTES = old
    assert total == 7 * 64
    assert reader.released >= 7
    if before >= 0:
        # without the release all 8 MB would stay mapped; at most one 1 MB window of pages remains
        assert _rss_file_kb() - before < 4 * 1024
    assert streaming.releasing(np.zeros((2, 3, 3))) is not None
