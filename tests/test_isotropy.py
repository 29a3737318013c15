"""The isotropy test of a track's displacements and the movie's verdict (estimation/isotropy.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_spt_diffusion.estimation.isotropy import isotropy_p_value, movie_isotropy, without_excursions


def _track(rng: np.random.Generator, n_frames: int, d1: float, d2: float, noise: float = 0.0,
           theta: float = 0.6, state_scale: np.ndarray | None = None, substeps: int = 10) -> np.ndarray:
    """``(n_frames, 2)`` blurred positions (mean over the frame's ``substeps``) of a walk with
    tensor ``diag(d1, d2)`` per frame rotated by ``theta``, plus Gaussian noise of SD ``noise``;
    ``state_scale`` ``(n_frames,)`` multiplies the frame's variance (segments of different D)."""
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    scale = np.ones(n_frames) if state_scale is None else np.asarray(state_scale, dtype=float)
    steps = rng.standard_normal((n_frames * substeps, 2)) * np.sqrt(2.0 * np.array([d1, d2]) / substeps)
    steps *= np.sqrt(np.repeat(scale, substeps))[:, None]
    walk = np.cumsum(steps @ rot.T, axis=0).reshape(n_frames, substeps, 2).mean(axis=1)
    return walk + noise * rng.standard_normal((n_frames, 2))


def _rejections(p: np.ndarray, level: float) -> float:
    assert np.isfinite(p).all()
    return float(np.mean(p < level))


# binomial SD of a 5 % rate over 3000 tracks: 0.4 points; the bounds are about 3 SD
LOW, HIGH = 0.038, 0.062


@pytest.mark.parametrize("n_frames, d, noise", [(20, 1.0, 0.0), (20, 0.05, 0.5), (60, 0.2, 0.3)])
def test_isotropic_tracks_are_rejected_at_the_nominal_rate(n_frames, d, noise):
    """With blur alone (displacements correlated +1/4), noise dominating (-1/2) or both: 5 % at 5 %."""
    rng = np.random.default_rng(n_frames + int(100 * noise))
    frames = np.arange(n_frames)
    p = np.array([isotropy_p_value(_track(rng, n_frames, d, d, noise), frames) for _ in range(3000)])
    assert LOW < _rejections(p, 0.05) < HIGH
    assert 0.17 < _rejections(p, 0.2) < 0.23


def test_the_correction_for_correlated_displacements_is_needed():
    """Noise-dominated tracks (lag-1 correlation -1/2): the plain Wishart degrees of freedom over-reject."""
    rng = np.random.default_rng(11)
    n_frames = 20
    plain = [_plain_wishart_p(_track(rng, n_frames, 0.02, 0.02, noise=0.5)) for _ in range(3000)]
    assert _rejections(np.array(plain), 0.05) > 0.07


def _switching(rng: np.random.Generator, n_frames: int, p_switch: float = 0.03, ratio: float = 0.01) -> np.ndarray:
    """Per-frame variance scale of a particle that binds (D x ``ratio``) and unbinds at random."""
    state, out = rng.random() < 0.5, np.empty(n_frames)
    for t in range(n_frames):
        state = (not state) if rng.random() < p_switch else state
        out[t] = 1.0 if state else ratio
    return out


def _plain_wishart_p(pos: np.ndarray) -> float:
    d = np.diff(pos, axis=0)
    d = d - d.mean(axis=0)
    s = d.T @ d
    return float((4 * np.linalg.det(s) / np.trace(s) ** 2) ** ((len(d) - 2) / 2))


def test_segments_of_different_diffusivity_keep_the_rate():
    """Binding and unbinding (D / 100) at random, the segments not known, or known: nominal; the plain
    Wishart degrees of freedom (steps of one size) reject far too often."""
    rng = np.random.default_rng(5)
    n_frames = 60
    frames = np.arange(n_frames)
    tracks = [_track(rng, n_frames, 1.0, 1.0, noise=0.02, state_scale=_switching(rng, n_frames)) for _ in range(3000)]
    assert LOW < _rejections(np.array([isotropy_p_value(t, frames) for t in tracks]), 0.05) < HIGH
    assert _rejections(np.array([_plain_wishart_p(t) for t in tracks]), 0.05) > 0.15
    scale = np.r_[np.ones(30), np.full(30, 0.01)]
    segments = (frames >= 30).astype(int)
    known = [isotropy_p_value(_track(rng, n_frames, 1.0, 1.0, noise=0.02, state_scale=scale), frames, segments)
             for _ in range(3000)]
    assert LOW < _rejections(np.array(known), 0.05) < HIGH


def test_heavy_tailed_localization_errors_keep_the_rate():
    """One localization in 20 five times noisier (a neighbour's light, a missed spot): nominal."""
    rng = np.random.default_rng(8)
    frames = np.arange(40)
    p = []
    for _ in range(3000):
        pos = _track(rng, 40, 0.05, 0.05)
        pos += 0.3 * rng.standard_normal((40, 2)) * np.where(rng.random(40) < 0.05, 5.0, 1.0)[:, None]
        p.append(isotropy_p_value(pos, frames))
    assert LOW < _rejections(np.array(p), 0.05) < HIGH


def test_single_frame_excursions_are_left_out():
    """Slow tracks whose localization jumps, 3 % of frames, 6-12 noise SDs along one direction per track (a
    neighbour's light, a one-frame linking slip): nominal, while the same test on all frames over-rejects."""
    rng = np.random.default_rng(9)
    frames = np.arange(60)
    kept, everything = [], []
    for _ in range(3000):
        pos = _track(rng, 60, 0.05, 0.05, noise=0.3)
        phi = rng.uniform(0, np.pi)
        hits = rng.random(60) < 0.03
        pos += hits[:, None] * 0.3 * rng.uniform(6, 12, 60)[:, None] * np.array([np.cos(phi), np.sin(phi)])
        kept.append(isotropy_p_value(pos, frames))
        everything.append(_plain_wishart_p(pos))
    assert LOW < _rejections(np.array(kept), 0.05) < HIGH
    assert _rejections(np.array(everything), 0.05) > 0.15


def test_excursions_are_found_per_segment_and_only_between_consecutive_frames():
    rng = np.random.default_rng(10)
    pos = _track(rng, 40, 1.0, 1.0, noise=0.05)
    pos[12] += [30.0, 0.0]
    out = without_excursions(pos, np.arange(40))
    assert np.isnan(out[12]).all() and np.isfinite(np.delete(out, 12, axis=0)).all()
    gapped = np.r_[np.arange(12), np.arange(13, 41)]  # row 12 has a gap before it: not judged
    assert np.isfinite(without_excursions(pos, gapped)[12]).all()
    # a fast segment after a slow one is not an excursion of the slow one's spread
    slow_fast = np.r_[_track(rng, 20, 0.01, 0.01), 20 + _track(rng, 20, 4.0, 4.0)]
    segments = np.r_[np.zeros(20), np.ones(20)]
    assert np.isfinite(without_excursions(slow_fast, np.arange(40), segments)[21:39]).sum() >= 30


@pytest.mark.parametrize("n_frames, ratio, power", [(30, 0.2, 0.8), (100, 0.5, 0.7)])
def test_anisotropic_tracks_are_found(n_frames, ratio, power):
    rng = np.random.default_rng(int(10 * ratio))
    frames = np.arange(n_frames)
    p = np.array([isotropy_p_value(_track(rng, n_frames, 1.0, ratio, noise=0.1), frames) for _ in range(500)])
    assert _rejections(p, 0.05) > power


def test_invariant_to_rotation_scale_and_drift():
    rng = np.random.default_rng(2)
    pos = _track(rng, 40, 1.0, 0.4)
    frames = np.arange(40)
    p = isotropy_p_value(pos, frames)
    c, s = np.cos(1.1), np.sin(1.1)
    moved = 3.7 * pos @ np.array([[c, -s], [s, c]]).T + np.outer(frames, [0.8, -0.3]) + 50.0
    assert isotropy_p_value(moved, frames) == pytest.approx(p, rel=1e-9)


def test_only_consecutive_frames_in_one_segment_are_used():
    rng = np.random.default_rng(3)
    a, b = _track(rng, 20, 1.0, 1.0), _track(rng, 20, 1.0, 1.0)
    frames = np.r_[np.arange(20), np.arange(25, 45)]
    joined = np.r_[a, b + [100.0, 0.0]]  # a large jump along x across the gap
    across_gap = isotropy_p_value(joined, frames)
    assert across_gap == pytest.approx(isotropy_p_value(np.r_[a, b], frames), rel=1e-12)  # the jump not used
    halves = np.r_[np.zeros(20), np.ones(20)]
    across_change = isotropy_p_value(joined, np.arange(40), segments=halves)
    assert across_change == pytest.approx(isotropy_p_value(np.r_[a, b], np.arange(40), halves), rel=1e-12)
    # taken as consecutive frames of one segment, the jump is a step (one outlier: the effective degrees of
    # freedom fall to about 2, so it does not make the track anisotropic by itself)
    assert isotropy_p_value(joined, np.arange(40)) != pytest.approx(across_gap, rel=1e-3)


def test_too_short_or_still_tracks_and_bad_shapes():
    assert np.isnan(isotropy_p_value(np.zeros((2, 2)), np.arange(2)))
    assert np.isnan(isotropy_p_value(np.zeros((10, 2)), np.arange(10)))  # no motion
    assert np.isnan(isotropy_p_value(np.random.default_rng(0).normal(size=(10, 2)), np.arange(0, 20, 2)))  # gaps
    with pytest.raises(ValueError, match="positions_px"):
        isotropy_p_value(np.zeros((10, 3)), np.arange(10))


def test_movie_verdict_on_isotropic_and_mixed_populations():
    rng = np.random.default_rng(7)
    calm = movie_isotropy(rng.uniform(size=200))
    assert not calm.anisotropic and calm.movie_p > 0.01 and calm.n_tested == 200
    assert calm.anisotropic_share_lower_bound < 0.2 and "no evidence of anisotropic diffusion" in calm.text
    mixed = movie_isotropy(np.r_[rng.uniform(size=140), rng.uniform(0, 1e-3, size=60), [np.nan]])
    assert mixed.anisotropic and mixed.n_tested == 200 and mixed.n_anisotropic >= 60
    assert abs(mixed.anisotropic_share_lower_bound - 0.3) < 3 * mixed.anisotropic_share_se + 0.02
    assert "at least about" in mixed.text
    empty = movie_isotropy([np.nan])
    assert empty.n_tested == 0 and not empty.anisotropic and np.isnan(empty.movie_p)


def test_movie_p_is_the_binomial_tail_at_the_allowed_rate():
    """Exact: 3 of 20 tracks below 0.05, tested against a per-track rate of 10 %."""
    p = np.r_[0.01, 0.02, 0.03, np.linspace(0.2, 0.9, 17)]
    verdict = movie_isotropy(p)
    assert verdict.n_anisotropic == 3 and verdict.null_rate == 0.1 and verdict.expected_by_chance == 1.0
    assert verdict.movie_p == pytest.approx(1 - sum(math.comb(20, k) * 0.1**k * 0.9 ** (20 - k) for k in range(3)))
    assert movie_isotropy(p, null_rate=0.05).movie_p == pytest.approx(
        1 - sum(math.comb(20, k) * 0.05**k * 0.95 ** (20 - k) for k in range(3)))
    above = int((p > 0.5).sum())
    assert verdict.anisotropic_share_se == pytest.approx(2 * math.sqrt(above / 20 * (1 - above / 20) / 20))


def test_a_rate_of_9_5_percent_is_not_called_anisotropic():
    """500 isotropic tracks whose per-track rate is 9.5 % (what the independent renderer gave at NA 0.8) are not
    called anisotropic; 500 of which a quarter are clearly anisotropic are."""
    rng = np.random.default_rng(12)
    artefact = np.where(rng.random(500) < 0.095, rng.uniform(0, 0.05, 500), rng.uniform(0.05, 1, 500))
    assert not movie_isotropy(artefact).anisotropic
    real = np.where(rng.random(500) < 0.25, rng.uniform(0, 0.01, 500), rng.uniform(0, 1, 500))
    assert movie_isotropy(real).anisotropic


def test_the_share_is_a_lower_bound_where_the_test_is_weak():
    """Every track anisotropic, but weakly (short tracks, D2 / D1 = 0.5): the bound stays far below 1."""
    rng = np.random.default_rng(13)
    frames = np.arange(15)
    p = [isotropy_p_value(_track(rng, 15, 1.0, 0.5, noise=0.1), frames) for _ in range(400)]
    verdict = movie_isotropy(p)
    assert verdict.anisotropic_share_lower_bound < 0.6


def test_segment_labels_that_come_back_are_new_segments():
    rng = np.random.default_rng(14)
    pos = _track(rng, 30, 1.0, 1.0)
    frames = np.arange(30)
    labels = np.r_[np.zeros(10), np.ones(10), np.zeros(10)]
    assert isotropy_p_value(pos, frames, labels) == pytest.approx(isotropy_p_value(pos, frames, np.repeat([0, 1, 2],
                                                                                                         10)))
