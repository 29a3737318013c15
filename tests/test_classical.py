"""Classical estimators (estimation/classical.py, estimation/blur_moments.py) and tensor helpers
(estimation/tensor.py).

Statistical tests use fixed seeds; tolerances are a few standard errors of the mean over
the simulated tracks (the standard error is measured from the same tracks).
"""

import numpy as np
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation import blur_moments as B
from napari_spt_diffusion.estimation import classical as C
from napari_spt_diffusion.estimation.tensor import (
    eigen_from_tensor,
    sin_cos_2theta,
    tensor_from_eigen,
    theta_from_sin_cos_2theta,
)
from napari_spt_diffusion.metrics import angle_similarity_axial, mean_absolute_error
from napari_spt_diffusion.simulation.render import camera_image, render_windows
from napari_spt_diffusion.simulation.trajectories import simulate_anisotropic
from napari_spt_diffusion.tracking.patches import crop_patches


def _sem(values):
    values = np.asarray(values, float)
    return values.std(ddof=1) / np.sqrt(len(values))


# ------------------------------------------------------------------ tensor helpers
def test_tensor_round_trip_and_angle_convention():
    D1, D2, theta = np.array([3.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.5]), np.array([30.0, 0.0, 170.0])
    t = tensor_from_eigen(D1, D2, theta)
    # the D1 axis (sin theta, cos theta) in (y, x) order is an eigenvector with eigenvalue D1
    u = np.array([np.sin(np.deg2rad(30.0)), np.cos(np.deg2rad(30.0))])
    assert np.allclose(t[0] @ u, 3.0 * u)
    e1, e2, th = eigen_from_tensor(t)
    assert np.allclose(e1, D1) and np.allclose(e2, D2)
    assert np.allclose(th[[0, 2]], [30.0, 170.0]) and th[1] == 0.0
    s, c = sin_cos_2theta(theta)
    assert np.allclose(theta_from_sin_cos_2theta(s, c), theta)


# ---------------------------------------------------------------------------- CVE
def _long_tracks(n=150, t=400, D1=2.0, ratio=0.25, theta=30.0, loc_sigma_px=0.3, seed=1, acq=None):
    acq = acq or Acquisition()
    rng = np.random.default_rng(seed)
    traj = simulate_anisotropic(n, t, acq, rng, D1_um2_s=D1, D2_over_D1=ratio, theta_deg=theta)
    positions = traj.frame_positions_px + rng.normal(0.0, loc_sigma_px, (n, t, 2))
    return positions, acq


def test_cve_recovers_the_tensor_and_localization_variance():
    positions, acq = _long_tracks()
    out = C.cve_tensor_batch(positions, acq)
    for key, truth in (("D1_um2_s", 2.0), ("D2_um2_s", 0.5)):
        assert abs(out[key].mean() - truth) < 4 * _sem(out[key]), key
    # predicted sampling variance of the eigenvalues matches their spread
    assert np.sqrt(out["var_D1_um2_s2"].mean()) == pytest.approx(out["D1_um2_s"].std(), rel=0.2)
    assert np.sqrt(out["var_D2_um2_s2"].mean()) == pytest.approx(out["D2_um2_s"].std(), rel=0.2)
    assert abs(np.mean(np.abs(out["theta_deg"] - 30.0))) < 5.0
    true_var_um2 = (0.3 * acq.pixel_size_um) ** 2
    loc = out["loc_variance_um2"]
    assert abs(loc.mean() - true_var_um2) < 4 * _sem(loc)
    # Without the motion-blur coefficient (R = 0) the localization variance is off by
    # 2 R D dt per axis, many standard errors: the blur term is needed.
    blur = acq.blur_coefficient
    s0, s1, _, _ = C._cve_moments(positions)
    naive = -0.5 * np.trace(s1, axis1=1, axis2=2) * acq.pixel_size_um**2
    assert abs(naive.mean() - true_var_um2) > 10 * _sem(naive)
    expected_shift = 2 * blur * acq.diffusion_to_px2_per_frame(1.25) * acq.pixel_size_um**2
    assert true_var_um2 - naive.mean() == pytest.approx(expected_shift, rel=0.15)
    # and D from the squared displacements alone (no covariance term) is biased by (1 - 2R)
    naive_D = acq.diffusion_to_um2_s(0.25 * np.trace(s0, axis1=1, axis2=2) - 2 * (0.3**2) / 2)
    assert naive_D.mean() == pytest.approx(1.25 * (1 - 2 * blur), rel=0.05)


def test_cve_single_track_with_gaps_and_clipping():
    positions, acq = _long_tracks(n=1, t=300, seed=4)
    full = C.cve_tensor(positions[0], acq)
    keep = np.ones(300, bool)
    keep[[50, 51, 120, 200]] = False
    frames = np.arange(300)[keep]
    gappy = C.cve_tensor(positions[0][keep], acq, frames=frames)
    assert gappy.D1_um2_s == pytest.approx(full.D1_um2_s, rel=0.1)
    assert not full.clipped
    # a static particle seen through noise: short tracks often come out non-positive-definite
    rng = np.random.default_rng(2)
    static = rng.normal(0.0, 0.5, (400, 8, 2))
    out = C.cve_tensor_batch(static, acq)
    assert out["clipped"].mean() > 0.2
    assert np.all(out["D2_um2_s"][out["clipped"]] == 0.0) and np.all(out["D1_um2_s"] >= out["D2_um2_s"])
    # too short to estimate: NaN and flagged, not an exception in the middle of a movie
    short = C.cve_tensor(np.zeros((2, 2)), acq)
    assert np.isnan(short.D1_um2_s) and short.clipped
    assert np.isnan(C.msd_diffusion(np.zeros((2, 2)), acq)[0])
    with pytest.raises(C.ClassicalInputError):
        C.cve_tensor(np.zeros((5, 3)), acq)
    with pytest.raises(C.ClassicalInputError):
        C.cve_tensor(np.zeros((5, 2)), acq, frames=np.array([0, 1, 1, 2, 3]))


# ---------------------------------------------------------------------------- MSD
def test_msd_optimal_points_agree_with_michalet():
    # Michalet 2010 (no blur, long tracks): p_min ~ 2 + 2.3 x^0.52
    for x in (0.1, 1.0, 10.0, 30.0):
        p = int(C.optimal_msd_points(np.array([x]), 400, 0.0)[0])
        # the variance is flat near its minimum, so the two can differ by a point or two
        assert abs(p - (2 + 2.3 * x**0.52)) <= 2.0, (x, p)
    assert C.optimal_msd_points(np.array([0.0, 1e6]), 10, 1 / 6).tolist()[0] == 2


@pytest.mark.parametrize("D, loc_sigma_px", [(0.3, 0.05), (4.0, 0.2)])
def test_msd_alpha_is_one_for_brownian_motion_and_D_is_recovered(D, loc_sigma_px):
    positions, acq = _long_tracks(n=150, t=200, D1=D, ratio=1.0, loc_sigma_px=loc_sigma_px, seed=7)
    out = C.msd_diffusion_batch(positions, acq)
    assert abs(out["D_um2_s"].mean() - D) < 4 * _sem(out["D_um2_s"])
    alpha = out["alpha"]
    assert abs(np.mean(alpha) - 1.0) < max(4 * _sem(alpha), 0.02)
    D1, alpha1, n_points = C.msd_diffusion(positions[0], acq)
    assert D1 == pytest.approx(out["D_um2_s"][0]) and n_points == out["n_points"][0]


def test_msd_tensor_finds_the_axis():
    positions, acq = _long_tracks(n=60, t=300, D1=3.0, ratio=0.2, theta=120.0, loc_sigma_px=0.1)
    out = C.msd_tensor_batch(positions, acq)
    assert angle_similarity_axial(out["theta_deg"], np.full(60, 120.0)) > 0.97
    assert out["D1_um2_s"].mean() == pytest.approx(3.0, rel=0.1)


# ------------------------------------------------------------------- blur moments
def _blur_patches(acq, n, t, D1, ratio, theta, seed, photons=None, noise=True):
    """Patches cut at the true positions (isolates the blur estimator from localization)."""
    rng = np.random.default_rng(seed)
    traj = simulate_anisotropic(n, t, acq, rng, D1_um2_s=D1, D2_over_D1=ratio, theta_deg=theta,
                                start_px=rng.uniform(-0.5, 0.5, (n, 2)))
    pos = traj.frame_positions_px
    origin = np.floor(pos + 0.5).astype(int) - 9
    expected = render_windows(traj.substep_positions_px, origin, 19, acq, photons)
    if noise:
        images = acq.adu_to_photons(camera_image(expected, acq, rng))
    else:
        images = expected + np.float32(acq.background_photons)
    local = (pos - origin).reshape(-1, 2)
    patches, outside, offsets = crop_patches(images.reshape(-1, 19, 19), local, 11, image_index=np.arange(n * t))
    return patches.reshape(n, t, 11, 11), offsets.reshape(n, t, 2), pos


def test_blur_moments_recover_D_of_fast_particles():
    acq = Acquisition()
    patches, offsets, _ = _blur_patches(acq, 100, 30, 4.0, 0.5, 60.0, seed=3)
    out = B.blur_moment_tensor_batch(patches, acq, subpixel_offset_px=offsets)
    for key, truth in (("D1_um2_s", 4.0), ("D2_um2_s", 2.0)):
        assert abs(out[key].mean() - truth) < max(4 * _sem(out[key]), 0.05 * truth), key
    assert angle_similarity_axial(out["theta_deg"], np.full(100, 60.0)) > 0.95
    # the frame-scatter variance describes the spread of the estimates
    assert np.sqrt(np.nanmean(out["var_D1_um2_s2"])) == pytest.approx(out["D1_um2_s"].std(), rel=0.3)
    single = B.blur_moment_tensor(patches[0], acq, subpixel_offset_px=offsets[0])
    assert single.D1_um2_s == pytest.approx(out["D1_um2_s"][0], rel=1e-3)


def test_blur_factor_is_exact_for_a_partial_exposure():
    # Half the frame exposed: 5 of 10 sub-positions averaged, R = (25 - 1) / (6 * 5 * 10)
    # = 0.08, less than half the continuous-exposure 1/6.
    acq = Acquisition(exposure_s=0.005)
    assert acq.exposed_substeps == 5 and acq.blur_coefficient == pytest.approx(0.08)
    patches, offsets, _ = _blur_patches(acq, 150, 30, 3.0, 1.0, 0.0, seed=5, noise=False)
    out = B.blur_moment_tensor_batch(patches, acq, subpixel_offset_px=offsets)
    trace = out["D1_um2_s"] + out["D2_um2_s"]
    assert abs(trace.mean() - 6.0) < max(4 * _sem(trace), 0.3)
    # the continuous-exposure factor would be off by a factor 0.08 / (1/6)
    assert abs(trace.mean() * acq.blur_coefficient * 6 - 6.0) > 2.5
    # the standard acquisition's factor (1 - 1/n^2) / 6 for n = 10 averaged sub-positions
    std = Acquisition()
    patches, offsets, _ = _blur_patches(std, 150, 30, 3.0, 1.0, 0.0, seed=6, noise=False)
    out = B.blur_moment_tensor_batch(patches, std, subpixel_offset_px=offsets)
    trace = out["D1_um2_s"] + out["D2_um2_s"]
    assert trace.mean() == pytest.approx(6.0, rel=0.06)


def test_blur_moments_of_a_static_particle_are_near_zero_and_ignore_outside_pixels():
    acq = Acquisition()
    patches, offsets, _ = _blur_patches(acq, 60, 30, 0.0, 1.0, 0.0, seed=8)
    out = B.blur_moment_tensor_batch(patches, acq, subpixel_offset_px=offsets)
    assert np.mean(out["D1_um2_s"] + out["D2_um2_s"]) < 0.3
    # masking the outer two columns changes little (pixels outside an image are ignored)
    mask = np.zeros(patches.shape, bool)
    mask[..., :2] = True
    masked = patches.copy()
    masked[mask] = 1e4  # garbage where the mask says "outside"
    out2 = B.blur_moment_tensor_batch(masked, acq, subpixel_offset_px=offsets, outside_mask=mask)
    assert np.mean(out2["D1_um2_s"] + out2["D2_um2_s"]) < 0.5
    none = B.blur_moment_tensor_batch(patches[:2], Acquisition(substeps_per_frame=1), subpixel_offset_px=offsets[:2])
    assert np.all(np.isnan(none["D1_um2_s"])) and none["clipped"].all()


def test_combined_is_at_least_as_good_as_either_estimator():
    acq = Acquisition()
    rng = np.random.default_rng(11)
    D1 = rng.choice(np.arange(1, 121) * 0.05, 200)
    ratio = rng.uniform(0.1, 1.0, 200)
    theta = rng.uniform(0, 180, 200)
    patches, offsets, pos = _blur_patches(acq, 200, 30, D1, ratio, theta, seed=12)
    positions = pos + rng.normal(0, 0.05, pos.shape)
    cve = C.cve_tensor_batch(positions, acq)
    blur = B.blur_moment_tensor_batch(patches, acq, subpixel_offset_px=offsets)
    comb = B.combined_tensor_batch(positions, patches, acq, subpixel_offset_px=offsets)
    mae = {name: mean_absolute_error(o["D1_um2_s"], D1) + mean_absolute_error(o["D2_um2_s"], ratio * D1)
           for name, o in (("cve", cve), ("blur", blur), ("comb", comb))}
    assert mae["blur"] < 0.6 * mae["cve"]
    assert mae["comb"] <= 1.03 * min(mae["cve"], mae["blur"])
    single = B.combined_tensor(positions[0], patches[0], acq, subpixel_offset_px=offsets[0])
    assert single.D1_um2_s == pytest.approx(comb["D1_um2_s"][0], rel=1e-3)
    assert np.isfinite(single.loc_variance_um2)


def test_path_covariance_of_cve_and_blur_matches_simulation():
    # Noise-free 1-D estimates from the same paths: the CVE from the frame-mean positions,
    # the blur estimate from the scatter of the exposed sub-positions. Their covariance is
    # the shared path noise used to weight the combination.
    acq = Acquisition()
    rng = np.random.default_rng(21)
    traj = simulate_anisotropic(3000, 30, acq, rng, D1_um2_s=1.0, D2_over_D1=1.0, theta_deg=0.0)
    cve = C.cve_tensor_batch(traj.frame_positions_px, acq)["tensor_px2_frame"][:, 1, 1]
    sub = traj.exposed_substep_positions_px[..., 1]
    spread = sub.var(axis=-1).mean(axis=-1) / (2 * acq.blur_coefficient)
    D = acq.diffusion_to_px2_per_frame(1.0)
    assert cve.mean() == pytest.approx(D, rel=0.03) and spread.mean() == pytest.approx(D, rel=0.02)
    kappa = B._cve_blur_path_covariance(30, acq.substeps_per_frame, acq.exposed_substeps)
    assert np.cov(cve, spread)[0, 1] == pytest.approx(kappa * D**2, rel=0.15)
