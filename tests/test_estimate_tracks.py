"""Tracks made elsewhere (TrackMate XML/CSV, trackpy, napari Tracks) -> the estimation stage.

The test files are written here in each tool's format as documented (TrackMate's saved
XML model and its "Export tracks to XML" file, TrackMate 7's spots CSV with its three
extra header rows, a trackpy table) from the simulator's true tracks; read back and
estimated, they must give the tensors of the same tracks estimated directly.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.errors import SptDiffusionError
from napari_spt_diffusion.estimate_tracks import estimate_tracks
from napari_spt_diffusion.io.track_tables import (
    TrackTableError,
    detect_format,
    read_track_file,
    trackpy_table,
    tracks_from_layer_data,
)
from napari_spt_diffusion.pipeline import NoParticlesFound, Settings, track_and_estimate
from napari_spt_diffusion.results import SUMMARY_COLUMNS, TRACKS_COLUMNS, validate_tables
from napari_spt_diffusion.simulation.movie import simulate_movie

ACQ = Acquisition()  # 100 nm pixels, 10 ms frames
PIXEL_UM = ACQ.pixel_size_nm / 1000.0


@pytest.fixture(scope="module")
def movie():
    return simulate_movie((48, 48), 40, ACQ, rng=11, model="aniso", particles=6, D1_range_um2_s=(0.5, 2.0))


@pytest.fixture(scope="module")
def true_tracks(movie):
    """The simulator's true tracks of at least 8 frames, ids shifted to show they are kept."""
    t = movie.truth.tracks[["track_id", "frame", "y_px", "x_px"]].copy()
    sizes = t.groupby("track_id")["frame"].transform("size")
    t = t[sizes >= 8].copy()
    t["track_id"] += 100
    assert t["track_id"].nunique() >= 4
    return t.reset_index(drop=True)


@pytest.fixture(scope="module")
def settings(toy_models):
    return Settings(model=toy_models["pointwise"], device="cpu", min_track_length=5)


@pytest.fixture(scope="module")
def direct(movie, true_tracks, settings):
    return estimate_tracks(movie.movie, true_tracks, ACQ, settings)


# ------------------------------------------------------------- file writers
def _num(value) -> str:
    """A float as the shortest text that reads back to the same number."""
    return repr(float(value))


def _write_trackmate_xml(path, tracks, *, units="micron", pixelwidth=PIXEL_UM, extra=True):
    """The XML TrackMate saves: Model (spots per frame, tracks of edges, filtered tracks) and Settings."""
    root = ET.Element("TrackMate", version="7.11.1")
    model = ET.SubElement(root, "Model", spatialunits=units, timeunits="sec")
    scale = pixelwidth if units != "pixel" else 1.0
    all_spots = ET.SubElement(model, "AllSpots", nspots=str(len(tracks) + 1))
    ids = {}
    for frame, rows in tracks.groupby("frame"):
        holder = ET.SubElement(all_spots, "SpotsInFrame", frame=str(frame))
        for i, row in rows.iterrows():
            sid = str(1000 + i)
            ids[i] = sid
            ET.SubElement(holder, "Spot", ID=sid, name=f"ID{sid}", QUALITY="12.5", POSITION_T=str(frame * 0.01),
                          MAX_INTENSITY="300.0", FRAME=str(frame), MEDIAN_INTENSITY="120.0", VISIBILITY="1",
                          RADIUS="0.2", POSITION_X=_num(row.x_px * scale), POSITION_Y=_num(row.y_px * scale),
                          POSITION_Z="0.0")
    if extra:  # a lone spot in no track
        ET.SubElement(all_spots.find("SpotsInFrame"), "Spot", ID="99999", name="lone", FRAME="0", POSITION_X="1.0",
                      POSITION_Y="1.0", POSITION_Z="0.0", POSITION_T="0.0", QUALITY="1.0", VISIBILITY="1")
    all_tracks = ET.SubElement(model, "AllTracks")
    filtered = ET.SubElement(model, "FilteredTracks")
    for tid, rows in tracks.groupby("track_id"):
        track = ET.SubElement(all_tracks, "Track", name=f"Track_{tid}", TRACK_ID=str(tid), TRACK_INDEX=str(tid),
                              NUMBER_SPOTS=str(len(rows)), NUMBER_SPLITS="0", NUMBER_MERGES="0")
        index = list(rows.index)
        for a, b in zip(index[:-1], index[1:]):
            ET.SubElement(track, "Edge", SPOT_SOURCE_ID=ids[a], SPOT_TARGET_ID=ids[b], LINK_COST="0.5",
                          EDGE_TIME="0.0", DISPLACEMENT="0.1")
        ET.SubElement(filtered, "TrackID", TRACK_ID=str(tid))
    if extra:  # a track filtered out in TrackMate: its spots must not come back
        first = tracks.index[:2]
        track = ET.SubElement(all_tracks, "Track", name="Track_rejected", TRACK_ID="7777")
        ET.SubElement(track, "Edge", SPOT_SOURCE_ID=ids[first[0]], SPOT_TARGET_ID=ids[first[1]])
    settings = ET.SubElement(root, "Settings")
    ET.SubElement(settings, "ImageData", filename="movie.tif", folder="/data/", width="48", height="48",
                  nslices="1", nframes="40", pixelwidth=repr(pixelwidth), pixelheight=repr(pixelwidth),
                  voxeldepth="1.0", timeinterval="0.01")
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def _write_trackmate_simple_xml(path, tracks):
    """TrackMate's "Export tracks to XML": <Tracks><particle><detection t x y z/>, positions in pixels."""
    root = ET.Element("Tracks", nTracks=str(tracks["track_id"].nunique()), spaceUnits="pixel",
                      frameInterval="0.01", timeUnits="sec", generationDateTime="today", **{"from": "TrackMate v7"})
    for _, rows in tracks.groupby("track_id"):
        particle = ET.SubElement(root, "particle", nSpots=str(len(rows)))
        for row in rows.itertuples():
            ET.SubElement(particle, "detection", t=str(row.frame), x=_num(row.x_px), y=_num(row.y_px), z="0.0")
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def _write_trackmate_csv(path, tracks, *, units_row=True):
    """TrackMate 7's spots table: keys, then names, short names and units rows, then the spots (um)."""
    keys = ["LABEL", "ID", "TRACK_ID", "QUALITY", "POSITION_X", "POSITION_Y", "POSITION_Z", "POSITION_T", "FRAME",
            "RADIUS", "VISIBILITY"]
    lines = [",".join(keys)]
    if units_row:
        lines += ["Label,Spot ID,Track ID,Quality,X,Y,Z,T,Frame,Radius,Visibility",
                  "Label,Spot ID,Track ID,Quality,X,Y,Z,T,Frame,R,Visibility",
                  ",,,(quality),(micron),(micron),(micron),(sec),,(micron),"]
    for i, row in enumerate(tracks.itertuples()):
        lines.append(f"ID{i},{i},{row.track_id},10.0,{_num(row.x_px * PIXEL_UM)},{_num(row.y_px * PIXEL_UM)},0.0,"
                     f"{row.frame * 0.01},{row.frame},0.2,1")
    lines.append("ID_lone,99999,None,3.0,1.0,1.0,0.0,0.0,0,0.2,1")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _tensors(results):
    s = results.summary.set_index("track_id").sort_index()
    return s[["D1_um2_s", "D2_um2_s", "D_msd_um2_s", "D_cve_um2_s"]]


# --------------------------------------------------------------------- tests
def test_direct_estimate_keeps_ids_and_follows_the_contract(direct, true_tracks):
    validate_tables(direct.tracks, direct.summary)
    assert list(direct.tracks.columns) == list(TRACKS_COLUMNS)
    assert list(direct.summary.columns)[: len(SUMMARY_COLUMNS)] == list(SUMMARY_COLUMNS)
    assert set(direct.summary["track_id"]) == set(true_tracks["track_id"])
    assert direct.n_tracks >= 4
    assert np.isfinite(direct.summary["D1_um2_s"]).all()
    meta = direct.meta
    assert meta["tracks_source"]["photometry"] == "fitted at the given positions"
    # the true positions sit on the spots: the fitted ones are close
    assert meta["tracks_source"]["median_refit_shift_px"] < 0.3
    assert meta["drift_correction"] == {"enabled": False}
    assert np.isfinite(direct.tracks["loc_precision_nm"]).all()
    # positions kept as given
    merged = direct.tracks.merge(true_tracks, on=["track_id", "frame"], suffixes=("", "_given"))
    assert len(merged) == len(true_tracks)
    np.testing.assert_allclose(merged["x_px"], merged["x_px_given"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["trackmate-xml", "trackmate-simple-xml", "trackmate-csv", "trackpy-csv"])
def test_imported_files_give_the_tensors_of_the_same_tracks(kind, tmp_path, movie, true_tracks, settings, direct):
    if kind == "trackmate-xml":
        path = tmp_path / "model.xml"
        _write_trackmate_xml(path, true_tracks)
    elif kind == "trackmate-simple-xml":
        path = tmp_path / "tracks.xml"
        _write_trackmate_simple_xml(path, true_tracks)
    elif kind == "trackmate-csv":
        path = tmp_path / "spots.csv"
        _write_trackmate_csv(path, true_tracks)
    else:
        path = tmp_path / "trackpy.csv"
        trackpy_table(true_tracks).to_csv(path)  # trackpy users write the index too
    imported = read_track_file(path, ACQ)
    assert imported.format == ("trackmate-xml" if "xml" in kind else kind)
    t = imported.tracks
    if kind == "trackmate-simple-xml":  # that format numbers the tracks 0, 1, ... in file order
        ids = sorted(true_tracks["track_id"].unique())
        t = t.assign(track_id=np.asarray(ids)[t["track_id"].to_numpy()])
        imported.tracks = t
    # same localizations, in pixels, as given (um -> px through the file's pixel width)
    merged = t.merge(true_tracks, on=["track_id", "frame"], suffixes=("", "_true"), how="outer")
    assert len(merged) == len(true_tracks) == len(t)
    np.testing.assert_allclose(merged[["x_px", "y_px"]].to_numpy(), merged[["x_px_true", "y_px_true"]].to_numpy(),
                               rtol=0, atol=1e-9)
    results = estimate_tracks(movie.movie, imported, ACQ, settings)
    np.testing.assert_allclose(_tensors(results).to_numpy(), _tensors(direct).to_numpy(), rtol=1e-6, atol=1e-9)
    assert results.summary["changepoint_frames"].tolist() == direct.summary["changepoint_frames"].tolist()
    assert results.meta["tracks_source"]["format"] == imported.format
    assert results.meta["tracks_source"]["file"] == str(path)


def test_pipeline_tracks_round_trip_through_our_csv(tmp_path, movie, settings):
    """Our own _tracks.csv re-estimated gives the pipeline's tensors (photometry from the file)."""
    from napari_spt_diffusion.io import write_results

    found = track_and_estimate(movie.movie, ACQ, settings)
    write_results(tmp_path / "run", found)
    imported = read_track_file(tmp_path / "run_tracks.csv", ACQ)
    assert imported.format == "ours" and detect_format(tmp_path / "run_tracks.csv") == "ours"
    again = estimate_tracks(movie.movie, imported, ACQ, settings)
    assert again.meta["tracks_source"]["photometry"] == "from the tracks"
    np.testing.assert_allclose(_tensors(again).to_numpy(), _tensors(found).to_numpy(), rtol=1e-6, atol=1e-9)
    assert again.summary["changepoint_frames"].tolist() == found.summary["changepoint_frames"].tolist()


def test_napari_tracks_layer_data(movie, true_tracks, settings, direct):
    data = true_tracks[["track_id", "frame", "y_px", "x_px"]].to_numpy(dtype=float)
    table = tracks_from_layer_data(data)
    assert table["track_id"].dtype == np.int64 and table["frame"].dtype == np.int64
    results = estimate_tracks(movie.movie, table, ACQ, settings)
    np.testing.assert_allclose(_tensors(results).to_numpy(), _tensors(direct).to_numpy(), rtol=1e-9)
    with pytest.raises(TrackTableError, match=r"\(N, 4\)"):
        tracks_from_layer_data(data[:, 1:])


def test_trackmate_xml_in_pixels_and_filtered_tracks(tmp_path, true_tracks):
    path = tmp_path / "px.xml"
    _write_trackmate_xml(path, true_tracks, units="pixel")
    imported = read_track_file(path, ACQ)
    assert imported.units == "px" and imported.nm_per_px is None
    assert 7777 not in set(imported.tracks["track_id"])  # not in FilteredTracks
    assert set(imported.tracks["track_id"]) == set(true_tracks["track_id"])


def test_file_pixel_width_wins_and_is_compared(tmp_path, true_tracks):
    path = tmp_path / "model.xml"
    _write_trackmate_xml(path, true_tracks, pixelwidth=0.16)  # positions written with 160 nm pixels
    imported = read_track_file(path, ACQ)  # the movie says 100 nm
    assert imported.nm_per_px == pytest.approx(160.0)
    assert any("differs from the movie's pixel size" in n for n in imported.notes)
    np.testing.assert_allclose(np.sort(imported.tracks["x_px"]), np.sort(true_tracks["x_px"]), atol=1e-9)


def test_bad_files_give_one_clear_sentence(tmp_path, movie, true_tracks, settings):
    # missing columns
    path = tmp_path / "bad.csv"
    pd.DataFrame({"frame": [0, 1], "x": [1.0, 2.0]}).to_csv(path, index=False)
    with pytest.raises(TrackTableError, match="not a known track table"):
        read_track_file(path, ACQ)
    with pytest.raises(TrackTableError, match="lacks column"):
        read_track_file(path, ACQ, format="trackpy-csv")
    # unknown units
    path = tmp_path / "furlong.xml"
    _write_trackmate_xml(path, true_tracks, units="furlong")
    with pytest.raises(TrackTableError, match="unknown length unit 'furlong'"):
        read_track_file(path, ACQ)
    # an old TrackMate CSV without its units row: the units must be given
    path = tmp_path / "old.csv"
    _write_trackmate_csv(path, true_tracks, units_row=False)
    with pytest.raises(TrackTableError, match="--tracks-units"):
        read_track_file(path, ACQ)
    imported = read_track_file(path, ACQ, units="um")
    assert imported.tracks["x_px"].max() == pytest.approx(true_tracks["x_px"].max())
    # frames beyond the movie
    late = true_tracks.assign(frame=true_tracks["frame"] + 1000)
    with pytest.raises(TrackTableError, match="movie has 40 frames"):
        estimate_tracks(movie.movie, late, ACQ, settings)
    # positions outside the field (microns read as nanometres: 1000x too small is inside, so use px as um)
    far = true_tracks.assign(x_px=true_tracks["x_px"] * 10)
    with pytest.raises(TrackTableError, match="outside the movie's 48 x 48 px field"):
        estimate_tracks(movie.movie, far, ACQ, settings)
    # not a number
    with pytest.raises(TrackTableError, match="not finite numbers"):
        estimate_tracks(movie.movie, true_tracks.assign(y_px="a"), ACQ, settings)
    # too short for min_track_length
    with pytest.raises(NoParticlesFound):
        estimate_tracks(movie.movie, true_tracks, ACQ, Settings(model=settings.model, device="cpu",
                                                               min_track_length=500))
    # a missing file, unreadable XML
    with pytest.raises(TrackTableError, match="does not exist"):
        read_track_file(tmp_path / "nothing.csv", ACQ)
    (tmp_path / "broken.xml").write_text("<TrackMate><Model>", encoding="utf-8")
    with pytest.raises(TrackTableError, match="not readable XML"):
        read_track_file(tmp_path / "broken.xml", ACQ)
    assert issubclass(TrackTableError, SptDiffusionError)


def test_split_tracks_are_left_out_with_a_note(tmp_path, true_tracks):
    first = int(true_tracks["track_id"].iloc[0])
    row = true_tracks[true_tracks["track_id"] == first].iloc[[3]].assign(x_px=lambda d: d["x_px"] + 2.0)
    table = pd.concat([true_tracks, row], ignore_index=True)
    path = tmp_path / "split.csv"
    trackpy_table(table).to_csv(path, index=False)
    imported = read_track_file(path, ACQ)
    assert first not in set(imported.tracks["track_id"])
    assert any("splits or merges" in note for note in imported.notes)


def test_positions_that_do_not_match_the_movie_are_warned_about(movie, true_tracks, settings):
    shifted = true_tracks.assign(x_px=true_tracks["x_px"] + 1.5)
    shifted = shifted[shifted["x_px"] < 47]
    with pytest.warns(UserWarning, match="median"):
        results = estimate_tracks(movie.movie, shifted, ACQ, settings)
    assert results.meta["tracks_source"]["median_refit_shift_px"] > 1.0
