"""Results -> napari layer data conversion (no viewer, no Qt)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion._napari import layers
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.results import SUMMARY_COLUMNS, TRACKS_COLUMNS, Results, format_changepoint_frames
from napari_spt_diffusion.simulation.trajectories import simulate_anisotropic, simulate_binding

ACQ = Acquisition(pixel_size_nm=110.0, frame_interval_s=0.02)


def results_from_trajectories(traj, model: str, first_id: int = 0, offset_px=(20.0, 30.0)) -> Results:
    """Truth tables in the results contract from simulator trajectories (test helper)."""
    n, T = traj.frame_positions_px.shape[:2]
    spread = np.stack([np.zeros(n), 8.0 * np.arange(n)], axis=-1)[:, None, :]  # 8 px apart in x
    pos = traj.frame_positions_px + np.asarray(offset_px) + spread
    ids = np.repeat(np.arange(first_id, first_id + n), T)
    frames = np.tile(np.arange(T), n)
    acq = traj.acquisition
    is_cp = np.zeros((n, T), dtype=bool)
    for i, cps in enumerate(traj.changepoint_frames):
        is_cp[i, np.asarray(cps, dtype=int)] = True
    tracks = pd.DataFrame(
        {
            "track_id": ids,
            "frame": frames,
            "t_s": frames * acq.frame_interval_s,
            "x_px": pos[..., 1].ravel(),
            "y_px": pos[..., 0].ravel(),
            "x_um": pos[..., 1].ravel() * acq.pixel_size_um,
            "y_um": pos[..., 0].ravel() * acq.pixel_size_um,
            "photons": np.full(n * T, acq.signal_photons),
            "background": np.full(n * T, acq.background_photons),
            "loc_precision_nm": np.full(n * T, 10.0),
            "D1_um2_s": traj.D1_um2_s.ravel(),
            "D2_um2_s": traj.D2_um2_s.ravel(),
            "theta_deg": traj.theta_deg.ravel(),
            "state": traj.state.ravel(),
            "is_changepoint": is_cp.ravel(),
        }
    )[list(TRACKS_COLUMNS)]
    D1 = traj.D1_um2_s.mean(axis=1)
    D2 = traj.D2_um2_s.mean(axis=1)
    summary = pd.DataFrame(
        {
            "track_id": np.arange(first_id, first_id + n),
            "n_frames": T,
            "frame_start": 0,
            "frame_end": T - 1,
            "x_mean_px": pos[..., 1].mean(axis=1),
            "y_mean_px": pos[..., 0].mean(axis=1),
            "D1_um2_s": D1,
            "D2_um2_s": D2,
            "theta_deg": traj.theta_deg[:, 0],
            "anisotropy": 1 - D2 / D1,
            "D_msd_um2_s": (D1 + D2) / 2 * 1.1,
            "D_cve_um2_s": (D1 + D2) / 2 * 0.9,
            "alpha_msd": np.ones(n),
            "n_changepoints": [len(c) for c in traj.changepoint_frames],
            "changepoint_frames": [format_changepoint_frames(c) for c in traj.changepoint_frames],
            "model": model,
        }
    )[list(SUMMARY_COLUMNS)]
    return Results(tracks, summary, {"model": model, "acquisition": acq.to_dict()})


@pytest.fixture(scope="module")
def aniso() -> Results:
    traj = simulate_anisotropic(6, 20, ACQ, rng=1)
    return results_from_trajectories(traj, "aniso")


@pytest.fixture(scope="module")
def binding() -> Results:
    traj = simulate_binding(5, 30, ACQ, rng=2)
    return results_from_trajectories(traj, "binding")


def shuffled(res: Results, seed: int = 0) -> Results:
    """Same results with the tracks rows in random order (Results validation bypassed)."""
    r = Results.__new__(Results)
    r.tracks = res.tracks.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    r.summary = res.summary
    r.meta = res.meta
    return r


def test_tracks_layer_data_sorted_with_features(aniso):
    data, kwargs, kind = layers.tracks_layer(shuffled(aniso), color_by="D1")
    assert kind == "tracks"
    assert data.shape == (6 * 20, 4)
    keys = data[:, :2]
    assert np.array_equal(np.lexsort((keys[:, 1], keys[:, 0])), np.arange(len(keys)))
    feats = kwargs["features"]
    assert len(feats) == len(data)
    for col in ("D1_um2_s", "D2_um2_s", "theta_deg", "anisotropy", "state", "D_msd_um2_s", "D_cve_um2_s", "alpha_msd"):
        assert col in feats.columns
    # features follow the sorted vertices: same track ids and frames row by row
    assert np.array_equal(feats["track_id"].to_numpy(), data[:, 0].astype(int))
    assert np.array_equal(feats["frame"].to_numpy(), data[:, 1].astype(int))
    # vertex positions match the table
    t = aniso.tracks.set_index(["track_id", "frame"])
    idx = pd.MultiIndex.from_arrays([data[:, 0].astype(int), data[:, 1].astype(int)])
    assert np.allclose(t.loc[idx, "y_px"].to_numpy(), data[:, 2])
    assert np.allclose(t.loc[idx, "x_px"].to_numpy(), data[:, 3])
    # classical estimates repeated per vertex from the summary
    s = aniso.summary.set_index("track_id")
    assert np.allclose(feats["D_msd_um2_s"], s.loc[feats["track_id"], "D_msd_um2_s"].to_numpy())
    assert np.allclose(feats["anisotropy"], 1 - feats["D2_um2_s"] / feats["D1_um2_s"])
    # colour by the normalised D1 feature with its own colormap, values in [0, 1]
    assert kwargs["color_by"] == "D1 colour"
    assert set(kwargs["colormaps_dict"]) == {f"{k} colour" for k in layers.COLOR_KEYS}
    for key in layers.COLOR_KEYS:
        col = feats[f"{key} colour"]
        assert col.between(0, 1).all()
    # larger D1 -> larger normalised value (monotone map)
    order = np.argsort(feats["D1_um2_s"].to_numpy())
    assert np.all(np.diff(feats["D1 colour"].to_numpy()[order]) >= -1e-12)


def test_color_scale_log_ticks_in_physical_units(aniso):
    scale = layers.color_scale(aniso, "D1")
    assert scale.log and scale.unit == "um²/s" and "um²/s" in scale.title
    assert scale.normalise([scale.vmin])[0] == pytest.approx(0.0)
    assert scale.normalise([scale.vmax])[0] == pytest.approx(1.0)
    geo_mid = np.sqrt(scale.vmin * scale.vmax)
    assert scale.normalise([geo_mid])[0] == pytest.approx(0.5)
    # limits and ticks on round values of the 1-2-5 series (0.01, 0.1, 1 um²/s)
    for v in (scale.vmin, scale.vmax):
        mantissa = v / 10 ** np.floor(np.log10(v) + 1e-9)
        assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6, v
    pos, labels = scale.ticks(5)
    assert pos[0] == pytest.approx(0) and pos[-1] == pytest.approx(1) and np.all(np.diff(pos) > 0)
    assert float(labels[0]) == pytest.approx(scale.vmin, rel=1e-2)
    assert layers.ColorScale("D1", "D1_um2_s", "D1", "um²/s", 0.01, 1.0, log=True).ticks(5)[1] == ["0.01", "0.1", "1"]
    assert layers.nice_log_limits(0.013, 0.87) == pytest.approx((0.01, 1.0))
    assert layers.nice_log_limits(0.3, 0.6) == pytest.approx((0.2, 1.0))
    # the slowest colour stays visible on a dark canvas (turbo's own start is near-black)
    assert scale.rgba([scale.vmin])[0, :3].max() > 0.8
    assert scale.normalise([np.nan, -1.0]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        layers.color_scale(aniso, "speed")


def test_colour_by_the_evidence_of_anisotropy(aniso):
    """-log10 isotropy_p repeated on each vertex, mapped 0-3 (p 1 to 0.001); no column: NaN, drawn as 0."""
    from napari_spt_diffusion.results import Results

    p_values = np.geomspace(1e-5, 1.0, len(aniso.summary))
    with_p = Results(aniso.tracks, aniso.summary.assign(isotropy_p=p_values), dict(aniso.meta))
    feats = layers.track_features(with_p)
    by_track = dict(zip(with_p.summary["track_id"], p_values))
    expected = -np.log10([by_track[t] for t in feats["track_id"]])
    assert np.allclose(feats["anisotropy_evidence"], expected)
    assert np.allclose(feats["isotropy colour"], np.clip(expected / 3.0, 0, 1))
    scale = layers.color_scale(with_p, "isotropy")
    assert (scale.vmin, scale.vmax, scale.log) == (0.0, 3.0, False) and "isotropy_p" in scale.title
    plain = layers.track_features(aniso)
    assert plain["anisotropy_evidence"].isna().all() and (plain["isotropy colour"] == 0).all()


def test_state_scale_is_categorical(binding):
    scale = layers.color_scale(binding, "state")
    assert scale.categorical and scale.vmax >= 1
    rgba = scale.rgba([0, 1])
    assert rgba.shape == (2, 4) and not np.allclose(rgba[0], rgba[1])


def test_geometry_scale_from_acquisition(aniso):
    geo = layers.LayerGeometry.from_acquisition(ACQ)
    assert geo.scale == pytest.approx((0.02, 0.11, 0.11))
    _, kwargs, _ = layers.tracks_layer(aniso, geometry=geo)
    assert kwargs["scale"] == geo.scale and kwargs["units"] == ("s", "um", "um")
    for _data, kw, kind in layers.results_layers(aniso, ACQ):
        assert kw["scale"] == pytest.approx((0.02, 0.11, 0.11)), kind


def test_ellipse_corners_geometry(aniso):
    corners, rows = layers.ellipse_corners(aniso, ACQ, scale_factor=2.0)
    assert corners.shape == (len(aniso.tracks), 4, 3) and len(rows) == len(aniso.tracks)
    t = aniso.tracks.iloc[rows]
    # t constant per ellipse = frame
    assert np.all(corners[:, :, 0] == t["frame"].to_numpy()[:, None])
    centre = corners[:, :, 1:].mean(axis=1)
    assert np.allclose(centre, t[["y_px", "x_px"]].to_numpy())
    # side vectors: corner0 -> corner3 is 2*a along D1 axis, corner0 -> corner1 is 2*b across
    side_a = corners[:, 0, 1:] - corners[:, 3, 1:]
    side_b = corners[:, 0, 1:] - corners[:, 1, 1:]
    a_px = 2.0 * np.sqrt(2 * ACQ.diffusion_to_px2_per_frame(t["D1_um2_s"].to_numpy()))
    b_px = 2.0 * np.sqrt(2 * ACQ.diffusion_to_px2_per_frame(t["D2_um2_s"].to_numpy()))
    assert np.allclose(np.linalg.norm(side_a, axis=1) / 2, np.maximum(a_px, layers.MIN_SEMI_AXIS_PX))
    assert np.allclose(np.linalg.norm(side_b, axis=1) / 2, np.maximum(b_px, layers.MIN_SEMI_AXIS_PX))
    # D1 axis direction (y, x) = (sin theta, cos theta), up to sign
    th = np.deg2rad(t["theta_deg"].to_numpy())
    unit = side_a / np.linalg.norm(side_a, axis=1, keepdims=True)
    assert np.allclose(np.abs(unit[:, 0] * np.sin(th) + unit[:, 1] * np.cos(th)), 1.0)
    assert np.allclose(np.sum(side_a * side_b, axis=1), 0.0, atol=1e-9)


def test_ellipses_layer_one_shapes_layer_coloured_like_tracks(aniso):
    data, kwargs, kind = layers.ellipses_layer(aniso, ACQ, color_by="D2", frames=[0, 3])
    assert kind == "shapes" and kwargs["shape_type"] == "ellipse"
    assert data.shape == (6 * 2, 4, 3)
    assert set(np.unique(data[:, 0, 0])) == {0.0, 3.0}
    feats = kwargs["features"]
    scale = layers.color_scale(aniso, "D2")
    t = aniso.tracks.set_index(["track_id", "frame"])
    d2 = t.loc[pd.MultiIndex.from_arrays([feats["track_id"], feats["frame"]]), "D2_um2_s"].to_numpy()
    assert np.allclose(kwargs["edge_color"], scale.rgba(d2))


def test_ellipses_skip_non_finite(aniso):
    bad = shuffled(aniso)
    bad.tracks = aniso.tracks.copy()
    bad.tracks.loc[0, "D1_um2_s"] = np.nan
    corners, rows = layers.ellipse_corners(bad, ACQ)
    assert len(rows) == len(aniso.tracks) - 1 and 0 not in rows


def test_changepoint_labels_bind_unbind(binding):
    cp = layers.changepoint_labels(binding)
    n_expected = int(binding.summary["n_changepoints"].sum())
    assert n_expected > 0 and len(cp) == n_expected
    assert set(cp["label"]) <= {"bind", "unbind"}
    for row in cp.itertuples():
        assert (row.label == "bind") == (row.D_after_um2_s < row.D_before_um2_s)
        at = binding.tracks[(binding.tracks.track_id == row.track_id) & (binding.tracks.frame == row.frame)]
        assert np.allclose([row.y_px, row.x_px], at[["y_px", "x_px"]].to_numpy()[0])
    data, kwargs, kind = layers.changepoints_layer(binding)
    assert kind == "points" and data.shape == (n_expected, 3)
    assert kwargs["text"]["string"] == "{label}" and "border_color" in kwargs
    assert np.array_equal(data[:, 0], cp["frame"].to_numpy(float))


def test_changepoint_labels_d_before_after_for_other_models(binding):
    other = shuffled(binding)
    other.tracks = binding.tracks
    other.summary = binding.summary.assign(model="twostate")
    other.meta = {"model": "twostate"}
    cp = layers.changepoint_labels(other)
    assert cp["label"].str.match(r"^D \S+->\S+$").all()


def test_no_changepoints_gives_empty_points(aniso):
    data, kwargs, _ = layers.changepoints_layer(aniso)
    assert data.shape == (0, 3) and len(kwargs["features"]) == 0


def test_detections_and_image_layers():
    data, kwargs, kind = layers.detections_layer(np.array([[1, 2], [3, 4]]), 7)
    assert kind == "points" and np.array_equal(data, [[7, 1, 2], [7, 3, 4]])
    movie = np.full((3, 8, 8), 100, np.uint16)
    _, kw, kind = layers.image_layer(movie, ACQ, name="m")
    assert kind == "image" and kw["scale"] == pytest.approx((0.02, 0.11, 0.11))
    assert Acquisition.from_dict(kw["metadata"]["acquisition"]) == ACQ


def test_layers_build_in_napari(aniso, binding):
    """The tuples are accepted by napari's layer classes (no viewer needed)."""
    from napari.layers import Layer

    for data, kwargs, kind in layers.results_layers(binding, ACQ, ellipse_frames=[0, 1]):
        layer = Layer.create(data, kwargs, kind)
        assert layer.scale[1] == pytest.approx(0.11)
        if kind == "tracks":
            assert layer.color_by == "D1 colour"
            assert len(layer.features) == len(binding.tracks)
        if kind == "shapes":
            assert layer.nshapes == 10
    sel = Layer.create(*layers.selected_track_layer(aniso, 2))
    assert len(sel.data) == 20
