"""The model guard: a population test of a model's diffusion coefficients against the CVE."""

import numpy as np
import pytest

from napari_spt_diffusion.estimation.guard import decide, population_ratio


def brownian_population(rng, n_tracks, bias, frames=30, loc_sd_px=0.3):
    """Model values ``bias x`` the truth (15 % scatter) and the CVE of simulated tracks (px^2/frame)."""
    D = np.exp(rng.uniform(np.log(0.005), np.log(3.0), n_tracks))
    steps = rng.normal(size=(n_tracks, frames - 1, 2)) * np.sqrt(2 * D)[:, None, None]
    positions = np.concatenate([np.zeros((n_tracks, 1, 2)), np.cumsum(steps, axis=1)], axis=1)
    positions += rng.normal(size=positions.shape) * loc_sd_px
    d = np.diff(positions, axis=1)
    cve = ((d**2).mean(axis=1) / 2 + (d[:, 1:] * d[:, :-1]).mean(axis=1)).mean(axis=1)
    model = D * bias * np.exp(rng.normal(size=n_tracks) * 0.15)
    return model, cve, np.full(n_tracks, loc_sd_px**2), np.full(n_tracks, frames - 1)


@pytest.mark.parametrize("bias", [0.4, 3.0])
def test_guard_fires_on_a_biased_model(bias):
    rng = np.random.default_rng(5)
    factor, low, high, n = population_ratio(*brownian_population(rng, 100, bias), blur=0.0)
    assert n == 100 and low < factor < high
    assert factor == pytest.approx(bias, rel=0.2)
    decision = decide((factor, low, high, n), model_name="aniso")
    assert decision.rejected and "biased" in decision.reason and "aniso" in decision.reason


def test_guard_stays_silent_on_unbiased_models():
    rng = np.random.default_rng(6)
    decisions = [decide(population_ratio(*brownian_population(rng, 100, 1.0), blur=0.0, rng=seed))
                 for seed in range(20)]
    # the target is <= 1 % false alarms (measured in benchmarks/bench_guard.py); 1 of 20 here
    assert sum(d.rejected for d in decisions) <= 1
    assert np.median([d.bias_factor for d in decisions]) == pytest.approx(1.0, abs=0.05)


def test_out_of_range_acquisition_rejects_unless_shown_unbiased():
    rng = np.random.default_rng(7)
    message = ["PSF sigma 1.7 px is outside what model 'aniso' was trained for (1 px); ..."]
    few = population_ratio(*brownian_population(rng, 5, 1.0), blur=0.0)
    decision = decide(few, message, model_name="aniso")
    assert decision.rejected and "PSF sigma 1.7 px" in decision.reason and decision.n_tracks == 5
    many = population_ratio(*brownian_population(rng, 2000, 1.0, frames=60), blur=0.0)
    assert decide(many, message).rejected is False
    assert decide(few).rejected is False  # in range, too few tracks to judge: the model stays


def test_population_ratio_ignores_unusable_tracks_and_reports_nothing_without_any():
    model = np.array([1.0, np.nan, 0.0, 2.0])
    cve = np.array([1.0, 1.0, 1.0, np.inf])
    factor, low, high, n = population_ratio(model, cve, np.zeros(4), np.full(4, 29), blur=1 / 6)
    assert n == 1
    assert np.isnan(population_ratio([], [], [], [], blur=0.0)[0])
    decision = decide((factor, low, high, n))
    assert decision.to_dict()["n_tracks"] == 1 and decision.rejected is False


@pytest.mark.parametrize(
    ("bias", "rejected"),
    [
        ((1.08, 1.04, 1.12, 300), False),  # significant but within 10 %: a small bias is tolerated
        ((0.92, 0.88, 0.96, 300), False),
        ((1.16, 1.11, 1.21, 300), True),  # shown beyond 10 %
        ((0.85, 0.80, 0.895, 300), True),
        ((1.35, 1.05, 1.80, 30), True),  # few tracks: not shown beyond 10 %, but a large bias, significant
        ((1.20, 1.02, 1.45, 30), False),  # neither shown beyond 10 % nor large
        ((1.40, 0.95, 2.00, 30), False),  # large but not significant
    ],
)
def test_guard_rejects_a_bias_shown_beyond_the_margin_or_large_and_significant(bias, rejected):
    assert decide(bias, model_name="aniso").rejected is rejected



def test_guard_weights_do_not_read_a_model_high_when_its_errors_share_the_cves_noise():
    """A model that reads the same noisy positions errs with the CVE, track by track. On a population
    whose half is nearly immobile (bound), weights falling as 1 / D_model (the inverse-variance
    choice) read such an unbiased model 5-7 % high, its truth outside the 99 % interval."""
    rng = np.random.default_rng(8)
    n_tracks, frames, loc_sd_px = 3000, 30, 0.3
    D = np.exp(rng.uniform(np.log(0.05), np.log(3.0), n_tracks))
    D[: n_tracks // 2] = 0.005  # bound: the steps are far below the localization noise
    steps = rng.normal(size=(n_tracks, frames - 1, 2)) * np.sqrt(2 * D)[:, None, None]
    positions = np.concatenate([np.zeros((n_tracks, 1, 2)), np.cumsum(steps, axis=1)], axis=1)
    d = np.diff(positions + rng.normal(size=positions.shape) * loc_sd_px, axis=1)
    cve = ((d**2).mean(axis=1) / 2 + (d[:, 1:] * d[:, :-1]).mean(axis=1)).mean(axis=1)
    # the apparent mean squared step, corrected for the localization noise on average: unbiased for D
    model = np.maximum(((d**2).sum(axis=2).mean(axis=1) - 4 * loc_sd_px**2) / 4, 1e-4)
    true_bias = model.sum() / D.sum()
    assert true_bias == pytest.approx(1.0, abs=0.02)
    factor, low, high, n = population_ratio(model, cve, np.full(n_tracks, loc_sd_px**2),
                                            np.full(n_tracks, frames - 1), blur=0.0)
    assert n == n_tracks
    assert factor == pytest.approx(true_bias, abs=0.035)
    assert low < true_bias < high
