"""sCMOS fixed pattern of the training renderer: static in the movie, of the asked spread."""

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.simulation.fixed_pattern import apply_fixed_pattern, pixel_normals
from napari_spt_diffusion.simulation.optics import RenderOptics
from napari_spt_diffusion.simulation.trajectories import SimulationError
from napari_spt_diffusion.training.acquisition_ranges import RANGES
from napari_spt_diffusion.training.samples import SampleSettings, make_samples

ACQ = Acquisition(gain_adu_per_e=2.0, offset_adu=100.0)


def test_pixel_normals_are_standard_normal_and_depend_on_every_argument():
    y, x = np.meshgrid(np.arange(200), np.arange(200), indexing="ij")
    a = pixel_normals(5, np.zeros_like(y), y, x)
    assert abs(a.mean()) < 0.02 and abs(a.std() - 1.0) < 0.02
    assert abs(np.mean(a > 1.96) - 0.025) < 0.004  # the tails of a normal, not of a uniform
    np.testing.assert_array_equal(a, pixel_normals(5, np.zeros_like(y), y, x))  # a function of its arguments
    for other in (pixel_normals(6, np.zeros_like(y), y, x), pixel_normals(5, np.ones_like(y), y, x),
                  pixel_normals(5, np.zeros_like(y), y + 1, x)):
        assert abs(np.corrcoef(a.ravel(), other.ravel())[0, 1]) < 0.02


def test_the_pattern_is_fixed_in_the_movie_and_has_the_asked_spread():
    level = 100.0 + 2.0 * 600.0  # a flat window: 600 e- per pixel, no noise
    windows = np.full((3, 40, 40), level, dtype=np.uint16)
    origins = np.array([[0, 0], [5, -3], [0, 0]])
    tracks = np.array([0, 0, 1])
    out = apply_fixed_pattern(windows, origins, tracks, ACQ, 0.05, 0.0, key=11).astype(float)
    electrons = (out - 100.0) / 2.0
    assert abs(electrons[0].std() - 0.05 * 600) < 3.0 and abs(electrons[0].mean() - 600) < 3.0
    # the second window of track 0 sees the same movie pixels where the two overlap (shifted by its origin)
    np.testing.assert_array_equal(out[1][:35, 3:], out[0][5:, :37])
    assert abs(np.corrcoef(out[0].ravel(), out[2].ravel())[0, 1]) < 0.1  # another track, another patch of camera
    # the offset spread is in electrons, whatever the signal
    offsets = apply_fixed_pattern(np.full((1, 60, 60), 100, np.uint16), np.zeros((1, 2), int), np.zeros(1, int), ACQ,
                                  0.0, 2.0, key=3).astype(float)
    assert abs((offsets - 100.0).std() / 2.0 - 2.0) < 0.2
    same = apply_fixed_pattern(windows, origins, tracks, ACQ, 0.0, 0.0, key=1)
    np.testing.assert_array_equal(same, windows)


def test_training_samples_with_a_fixed_pattern_are_noisier_under_a_bright_background():
    acq = Acquisition(background_photons=600.0, signal_photons=3000.0)
    plain = make_samples("aniso", 40, n_frames=10, acquisition=acq, seed=4)
    pattern = make_samples("aniso", 40, n_frames=10, acquisition=acq, seed=4,
                           settings=SampleSettings(optics=RenderOptics(pixel_gain_cv=0.05)))

    def corner_variance(batch):  # the patches' first and last rows, far from the spot, frame by frame
        edge = np.concatenate([batch.patches[:, :, 0, :], batch.patches[:, :, -1, :]], axis=-1)
        return float(np.mean(np.var(edge, axis=-1, ddof=1)))

    # shot noise 600 e-^2 (plus read noise), the pattern adds (0.05 x 600)^2 = 900
    assert 500 < corner_variance(plain) < 700
    assert 1300 < corner_variance(pattern) < 1700


def test_ranges_draw_a_fixed_pattern_only_where_they_ask_for_one():
    rng = np.random.default_rng(0)
    drawn = [RANGES["psf_units_airy_px_mild_fp"].draw_optics(rng) for _ in range(400)]
    share = np.mean([o.has_fixed_pattern for o in drawn])
    assert 0.4 < share < 0.6
    cvs = [o.pixel_gain_cv for o in drawn if o.has_fixed_pattern]
    assert min(cvs) >= 0.005 and max(cvs) <= 0.08
    rng = np.random.default_rng(0)
    assert not any(RANGES["psf_units_airy_px_mild"].draw_optics(rng).has_fixed_pattern for _ in range(200))
    assert "fixed pattern" in RANGES["psf_units_airy_px_mild_fp"].to_dict()["camera"]
    with pytest.raises(SimulationError, match="pixel_gain_cv"):
        RenderOptics(pixel_gain_cv=0.5)


def test_training_windows_get_their_tracks_movie_pixels_and_one_camera_per_call(monkeypatch):
    from napari_spt_diffusion.training import samples

    calls = []
    real = samples.apply_fixed_pattern

    def spy(windows, origins, tracks, acquisition, gain_cv, offset_sd_e, key):
        calls.append((np.array(origins), np.array(tracks), key, windows.shape[-1]))
        return real(windows, origins, tracks, acquisition, gain_cv, offset_sd_e, key)

    monkeypatch.setattr(samples, "apply_fixed_pattern", spy)
    monkeypatch.setattr(samples, "_MAX_TILES_PER_MOSAIC", 50)  # several mosaics: a track crosses their boundary
    n, t = 12, 9
    batch = make_samples("aniso", n, n_frames=t, acquisition=Acquisition(background_photons=300.0), seed=8,
                         settings=SampleSettings(optics=RenderOptics(pixel_gain_cv=0.05, pixel_offset_sd_e=1.0)))
    assert len(calls) == -(-n * t // 50) and len({c[2] for c in calls}) == 1  # one camera for the whole call
    window = calls[0][3]
    np.testing.assert_array_equal(np.concatenate([c[1] for c in calls]), np.repeat(np.arange(n), t))
    centre = np.floor(batch.true_positions_px.reshape(n * t, 2) + 0.5).astype(np.int64)
    np.testing.assert_array_equal(np.concatenate([c[0] for c in calls]), centre - window // 2)


def test_gain_and_offset_patterns_are_independent():
    y, x = np.meshgrid(np.arange(150), np.arange(150), indexing="ij")
    acq = Acquisition(gain_adu_per_e=1.0, offset_adu=1000.0)
    flat = np.full((1, 150, 150), 1000 + 400, np.uint16)
    gain_only = apply_fixed_pattern(flat, np.zeros((1, 2), int), np.zeros(1, int), acq, 0.05, 0.0, key=9)
    offset_only = apply_fixed_pattern(flat, np.zeros((1, 2), int), np.zeros(1, int), acq, 0.0, 10.0, key=9)
    r = np.corrcoef(gain_only.ravel().astype(float), offset_only.ravel().astype(float))[0, 1]
    assert abs(r) < 0.03
    assert y.shape == gain_only.shape[1:]
