"""Tests of tracking.link: trackpy linking with gap memory, search range, oversize recovery."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion import Acquisition
from napari_spt_diffusion.tracking import (
    LinkingError,
    LinkingWarning,
    default_search_range_px,
    link,
)

ACQ = Acquisition()


def brownian_table(n_tracks: int, n_frames: int, D_um2_s: float, rng: np.random.Generator, *,
                   field_px: float = 300.0, loc_noise_px: float = 0.03, drop_fraction: float = 0.0) -> pd.DataFrame:
    """Localizations of independent Brownian particles, with truth ids and random missed frames."""
    step = math.sqrt(2 * ACQ.diffusion_to_px2_per_frame(D_um2_s))
    # start on a grid (spacing >= 40 px) so that true tracks do not cross: the answer is unique
    side = math.ceil(math.sqrt(n_tracks))
    spacing = max(40.0, field_px / side)
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), axis=-1).reshape(-1, 2)
    start = (20.0 + spacing * grid[:n_tracks])[:, None, :]
    paths = start + np.cumsum(rng.normal(0, step, size=(n_tracks, n_frames, 2)), axis=1)
    paths += rng.normal(0, loc_noise_px, size=paths.shape)
    truth, frame = np.meshgrid(np.arange(n_tracks), np.arange(n_frames), indexing="ij")
    table = pd.DataFrame({
        "frame": frame.ravel(), "y_px": paths[..., 0].ravel(), "x_px": paths[..., 1].ravel(),
        "truth": truth.ravel(), "photons": rng.uniform(500, 1500, n_tracks * n_frames),
    })
    if drop_fraction:
        inner = (table["frame"] > 0) & (table["frame"] < n_frames - 1)
        drop = inner & (rng.random(len(table)) < drop_fraction)
        table = table[~drop]
    # shuffle rows: linking must not depend on the input order
    return table.sample(frac=1.0, random_state=1).reset_index(drop=True)


def test_default_search_range_follows_diffusion_and_acquisition():
    # 3 * sqrt(4 D dt) with D = 6 um^2/s, dt = 10 ms, 100 nm pixels: 3 * 0.4899 um = 14.70 px
    assert default_search_range_px(ACQ, 6.0) == pytest.approx(3 * math.sqrt(4 * 6.0 * 0.01) / 0.1, rel=1e-12)
    # slower frames or larger D widen it as sqrt; localization precision adds in quadrature
    slower = ACQ.replace(frame_interval_s=0.04)
    assert default_search_range_px(slower, 6.0) == pytest.approx(2 * default_search_range_px(ACQ, 6.0))
    with_noise = default_search_range_px(ACQ, 1.0, loc_precision_nm=50.0)
    assert with_noise == pytest.approx(3 * math.sqrt(4 * 1.0 * 0.01 / 0.01 + 4 * 0.5**2))
    with pytest.raises(ValueError):
        default_search_range_px(ACQ, 0.0)


def test_link_recovers_known_tracks_with_gaps():
    rng = np.random.default_rng(11)
    table = brownian_table(25, 60, D_um2_s=1.0, rng=rng, drop_fraction=0.05)
    result = link(table, ACQ, max_D_um2_s=1.0, memory_frames=2)
    tracks = result.tracks
    assert not result.messages
    # every reconstructed track holds one true particle, and every particle is one track
    assert (tracks.groupby("track_id")["truth"].nunique() == 1).all()
    assert (tracks.groupby("truth")["track_id"].nunique() == 1).all()
    assert result.n_tracks == 25
    assert len(tracks) == len(table)


def test_link_output_contract():
    rng = np.random.default_rng(3)
    table = brownian_table(8, 12, D_um2_s=0.5, rng=rng)
    result = link(table, ACQ, max_D_um2_s=1.0, min_track_length=5)
    tracks = result.tracks
    assert list(tracks.columns) == [*table.columns, "track_id", "encounter_cut", "is_short"]
    assert not tracks["encounter_cut"].any()
    assert tracks["track_id"].dtype == np.int64 and tracks["is_short"].dtype == bool
    keys = tracks[["track_id", "frame"]].to_numpy()
    assert np.array_equal(np.lexsort((keys[:, 1], keys[:, 0])), np.arange(len(keys)))
    assert list(tracks.index) == list(range(len(tracks)))
    assert set(tracks["track_id"]) == set(range(result.n_tracks))
    # extra columns travel with their localization
    merged = tracks.merge(table, on=["frame", "truth"], suffixes=("", "_in"))
    assert np.allclose(merged["photons"], merged["photons_in"])
    assert np.allclose(merged["y_px"], merged["y_px_in"])


def test_short_tracks_are_kept_and_flagged():
    rng = np.random.default_rng(5)
    long = brownian_table(3, 20, 0.2, rng)
    short = brownian_table(2, 3, 0.2, rng)
    short["truth"] += 100
    short[["y_px", "x_px"]] += 400.0  # far from the others
    table = pd.concat([long, short], ignore_index=True)
    tracks = link(table, ACQ, max_D_um2_s=0.5, min_track_length=10).tracks
    per_track = tracks.groupby("track_id").agg(n=("frame", "size"), short=("is_short", "first"),
                                               truth=("truth", "first"))
    assert len(per_track) == 5
    assert (per_track["short"] == (per_track["n"] < 10)).all()
    assert per_track["short"].sum() == 2 and set(per_track.loc[per_track["short"], "truth"]) == {100, 101}
    # with a threshold of 3 nothing is short
    assert not link(table, ACQ, max_D_um2_s=0.5, min_track_length=3).tracks["is_short"].any()


def test_oversize_subnetwork_is_recovered_with_message_and_warning():
    # 50 particles packed in 12 x 12 px moving very little, linked with a 20 px range:
    # every particle is a candidate of every other, far beyond trackpy's subnet limit.
    rng = np.random.default_rng(0)
    start = rng.uniform(0, 12, size=(50, 2))
    rows = []
    for frame in range(3):
        positions = start + rng.normal(0, 0.03, size=start.shape)
        rows += [(frame, y, x, i) for i, (y, x) in enumerate(positions)]
    table = pd.DataFrame(rows, columns=["frame", "y_px", "x_px", "truth"])
    with pytest.warns(LinkingWarning):
        result = link(table, ACQ, search_range_px=20.0)
    assert result.messages
    # trackpy's message: "Subnetwork contains N points" (recursive linker) or "... sub net contains N
    # points" (its numba linker, used when numba is installed)
    assert "crowded" in result.messages[0]
    assert any(s in result.messages[0] for s in ("Subnetwork contains", "sub net contains"))
    assert result.search_range_px <= 20.0
    tracks = result.tracks
    assert result.n_tracks == 50
    assert (tracks.groupby("track_id")["truth"].nunique() == 1).all()


def test_trackpy_printing_is_silenced(capsys):
    rng = np.random.default_rng(2)
    link(brownian_table(5, 10, 0.5, rng), ACQ)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_no_warning_in_the_ordinary_case():
    rng = np.random.default_rng(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        link(brownian_table(5, 10, 0.5, rng), ACQ)


def test_empty_table_gives_empty_tracks():
    empty = pd.DataFrame({"frame": pd.Series(dtype=np.int64), "y_px": pd.Series(dtype=float),
                          "x_px": pd.Series(dtype=float)})
    result = link(empty, ACQ)
    assert len(result.tracks) == 0 and result.n_tracks == 0
    assert {"track_id", "is_short"} <= set(result.tracks.columns)


@pytest.mark.parametrize(
    "table, match",
    [
        (pd.DataFrame({"frame": [0, 1], "y_px": [1.0, 2.0]}), "x_px"),
        (pd.DataFrame({"frame": [0, 1], "y_px": [1.0, np.nan], "x_px": [1.0, 2.0]}), "NaN"),
        (pd.DataFrame({"frame": [0, -1], "y_px": [1.0, 2.0], "x_px": [1.0, 2.0]}), "frame"),
        (pd.DataFrame({"frame": [0, 0.5], "y_px": [1.0, 2.0], "x_px": [1.0, 2.0]}), "frame"),
    ],
)
def test_bad_tables_are_refused(table, match):
    with pytest.raises(LinkingError, match=match):
        link(table, ACQ)
    assert issubclass(LinkingError, ValueError)


def test_bad_parameters_are_refused():
    table = pd.DataFrame({"frame": [0, 1], "y_px": [1.0, 2.0], "x_px": [1.0, 2.0]})
    for kwargs in ({"memory_frames": -1}, {"min_track_length": 0}, {"search_range_px": -3.0},
                   {"max_D_um2_s": float("nan")}):
        with pytest.raises(ValueError):
            link(table, ACQ, **kwargs)
