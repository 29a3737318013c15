"""Patch extraction and displacements (tracking/patches.py)."""

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.tracking.patches import (
    PatchError,
    crop_patches,
    displacements_from_positions,
    extract_patches_array,
    extract_track_patches,
)


def _ramp(height=40, width=50):
    # every pixel value names its (row, column): 1000 * row + column
    return (1000.0 * np.arange(height)[:, None] + np.arange(width)[None, :]).astype(np.float32)


def test_crop_is_centred_on_the_nearest_pixel_and_keeps_the_offset():
    image = _ramp()
    positions = np.array([[10.3, 20.6], [10.5, 20.5], [15.0, 30.0]])
    patches, outside, offsets = crop_patches(image, positions, patch_size=11)
    assert patches.shape == (3, 11, 11) and patches.dtype == np.float32
    assert not outside.any()
    # (10.3, 20.6) -> pixel (10, 21); half-integers go up: (10.5, 20.5) -> (11, 21)
    assert patches[0, 5, 5] == 1000 * 10 + 21
    assert patches[1, 5, 5] == 1000 * 11 + 21
    assert patches[0, 0, 0] == 1000 * 5 + 16 and patches[0, 10, 10] == 1000 * 15 + 26
    assert np.allclose(offsets, [[0.3, -0.4], [-0.5, -0.5], [0.0, 0.0]])
    assert np.all((offsets >= -0.5) & (offsets < 0.5))


def test_edge_patches_are_flagged_and_filled_with_local_background():
    image = np.full((30, 30), 7.0, dtype=np.float32)
    image[:6, :6] = 50.0  # the corner patch sees this bright block and background 7
    patches, outside, _ = crop_patches(image, np.array([[1.2, 0.4]]), patch_size=11)
    # centre (1, 0): rows -4..6 and columns -5..5; rows < 0 and columns < 0 are outside
    expected_outside = np.zeros((11, 11), bool)
    expected_outside[:4, :] = True
    expected_outside[:, :5] = True
    assert np.array_equal(outside[0], expected_outside)
    valid = patches[0][~outside[0]]
    assert np.all(patches[0][outside[0]] == np.median(valid))
    # a patch entirely inside the image is not touched
    patches2, outside2, _ = crop_patches(image, np.array([[15.0, 15.0]]), patch_size=11)
    assert not outside2.any() and np.all(patches2 == 7.0)


def test_crop_rejects_bad_input():
    image = _ramp()
    with pytest.raises(PatchError):
        crop_patches(image, np.array([[np.nan, 3.0]]))
    with pytest.raises(PatchError):
        crop_patches(image, np.array([[3.0, 3.0]]), patch_size=10)
    bad = image.copy()
    bad[5, 5] = np.nan
    with pytest.raises(PatchError, match="NaN"):
        crop_patches(bad, np.array([[5.0, 5.0]]))


def test_displacements_and_gaps():
    positions = np.array([[0.0, 0.0], [1.0, 0.5], [1.5, 2.5], [1.0, 2.0]])
    disp, gap = displacements_from_positions(positions, frames=np.array([3, 4, 7, 8]))
    assert np.allclose(disp, [[0, 0], [1.0, 0.5], [0.5, 2.0], [-0.5, -0.5]])
    assert gap.tolist() == [True, False, True, False]


class _CountingMovie:
    """A movie that records which frames are read."""

    def __init__(self, data):
        self.data = data
        self.shape = data.shape
        self.reads = []

    def __getitem__(self, index):
        self.reads.append(index)
        return self.data[index]


def _tracks_table():
    return pd.DataFrame(
        {
            "track_id": [2, 2, 2, 5, 5, 5, 5],
            "frame": [0, 1, 3, 1, 0, 2, 3],  # unsorted on purpose
            "y_px": [10.2, 10.8, 11.1, 0.3, 0.1, 1.0, 2.2],
            "x_px": [20.4, 21.0, 21.6, 40.2, 40.6, 48.9, 49.4],
        }
    )


def test_extract_track_patches_reads_each_frame_once_and_converts_to_photons():
    acq = Acquisition(gain_adu_per_e=2.0, offset_adu=100.0)
    rng = np.random.default_rng(0)
    movie_adu = rng.integers(100, 400, size=(4, 30, 50)).astype(np.uint16)
    movie = _CountingMovie(movie_adu)
    out = extract_track_patches(movie, _tracks_table(), acq, patch_size=7)
    assert sorted(movie.reads) == [0, 1, 2, 3]
    assert [tp.track_id for tp in out] == [2, 5]
    tp = out[0]
    assert tp.frames.tolist() == [0, 1, 3]
    assert tp.gap_before.tolist() == [True, False, True]
    assert np.allclose(tp.displacements_px, [[0, 0], [0.6, 0.6], [0.3, 0.6]])
    # patch of frame 3 centred on (11, 22), in photo-electrons
    expected = (movie_adu[3, 8:15, 19:26].astype(np.float32) - 100.0) / 2.0
    assert np.allclose(tp.patches_photons[2], expected)
    assert np.allclose(tp.subpixel_offset_px[2], [0.1, -0.4])
    # track 5 runs along the top and right border: flagged pixels there
    tp5 = out[1]
    assert tp5.frames.tolist() == [0, 1, 2, 3]
    assert tp5.outside_mask[0, :3].all() and not tp5.outside_mask[0, 3:, :].any()
    assert tp5.outside_mask[2][:, -1].all()  # x centre 49 + 3 > 49


def test_extract_track_patches_on_a_memmap(tmp_path):
    acq = Acquisition()
    data = np.memmap(tmp_path / "movie.raw", dtype=np.uint16, mode="w+", shape=(4, 30, 50))
    data[:] = 110
    data[1, 11, 21] = 600  # track 2, frame 1 is at (10.8, 21.0): centre pixel (11, 21)
    data.flush()
    movie = np.memmap(tmp_path / "movie.raw", dtype=np.uint16, mode="r", shape=(4, 30, 50))
    out = extract_track_patches(movie, _tracks_table(), acq)
    assert out[0].patches_photons.shape == (3, 11, 11)
    assert out[0].patches_photons[1, 5, 5] == 500.0 and out[0].patches_photons[0, 5, 5] == 10.0


def test_extract_track_patches_rejects_bad_tables():
    acq = Acquisition()
    movie = np.zeros((4, 30, 50), np.uint16)
    with pytest.raises(PatchError, match="lacks"):
        extract_track_patches(movie, _tracks_table().drop(columns="x_px"), acq)
    bad = _tracks_table()
    bad.loc[0, "frame"] = 9
    with pytest.raises(PatchError, match="outside"):
        extract_track_patches(movie, bad, acq)
    dup = _tracks_table()
    dup.loc[1, "frame"] = 0
    with pytest.raises(PatchError, match="same frame"):
        extract_track_patches(movie, dup, acq)
    assert extract_track_patches(movie, _tracks_table().iloc[:0], acq) == []


def test_batched_patches_match_the_track_path():
    acq = Acquisition()
    rng = np.random.default_rng(1)
    movie = rng.integers(100, 300, size=(5, 40, 40)).astype(np.uint16)
    positions = rng.uniform(3, 36, size=(3, 5, 2))
    batched = extract_patches_array(movie, positions, acq)
    table = pd.DataFrame(
        {
            "track_id": np.repeat(np.arange(3), 5),
            "frame": np.tile(np.arange(5), 3),
            "y_px": positions[..., 0].ravel(),
            "x_px": positions[..., 1].ravel(),
        }
    )
    tracks = extract_track_patches(movie, table, acq)
    for i, tp in enumerate(tracks):
        assert np.array_equal(batched.patches_photons[i], tp.patches_photons)
        assert np.array_equal(batched.outside_mask[i], tp.outside_mask)
        assert np.allclose(batched.displacements_px[i], tp.displacements_px)
        assert np.allclose(batched.subpixel_offset_px[i], tp.subpixel_offset_px, atol=1e-6)
    # per-track windows (N, T, H, W): each track cut from its own images
    windows = np.stack([movie, movie[::-1], movie])
    per_track = extract_patches_array(windows, positions, acq)
    assert np.array_equal(per_track.patches_photons[0], batched.patches_photons[0])
    cropped = crop_patches(acq.adu_to_photons(movie[4]), positions[1, :1])[0][0]
    assert np.array_equal(per_track.patches_photons[1, 0], cropped)
    with pytest.raises(PatchError):
        extract_patches_array(windows[:, :4], positions, acq)
