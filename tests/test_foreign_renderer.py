"""The foreign-optics renderer (``validation.foreign_renderer``): photometry, PSF shape, camera,
motion, file and independence from the training renderer.

Every expected value here is computed in this file from the physics (Airy formulas, Bessel
identities, direct quadrature), not by calling the renderer's own helpers.
"""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, optimize, special

from napari_spt_diffusion.validation import foreign_renderer as fr
from napari_spt_diffusion.validation.foreign_renderer import (
    AiryPSF,
    ForeignCamera,
    ForeignMotion,
    ForeignOptics,
    ForeignScene,
    airy_sigma_equivalent_nm,
    render_foreign_movie,
    simulate_foreign_paths,
    write_imagej_tiff,
)

NARROW = ForeignOptics(na=1.45, wavelength_nm=520.0)
WIDE = ForeignOptics(na=0.8, wavelength_nm=640.0)


def _kappa(optics: ForeignOptics) -> float:
    return 2.0 * math.pi * optics.na * optics.pixel_size_nm / optics.wavelength_nm


def _airy(r: np.ndarray, kappa: float) -> np.ndarray:
    """Airy density per px^2 (normalised over the plane), written out independently."""
    v = kappa * np.asarray(r, dtype=float)
    v = np.where(v == 0, 1e-300, v)
    amp = np.where(v < 1e-8, 1.0, 2.0 * special.j1(v) / v)
    return kappa**2 / (4.0 * math.pi) * amp**2


def _in_square_share(r: float, h: float) -> float:
    """Share of a circle of radius r (h <= r <= h sqrt 2) inside the square of half-width h."""
    return 1.0 - 4.0 / math.pi * math.acos(h / r)


def _square_fraction(kappa: float, h: float) -> float:
    v = kappa * h
    disc = 1.0 - special.j0(v) ** 2 - special.j1(v) ** 2
    ring, _ = integrate.quad(lambda r: _airy(r, kappa) * 2 * math.pi * r * _in_square_share(r, h), h, h * math.sqrt(2),
                             limit=400)
    return float(disc + ring)


def _square_second_moment_per_axis(kappa: float, h: float) -> float:
    """int_square x^2 p dA for the continuous Airy density, from int_0^V v J1^2 dv = V^2/2 (J1^2 - J0 J2)."""
    v = kappa * h
    disc = (v / kappa) ** 2 * (special.j1(v) ** 2 - special.j0(v) * special.jv(2, v))
    ring, _ = integrate.quad(lambda r: r**2 * _airy(r, kappa) * 2 * math.pi * r * _in_square_share(r, h), h,
                             h * math.sqrt(2), limit=400)
    return 0.5 * float(disc + ring)


@pytest.fixture(scope="module")
def narrow_psf() -> AiryPSF:
    return AiryPSF(NARROW)


@pytest.fixture(scope="module")
def wide_psf() -> AiryPSF:
    return AiryPSF(WIDE)


# ---- photometry -------------------------------------------------------------------------------


def test_static_particle_photon_sum_is_photons_times_enclosed_fraction(narrow_psf: AiryPSF) -> None:
    photons, background = 3000.0, 600.0
    scene = ForeignScene(shape_yx=(128, 128), n_frames=3, n_particles=1, photons=photons, background=background,
                         start_margin_px=50.0)  # the 97 x 97 px window stays inside the field
    static = ForeignMotion(kind="free", d_range=(1e-12, 1e-12))
    movie = render_foreign_movie(scene, NARROW, ForeignCamera(), static, rng=11, keep_expected=True, psf=narrow_psf)
    assert movie.expected is not None
    signal = movie.expected.sum(axis=(1, 2)) - background * 128 * 128
    expected = photons * _square_fraction(_kappa(NARROW), NARROW.tail_radius_px + 0.5)
    np.testing.assert_allclose(signal, expected, rtol=0.01)
    assert abs(movie.acquisition["enclosed_fraction"] * photons / expected - 1) < 1e-3
    # and the light really is long-tailed: a 4-sigma box misses several percent
    assert 0.99 < movie.acquisition["enclosed_fraction"] < 0.995


def test_beam_and_bleaching_scale_spots_and_background(narrow_psf: AiryPSF) -> None:
    """A Gaussian beam with its corners at 35 % and a bleaching half-life of 4 frames: the background pixels and
    a static particle's photons follow exp(-r^2 / 2 w^2) 2^(-t / 4), and the truth's photons say so; a flicker
    scales both by one factor per frame."""
    from napari_spt_diffusion.validation.foreign_illumination import ForeignIllumination

    photons, background, corner, half_life = 3000.0, 600.0, 0.35, 4.0
    light = ForeignIllumination(corner_relative=corner, bleach_half_life_frames=half_life)
    scene = ForeignScene(shape_yx=(128, 128), n_frames=5, n_particles=1, photons=photons, background=background,
                         start_margin_px=50.0, illumination=light)
    static = ForeignMotion(kind="free", d_range=(1e-12, 1e-12))
    movie = render_foreign_movie(scene, NARROW, ForeignCamera(), static, rng=11, keep_expected=True, psf=narrow_psf)
    assert movie.expected is not None
    t = np.arange(5)
    fade = 0.5 ** (t / half_life)
    centre = 63.5
    w2 = (2 * centre**2) / (-2 * math.log(corner))  # the corner pixel centres lie at r^2 = 2 x 63.5^2
    # a corner pixel, far from the particle (started >= 50 px from every edge), holds only background
    np.testing.assert_allclose(movie.expected[:, 0, 0], background * corner * fade, rtol=1e-9)
    y, x = movie.truth["y_px"][0], movie.truth["x_px"][0]
    lit = math.exp(-((y - centre) ** 2 + (x - centre) ** 2) / (2 * w2))
    np.testing.assert_allclose(movie.truth["photons"], photons * lit * fade, rtol=1e-6)
    yy, xx = np.mgrid[0:128, 0:128]
    field = np.exp(-((yy - centre) ** 2 + (xx - centre) ** 2) / (2 * w2))
    signal = movie.expected.sum(axis=(1, 2)) - background * field.sum() * fade
    expected = photons * lit * fade * _square_fraction(_kappa(NARROW), NARROW.tail_radius_px + 0.5)
    np.testing.assert_allclose(signal, expected, rtol=0.01)
    assert movie.acquisition["background_photons_field_mean"] == pytest.approx(background * field.mean() * fade.mean())
    assert movie.acquisition["signal_photons_field_mean"] == pytest.approx(float(np.mean(photons * lit * fade)))
    # flicker: every frame's spots and background share one random factor 1 + 0.05 z
    flicker = ForeignScene(shape_yx=(128, 128), n_frames=60, n_particles=1, photons=photons, background=background,
                           start_margin_px=50.0, illumination=ForeignIllumination(flicker_sd=0.05))
    lit_movie = render_foreign_movie(flicker, NARROW, ForeignCamera(), static, rng=12, keep_expected=True,
                                     psf=narrow_psf)
    assert lit_movie.expected is not None
    power = lit_movie.expected[:, 0, 0] / background
    assert 0.03 < np.std(power) < 0.07 and abs(np.mean(power) - 1) < 0.03
    np.testing.assert_allclose(lit_movie.truth["photons"], photons * power, rtol=1e-9)
    with pytest.raises(ValueError, match="flicker"):
        ForeignIllumination(flicker_sd=0.5)
    with pytest.raises(ValueError, match="corner_relative"):
        ForeignIllumination(corner_relative=0.0)
    with pytest.raises(ValueError, match="bleach"):
        ForeignIllumination(bleach_half_life_frames=-1.0)


@pytest.mark.parametrize("which", ["narrow", "wide"])
def test_window_sum_any_subpixel_offset(which: str, narrow_psf: AiryPSF, wide_psf: AiryPSF) -> None:
    psf, optics = (narrow_psf, NARROW) if which == "narrow" else (wide_psf, WIDE)
    frac = _square_fraction(_kappa(optics), optics.tail_radius_px + 0.5)
    for y, x in [(64.0, 64.0), (64.37, 63.79), (64.49, 64.5), (63.6, 64.2)]:
        total = psf.expected_image((128, 128), np.array([y]), np.array([x]), 1.0).sum()
        assert abs(total / frac - 1) < 1e-3, (y, x, total, frac)


# ---- PSF shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["narrow", "wide"])
def test_second_moment_over_window_matches_analytic_airy(which: str, narrow_psf: AiryPSF, wide_psf: AiryPSF) -> None:
    """Centred emitter: sum of x^2 over the pixel-integrated window = continuous moment over the
    same square + mass / 12 (pixel integration; Poisson summation is exact for the band-limited
    Airy at these samplings, up to the window's edges)."""
    psf, optics = (narrow_psf, NARROW) if which == "narrow" else (wide_psf, WIDE)
    kappa, h = _kappa(optics), optics.tail_radius_px + 0.5
    image = psf.expected_image((128, 128), np.array([64.0]), np.array([64.0]), 1.0)
    yy, xx = np.mgrid[:128, :128]
    mx = float((image * (xx - 64.0) ** 2).sum())
    my = float((image * (yy - 64.0) ** 2).sum())
    expected = _square_second_moment_per_axis(kappa, h) + _square_fraction(kappa, h) / 12.0
    assert abs(mx / expected - 1) < 0.02 and abs(my / expected - 1) < 0.02, (mx, my, expected)


def _quadrature_pixels(kappa: float, y0: float, x0: float, rows: np.ndarray, cols: np.ndarray,
                       nodes: int = 16) -> np.ndarray:
    """Pixel integrals of the Airy density by Gauss-Legendre quadrature (independent of the renderer)."""
    g, gw = np.polynomial.legendre.leggauss(nodes)
    g, gw = 0.5 * g, 0.5 * gw  # on [-0.5, 0.5]
    ys = (rows[:, None] + g[None, :]).ravel() - y0
    xs = (cols[:, None] + g[None, :]).ravel() - x0
    vals = _airy(np.hypot(ys[:, None], xs[None, :]), kappa)
    vals = vals.reshape(rows.size, nodes, cols.size, nodes)
    return np.einsum("anbm,n,m->ab", vals, gw, gw)


@pytest.mark.parametrize("which", ["narrow", "wide"])
def test_core_matches_direct_high_resolution_airy_at_fractional_offset(which: str, narrow_psf: AiryPSF,
                                                                       wide_psf: AiryPSF) -> None:
    psf, optics = (narrow_psf, NARROW) if which == "narrow" else (wide_psf, WIDE)
    y0, x0 = 64.37, 63.79  # not on the tail's 1/8-px table
    half = 6 if which == "narrow" else 10
    rows = cols = np.arange(64 - half, 64 + half + 1, dtype=float)
    ref = _quadrature_pixels(_kappa(optics), y0, x0, rows, cols)
    image = psf.expected_image((128, 128), np.array([y0]), np.array([x0]), 1.0)
    got = image[64 - half:64 + half + 1, 64 - half:64 + half + 1]
    # the 7 x 7 midpoint rule is off by about 0.2 % of the peak at the narrow core's peak pixel
    assert np.abs(got - ref).max() < 5e-3 * ref.max()
    assert abs(got.sum() / ref.sum() - 1) < 1e-3
    for axis, c in ((1, x0), (0, y0)):
        coord = (cols if axis == 1 else rows) - c
        w = ref.sum(axis=1 - axis)
        wg = got.sum(axis=1 - axis)
        m_ref = (w * coord**2).sum() / w.sum()
        m_got = (wg * coord**2).sum() / wg.sum()
        assert abs(m_got / m_ref - 1) < 0.02, (axis, m_got, m_ref)
        # same centroid (sub-pixel placement), to 0.005 px
        assert abs((wg * coord).sum() / wg.sum() - (w * coord).sum() / w.sum()) < 0.005


def test_sigma_equivalent_formula() -> None:
    assert airy_sigma_equivalent_nm(1.45, 520.0) == pytest.approx(0.21 * 520 / 1.45)
    assert NARROW.sigma_equivalent_px == pytest.approx(0.753, abs=0.001)
    assert WIDE.sigma_equivalent_px == pytest.approx(1.68, abs=0.001)
    # a least-squares Gaussian fit to the Airy pattern lands on 0.21 lambda / NA
    for optics in (NARROW, WIDE):
        kappa = _kappa(optics)
        yy, xx = np.mgrid[-40:41, -40:41] / 8.0  # 1/8 px grid over +-5 px
        r = np.hypot(yy, xx).ravel()
        prof = _airy(r, kappa)
        (_, sig), _ = optimize.curve_fit(lambda q, a, s: a * np.exp(-(q**2) / (2 * s * s)), r, prof,
                                         p0=[prof.max(), 1.0])
        assert abs(abs(sig) / optics.sigma_equivalent_px - 1) < 0.03
    with pytest.raises(ValueError):
        airy_sigma_equivalent_nm(0.0, 500.0)


# ---- camera ------------------------------------------------------------------------------------


def test_gain_and_offset_maps_statistics() -> None:
    rng = np.random.default_rng(5)
    gain, offset = ForeignCamera().maps((300, 300), rng)
    assert gain.shape == offset.shape == (300, 300)
    assert gain.mean() == pytest.approx(20.0, abs=0.02) and gain.std() == pytest.approx(1.0, rel=0.02)
    assert offset.mean() == pytest.approx(1000.0, abs=0.3) and offset.std() == pytest.approx(20.0, rel=0.02)
    assert abs(np.corrcoef(gain.ravel(), offset.ravel())[0, 1]) < 0.02  # independent maps
    g2, o2 = ForeignCamera(kind="plain", gain_adu_per_e=2.0, offset_adu=100.0).maps((8, 8), rng)
    assert np.all(g2 == 2.0) and np.all(o2 == 100.0)


def test_camera_noise_photon_transfer() -> None:
    rng = np.random.default_rng(6)
    photons = np.full((400, 400), 50.0)
    plain = ForeignCamera(kind="plain", gain_adu_per_e=2.0, offset_adu=100.0, read_noise_e=1.6)
    adu = plain.expose(photons, *plain.maps(photons.shape, rng), rng).astype(float)
    assert adu.mean() == pytest.approx(100 + 2 * 50, abs=0.1)
    assert adu.var() == pytest.approx(4 * (50 + 1.6**2) + 1 / 12, rel=0.03)
    em = ForeignCamera(kind="emccd", gain_adu_per_e=0.5, offset_adu=100.0, read_noise_e=0.0, em_gain=100.0)
    adu = em.expose(photons, *em.maps(photons.shape, rng), rng).astype(float)
    assert adu.mean() == pytest.approx(100 + 0.5 * 100 * 50, rel=0.01)
    # excess-noise factor sqrt 2: variance twice the shot noise
    assert adu.var() / (0.5**2 * 100**2 * 50) == pytest.approx(2.0, rel=0.05)
    sat = plain.expose(np.full((4, 4), 1e6), *plain.maps((4, 4), rng), rng)
    assert sat.dtype == np.uint16 and np.all(sat == 65535)


# ---- motion ------------------------------------------------------------------------------------


def _paths(motion: ForeignMotion, n: int, frames: int, seed: int) -> dict[str, np.ndarray]:
    start = np.full((n, 2), 64.0)
    return simulate_foreign_paths(motion, start, frames, 10, 0.01, 0.1, np.random.default_rng(seed))


def test_isotropic_step_variance_is_2_d_dt_per_axis() -> None:
    d = 0.5
    p = _paths(ForeignMotion(kind="free", d_range=(d, d)), 2000, 4, 1)
    dt_sub, px_um = 0.001, 0.1
    expected = 2 * d * dt_sub / px_um**2  # px^2 per sub-step
    for key in ("x", "y"):
        steps = np.diff(p[key], axis=1)
        assert steps.var() / expected == pytest.approx(1.0, abs=0.04)  # N = 78,000: SE 0.5 %
        assert abs(steps.mean()) < 0.02 * math.sqrt(expected)
    # frame means (what the camera sees): Var = 2 D dt (2/3 + 1 / (3 S^2)) per axis
    xf = p["x"].reshape(2000, 4, 10).mean(axis=2)
    assert np.diff(xf, axis=1).var() / (2 * d * 0.01 / px_um**2 * (2 / 3 + 1 / 300)) == pytest.approx(1.0, abs=0.06)


def test_anisotropic_steps_along_and_across_the_axis() -> None:
    p = _paths(ForeignMotion(kind="aniso"), 1500, 3, 2)
    d1, d2, th = p["D1"][:, 0], p["D2"][:, 0], np.deg2rad(p["theta_deg"][:, 0])
    assert np.all(np.isclose(d1 / 0.05, np.round(d1 / 0.05))) and d1.min() >= 0.05 and d1.max() <= 6.0
    ratio = d2 / d1
    assert ratio.min() >= 0.1 and ratio.max() < 1.0
    assert 0 <= p["theta_deg"].min() and p["theta_deg"].max() < 180
    dx, dy = np.diff(p["x"], axis=1), np.diff(p["y"], axis=1)
    along = dx * np.cos(th)[:, None] + dy * np.sin(th)[:, None]  # from +x towards +y
    across = -dx * np.sin(th)[:, None] + dy * np.cos(th)[:, None]
    unit = 2 * 0.001 / 0.1**2
    assert np.mean(along**2 / (unit * d1[:, None])) == pytest.approx(1.0, abs=0.03)
    assert np.mean(across**2 / (unit * d2[:, None])) == pytest.approx(1.0, abs=0.03)
    assert abs(np.mean(along * across / (unit * np.sqrt(d1 * d2)[:, None]))) < 0.03


def test_binding_switches_and_state_steps() -> None:
    motion = ForeignMotion(kind="binding")
    p = _paths(motion, 1000, 100, 3)
    flips = np.diff(p["state"], axis=1) != 0  # 1000 x 999 sub-step transitions
    per_frame = 10 * flips.mean()
    assert per_frame == pytest.approx(10 * (1 - 0.97**0.1), rel=0.1)  # 0.0304 switches per frame
    steps = np.diff(p["x"], axis=1)
    state = p["state"][:, 1:]  # a step moves in the state of the sub-step it leads to
    for s, d in ((0, 0.02), (1, 2.0)):
        assert steps[state == s].var() / (2 * d * 0.001 / 0.01) == pytest.approx(1.0, abs=0.03)
    assert set(np.unique(p["label"])) == {0, 1}


def test_truth_rows_only_inside_the_field_and_start_margin() -> None:
    scene = ForeignScene(shape_yx=(48, 48), n_frames=25, n_particles=20, photons=1000.0, background=10.0,
                         start_margin_px=16.0)
    small = ForeignOptics(na=1.45, wavelength_nm=520.0, tail_radius_px=10)  # a short tail: fast
    psf = AiryPSF(small)
    static = ForeignMotion(kind="free", d_range=(1e-12, 1e-12))
    camera = ForeignCamera(kind="plain")
    t = render_foreign_movie(scene, small, camera, static, rng=np.random.default_rng(7), psf=psf).truth
    for key in ("x_px", "y_px"):  # at least 16 px from the border, edges at -0.5 and 47.5
        assert np.all(np.minimum(t[key] + 0.5, 47.5 - t[key]) >= 16.0)
    fast = ForeignMotion(kind="free", d_range=(3.0, 3.0))
    movie = render_foreign_movie(scene, small, camera, fast, rng=np.random.default_rng(7), psf=psf)
    t = movie.truth
    assert movie.movie.shape == (25, 48, 48) and movie.movie.dtype == np.uint16
    assert np.all((t["x_px"] >= -0.5) & (t["x_px"] < 47.5) & (t["y_px"] >= -0.5) & (t["y_px"] < 47.5))
    assert (t["frame"] == 0).sum() == 20
    assert len(t["frame"]) < 20 * 25  # some left the 48-px field at D = 3 um^2/s
    assert set(t) >= {"track_id", "frame", "x_px", "y_px", "D1_um2_s", "D2_um2_s", "theta_deg", "state"}


# ---- file --------------------------------------------------------------------------------------


def test_tiff_holds_pixel_size_and_frame_interval_only(tmp_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    movie = np.random.default_rng(0).integers(900, 3000, (4, 16, 20)).astype(np.uint16)
    path = write_imagej_tiff(tmp_path / "m.tif", movie, pixel_size_nm=100.0, frame_interval_s=0.01)
    with tifffile.TiffFile(path) as tf:
        assert tf.is_imagej
        meta = tf.imagej_metadata
        np.testing.assert_array_equal(tf.asarray(), movie)
        page = tf.pages[0]
        xres = page.tags["XResolution"].value
        assert xres[0] / xres[1] == pytest.approx(10.0)  # px per um
        text = " ".join(str(tag.value) for tag in page.tags.values()).lower()
    assert meta["unit"] == "um" and meta["finterval"] == pytest.approx(0.01)
    allowed = {"ImageJ", "images", "frames", "hyperstack", "mode", "loop", "unit", "finterval"}
    assert set(meta) <= allowed, set(meta) - allowed
    for word in ("psf", "sigma", "gain", "offset", "photon", "camera", "wavelength", "aperture", "noise", "adu"):
        assert word not in text, word


# ---- independence from the training renderer -------------------------------------------------


def test_renderer_imports_nothing_from_the_pipeline_or_training_code() -> None:
    src = Path(fr.__file__).resolve().parent
    allowed_third_party = {"numpy", "scipy", "tifffile", "pandas"}
    forbidden = ("simulation", "tracking", "estimation", "training")
    for path in sorted(src.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level >= 2:
                    raise AssertionError(f"{path.name}: relative import above validation/: {ast.unparse(node)}")
                if node.level == 1:
                    assert node.module is None or node.module.split(".")[0] not in forbidden, ast.unparse(node)
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert not any(f".{f}" in f".{name}" for f in forbidden), f"{path.name}: {name}"
                assert top in sys.stdlib_module_names or top in allowed_third_party or top == "__future__", \
                    f"{path.name} imports {name}"


def test_protocol_and_extra_cases() -> None:
    from napari_spt_diffusion.validation.foreign_renderer import EXTRA_CASES, FOREIGN_CASES, foreign_case

    assert not set(EXTRA_CASES) & set(FOREIGN_CASES)  # the protocol's cases are unchanged
    seeds = [c[5] for c in (*FOREIGN_CASES.values(), *EXTRA_CASES.values())]
    assert len(set(seeds)) == len(seeds)
    wide = foreign_case("binding_wide")
    assert wide["motion"].kind == "binding" and wide["optics"].na == foreign_case("free_wide")["optics"].na
    assert wide["seed"] == EXTRA_CASES["binding_wide"][5]
    with pytest.raises(KeyError):
        foreign_case("no_such_case")
