"""The floors of the foreign-optics benchmark (benchmarks/_foreign_oracle.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from _foreign_oracle import cve_per_track, oracle_cuts
from napari_spt_diffusion.acquisition import Acquisition


def _truth(rng: np.random.Generator, n: int = 60, d_um2_s=(0.05, 0.5), separation_px: float = 0.3) -> pd.DataFrame:
    """Two Brownian particles (100 nm pixels, 10 ms frames) that meet ``separation_px`` apart at frame n // 2."""
    rows = []
    for k, d in enumerate(d_um2_s):
        sd_px = np.sqrt(2 * d * 0.01) / 0.1
        path = np.cumsum(rng.normal(0, sd_px, size=(n, 2)), axis=0)
        path += np.array([20.0 + separation_px * k, 20.0]) - path[n // 2]
        rows += [{"track_id": k, "frame": f, "x_px": path[f, 1], "y_px": path[f, 0], "D1_um2_s": d, "D2_um2_s": d}
                 for f in range(n)]
    return pd.DataFrame(rows)


def test_cve_per_track_recovers_the_diffusion_coefficient():
    truth = _truth(np.random.default_rng(1), n=4000, d_um2_s=(0.1, 1.0), separation_px=50.0)
    d = cve_per_track(truth, Acquisition(pixel_size_nm=100.0, frame_interval_s=0.01))
    assert d[0] == pytest.approx(0.1, rel=0.1) and d[1] == pytest.approx(1.0, rel=0.1)


def test_oracle_cuts_an_ambiguous_meeting_of_unlike_particles_and_the_tails_resolve_it():
    hits = spared = 0
    for seed in range(20):
        truth = _truth(np.random.default_rng(seed))
        plain = oracle_cuts(truth, 0.01, 0.1)
        tail = oracle_cuts(truth, 0.01, 0.1, tail_links=10)
        hits += plain["particles_cut"] == 2
        spared += plain["particles_cut"] == 2 and tail["boundaries_cut"] < plain["boundaries_cut"]
        assert plain["long_tracks"] == 2 and plain["pieces"] == 2 + plain["boundaries_cut"]  # a cut: one more piece
    assert hits >= 10  # the meeting 0.3 px apart is usually ambiguous on the crossing step alone
    assert spared >= hits // 2  # ten steps of a 10 x faster particle tell the two apart
    # far apart, nothing is cut
    far = oracle_cuts(_truth(np.random.default_rng(0), separation_px=40.0), 0.01, 0.1)
    assert far["particles_cut"] == 0 and far["pieces"] == 2 and far["pieces_touching_cut"] == 0.0
    assert far["long_recovered"] == 2
