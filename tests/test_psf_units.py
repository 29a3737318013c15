"""Tests of estimation/psf_units.py and of PSF units in the Estimator."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import erf

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import psf_units as pu
from napari_spt_diffusion.estimation.estimator import Estimator, EstimatorError
from napari_spt_diffusion.tracking.patches import TrackPatches, crop_patches

HALF = 5  # of the 11-px virtual patch


def _spot(offset: np.ndarray, sigma_px: float, size: int, photons: float = 1000.0) -> np.ndarray:
    """``(size, size)`` pixel-integrated Gaussian spot at ``offset`` (y, x) px from the centre pixel."""
    edges = np.arange(-(size // 2), size // 2 + 2) - 0.5

    def axis(c: float) -> np.ndarray:
        return np.diff(0.5 * (1.0 + erf((edges - c) / (sigma_px * math.sqrt(2.0)))))

    return photons * np.outer(axis(offset[0]), axis(offset[1]))


def _virtual_sigma(sigma_px: float, scale: float, n: int = 100, seed: int = 0) -> tuple[float, np.ndarray]:
    """PSF sigma (virtual px, pixel integration removed) of resampled spots at random offsets, and their sums."""
    rng = np.random.default_rng(seed)
    q = pu.source_patch_size(scale)
    offsets = rng.uniform(-0.5, 0.5, (n, 2))
    patches = np.stack([_spot(o, sigma_px, q) for o in offsets])
    virtual, voff = pu.resample_patches(patches, offsets, scale)
    i = np.arange(-HALF, HALF + 1)
    prof_y, prof_x = virtual.sum(axis=2), virtual.sum(axis=1)
    tot = virtual.sum(axis=(1, 2))
    var_y = (prof_y * (i[None] - voff[:, :1]) ** 2).sum(1) / tot
    var_x = (prof_x * (i[None] - voff[:, 1:]) ** 2).sum(1) / tot
    return math.sqrt(float(np.mean(np.r_[var_y, var_x])) - 1.0 / 12.0), tot


def test_wide_spot_halved_has_unit_sigma_and_same_photons() -> None:
    sigma, sums = _virtual_sigma(2.0, 0.5)
    assert sigma == pytest.approx(1.0, abs=0.05)
    np.testing.assert_allclose(sums, 1000.0, rtol=1e-4)


@pytest.mark.parametrize("movie_sigma", [0.75, 1.5, 2.0, 2.6])
def test_pixel_corrected_scale_brings_the_spot_to_the_training_width(movie_sigma: float) -> None:
    scale = pu.psf_scale(1.0, movie_sigma)
    sigma, sums = _virtual_sigma(movie_sigma, scale)
    assert sigma == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(sums, 1000.0, rtol=1e-4)
    # the plain ratio leaves the spot too wide after resampling (what the correction is for)
    assert _virtual_sigma(movie_sigma, pu.psf_scale(1.0, movie_sigma, pixel_correction=False))[0] > sigma + 0.008


def test_virtual_patch_is_centred_on_a_lattice_with_the_particle_near_its_centre() -> None:
    rng = np.random.default_rng(3)
    scale = 0.6
    positions = 40.0 + np.cumsum(rng.normal(0, 0.8, (50, 2)), axis=0)
    image = np.zeros((100, 100), dtype=np.float32)
    patches, _, offsets = crop_patches(image, positions, pu.source_patch_size(scale))
    spots = np.stack([_spot(o, 1.7, patches.shape[1]) for o in offsets]).astype(np.float32)
    virtual, voff = pu.resample_patches(spots, offsets, scale, positions_px=positions)
    assert np.all(voff >= -0.5) and np.all(voff < 0.5)
    centres = scale * positions - voff
    np.testing.assert_allclose(centres, np.round(centres), atol=1e-9)  # one integer lattice
    i = np.arange(-HALF, HALF + 1)
    tot = virtual.sum(axis=(1, 2))
    np.testing.assert_allclose((virtual.sum(2) * i).sum(1) / tot, voff[:, 0], atol=0.03)
    np.testing.assert_allclose((virtual.sum(1) * i).sum(1) / tot, voff[:, 1], atol=0.03)


def test_displacements_and_diffusion_round_trip() -> None:
    rng = np.random.default_rng(5)
    d_movie = 0.7  # px^2/frame
    disp = rng.normal(0.0, math.sqrt(2 * d_movie), (20000, 2))
    scale = pu.psf_scale(1.0, 1.8)
    q = pu.source_patch_size(scale)
    patches = np.ones((len(disp), q, q), dtype=np.float32)
    _, virtual_disp = pu.model_inputs(patches[:50], np.zeros((50, 2)), np.zeros((50, 2)), disp[:50], scale)
    np.testing.assert_allclose(virtual_disp, scale * disp[:50])
    d_virtual = np.mean((scale * disp) ** 2) / 2.0
    assert pu.d_to_movie_px2(d_virtual, scale) == pytest.approx(np.mean(disp**2) / 2.0, rel=1e-12)
    assert pu.d_to_movie_px2(d_virtual, scale) == pytest.approx(d_movie, rel=0.03)


def test_unit_scale_is_the_identity() -> None:
    rng = np.random.default_rng(1)
    patches = rng.random((7, 13, 13)).astype(np.float32)
    disp = rng.normal(size=(7, 2))
    p, d = pu.model_inputs(patches, np.zeros((7, 2)), np.zeros((7, 2)), disp, 1.0)
    np.testing.assert_array_equal(p, patches[:, 1:-1, 1:-1])
    np.testing.assert_array_equal(d, disp)
    assert pu.source_patch_size(1.0) == 11
    assert pu.source_patch_size(2.5) == 11  # a very narrow PSF: the classical estimators still get 11 px
    standard = Acquisition()
    card = {"training_acquisition": {"psf_sigma_nm": 100.0, "pixel_size_nm": 100.0}}
    assert pu.scale_for(card, standard, "on") == 1.0
    assert pu.model_acquisition(standard, 1.0, 1.0) is standard


def test_scale_modes() -> None:
    card = {"training_acquisition": {"psf_sigma_nm": 100.0, "pixel_size_nm": 100.0}}
    slightly = Acquisition(psf_sigma_nm=110.0)
    wide = Acquisition(psf_sigma_nm=200.0)
    assert pu.scale_for(card, wide, "off") == 1.0
    assert pu.scale_for(card, slightly, "auto") == 1.0
    assert pu.scale_for(card, slightly, "on") == pytest.approx(pu.psf_scale(1.0, 1.1))
    assert pu.psf_scale(1.0, 1.1) == pytest.approx(1.0 / math.sqrt(1.1**2 + 1 / 6), rel=0.01)
    assert pu.scale_for(card, wide, "auto") == pytest.approx(pu.psf_scale(1.0, 2.0))
    assert pu.scale_for({}, wide, "on") == 1.0
    with pytest.raises(pu.PsfUnitsError):
        pu.scale_for(card, wide, "sometimes")
    judged = pu.model_acquisition(wide, 0.5, 1.0)
    assert judged.psf_sigma_px == pytest.approx(1.0)
    assert judged.background_photons == pytest.approx(4 * wide.background_photons)
    assert judged.pixel_size_nm == pytest.approx(2 * wide.pixel_size_nm)


# ------------------------------------------------------------------ the Estimator with PSF units
def _tracks(sigma_px: float, size: int, n_tracks: int = 4, n: int = 20, seed: int = 0) -> list[TrackPatches]:
    """Brownian tracks (D 0.5 px^2/frame) rendered as noisy Gaussian spots of ``sigma_px`` on background 10."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_tracks):
        pos = 30.0 + np.cumsum(rng.normal(0, 1.0, (n, 2)), axis=0)
        centre = np.floor(pos + 0.5)
        offsets = pos - centre
        patches = np.stack([_spot(o, sigma_px, size) for o in offsets]) + 10.0
        patches = rng.poisson(patches).astype(np.float32)
        disp = np.zeros_like(pos)
        disp[1:] = np.diff(pos, axis=0)
        out.append(TrackPatches(track_id=k, frames=np.arange(n), positions_px=pos, patches_photons=patches,
                                subpixel_offset_px=offsets, outside_mask=np.zeros(patches.shape, dtype=bool),
                                displacements_px=disp, gap_before=np.r_[True, np.zeros(n - 1, dtype=bool)]))
    return out


@pytest.fixture(scope="module")
def estimators() -> dict[str, Estimator]:
    return {mode: Estimator("aniso", device="cpu", psf_units=mode) for mode in ("off", "on", "auto")}


def test_estimator_on_at_the_training_psf_equals_off(estimators: dict[str, Estimator]) -> None:
    standard = Acquisition()
    assert estimators["on"].source_patch_size(standard) == 11
    big = _tracks(1.0, 13)
    small = [TrackPatches(**{**t.__dict__, "patches_photons": t.patches_photons[:, 1:-1, 1:-1].copy(),
                             "outside_mask": t.outside_mask[:, 1:-1, 1:-1].copy()}) for t in big]
    on = estimators["on"].estimate(big, standard)
    off = estimators["off"].estimate(small, standard)
    for a, b in zip(on, off):
        assert a.track_D1_um2_s == b.track_D1_um2_s and a.track_D2_um2_s == b.track_D2_um2_s
        assert a.track_theta_deg == b.track_theta_deg


def test_estimator_feeds_resampled_inputs_and_rescales_d(estimators: dict[str, Estimator]) -> None:
    acq = Acquisition(psf_sigma_nm=200.0)
    est = estimators["on"]
    scale = est.psf_scale(acq)
    assert scale == pytest.approx(pu.psf_scale(1.0, 2.0))
    q = est.source_patch_size(acq)
    assert q > 11
    tracks = _tracks(2.0, q)
    with pytest.raises(EstimatorError, match=f"{q}-px patches"):
        est.estimate(_tracks(2.0, 11), acq)
    got = est.estimate(tracks, acq)
    for tp, e in zip(tracks, got):
        p, d = pu.model_inputs(tp.patches_photons, tp.subpixel_offset_px, tp.positions_px, tp.displacements_px,
                               scale)
        d = np.array(d)
        d[0] = 0.0
        with torch.inference_mode():
            out = est.module.forward_log(torch.from_numpy(p[None].astype(np.float32)),
                                         torch.from_numpy(d[None].astype(np.float32)),
                                         torch.ones((1, len(p)), dtype=torch.bool)).numpy()[0]
        expected = acq.diffusion_to_um2_s(pu.d_to_movie_px2(math.exp(out[0]), scale))
        assert e.track_D1_um2_s == pytest.approx(expected, rel=1e-4)
    # the auto mode uses them for this movie too, and a short track's classical fallback gets 11-px patches
    short = _tracks(2.0, q, n_tracks=1, n=4)
    assert estimators["auto"].estimate(short, acq)[0].method == "classical"
    # a PSF far narrower than the training one: virtual pixels smaller than the movie's, 11-px cut
    narrow = Acquisition(psf_sigma_nm=35.0)
    assert est.psf_scale(narrow) > 1.75 and est.source_patch_size(narrow) == 11  # 9 px would do for the model
    mixed = _tracks(0.35, 11, n_tracks=2) + _tracks(0.35, 11, n_tracks=1, n=4, seed=9)
    got = est.estimate(mixed, narrow)
    assert [e.method for e in got] == ["model", "model", "classical"]
    assert all(np.isfinite(e.track_D1_um2_s) for e in got[:2])


def test_acquisition_check_judges_the_psf_as_normalised(estimators: dict[str, Estimator]) -> None:
    wide = Acquisition(psf_sigma_nm=200.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        off = estimators["off"].check_acquisition(wide, warn=False)
        on = estimators["on"].check_acquisition(wide, warn=False)
        noisy = estimators["on"].check_acquisition(wide.replace(background_photons=30.0), warn=False)
    assert any("PSF sigma" in m for m in off)
    assert not any("PSF sigma" in m for m in on)
    # 30 photons/px at scale ~0.49 are ~125 per virtual px: outside the 10 photons the model was trained at
    assert any("background" in m and "virtual pixel" in m for m in noisy)
    # lengths in virtual pixels of ~206 nm: the model's trained D range means other D in um^2/s
    assert any("virtual pixel size" in m for m in on)


# ------------------------------------------------------------------ the pipeline with PSF units
def _pipeline_runs(psf_sigma_nm: float, modes: tuple[str, ...]) -> dict[str, object]:
    from napari_spt_diffusion.pipeline import Settings, track_and_estimate
    from napari_spt_diffusion.simulation.movie import simulate_movie

    acq = Acquisition(psf_sigma_nm=psf_sigma_nm)
    sim = simulate_movie((64, 64), 40, acq, rng=3, model="aniso", particles=8, D1_range_um2_s=(0.5, 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {m: track_and_estimate(sim.movie, acq, Settings(device="cpu", psf_units=m, trust_model=True))
                for m in modes}


def test_pipeline_at_the_training_psf_is_unchanged_by_psf_units() -> None:
    runs = _pipeline_runs(100.0, ("off", "on"))
    assert runs["on"].meta["psf_units"] == {"mode": "on", "scale": 1.0, "patch_cut_px": 11}
    import pandas as pd

    pd.testing.assert_frame_equal(runs["on"].summary, runs["off"].summary)
    pd.testing.assert_frame_equal(runs["on"].tracks, runs["off"].tracks)


def test_pipeline_with_a_wide_psf_cuts_larger_patches_and_removes_the_bias() -> None:
    runs = _pipeline_runs(150.0, ("off", "auto"))
    meta = runs["auto"].meta["psf_units"]
    assert meta["scale"] == pytest.approx(pu.psf_scale(1.0, 1.5))
    assert meta["patch_cut_px"] == pu.source_patch_size(meta["scale"])
    assert runs["off"].meta["psf_units"]["scale"] == 1.0

    def bias(results) -> float:  # median over tracks of the model's mean D over the track's CVE D
        s = results.summary
        s = s[(s["method"] == "model") & (s["D_cve_um2_s"] > 0.05)]
        return float(np.median(0.5 * (s["D1_um2_s"] + s["D2_um2_s"]) / s["D_cve_um2_s"]))

    assert bias(runs["off"]) > 1.6  # the aniso model reads the wide PSF as motion blur
    assert 0.6 < bias(runs["auto"]) < 1.35
