import numpy as np
import pandas as pd
import pytest

from napari_spt_diffusion.results import (
    SUMMARY_COLUMNS,
    TRACKS_COLUMNS,
    Results,
    empty_summary_table,
    empty_tracks_table,
    format_changepoint_frames,
    parse_changepoint_frames,
)


def _tables():
    tracks = empty_tracks_table()
    rows = []
    for tid, frames in ((1, [0, 1, 2]), (4, [3, 5])):
        for f in frames:
            row = {c: 0.0 for c in TRACKS_COLUMNS}
            row.update(track_id=tid, frame=f, state=0, is_changepoint=False)
            rows.append(row)
    tracks = pd.DataFrame(rows, columns=list(TRACKS_COLUMNS))
    summary = pd.DataFrame([{c: 0 for c in SUMMARY_COLUMNS} | {"track_id": t} for t in (1, 4)])
    return tracks, summary


def test_empty_tables_have_contract_columns():
    assert tuple(empty_tracks_table().columns) == TRACKS_COLUMNS
    assert tuple(empty_summary_table().columns) == SUMMARY_COLUMNS
    Results(empty_tracks_table(), empty_summary_table())


def test_valid_tables_accepted():
    tracks, summary = _tables()
    assert Results(tracks, summary).n_tracks == 2


def test_unsorted_or_mismatched_tables_refused():
    tracks, summary = _tables()
    with pytest.raises(ValueError, match="sorted"):
        Results(tracks.iloc[::-1].reset_index(drop=True), summary)
    with pytest.raises(ValueError, match="same track ids"):
        Results(tracks, summary.iloc[:1])
    with pytest.raises(ValueError, match="lacks column"):
        Results(tracks.drop(columns=["D1_um2_s"]), summary)
    dup = pd.concat([tracks.iloc[:1], tracks]).reset_index(drop=True)
    with pytest.raises(ValueError, match="two rows"):
        Results(dup, summary)


def test_changepoint_frames_round_trip():
    assert format_changepoint_frames(np.array([3, 17])) == "3;17"
    assert parse_changepoint_frames("3;17") == [3, 17]
    assert parse_changepoint_frames("") == []
    assert parse_changepoint_frames(float("nan")) == []
    assert parse_changepoint_frames(12.0) == [12]
