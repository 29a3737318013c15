"""The fast CSV writer prints the same table as pandas' ``to_csv(float_format="%.9g")``."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from napari_spt_diffusion.io.csv_text import FLOAT_FORMAT, round_significant, write_csv_rows


def _table(n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    table = pd.DataFrame({
        "track_id": rng.integers(0, 50, n),
        "x_px": rng.uniform(0, 512, n),
        "D1_um2_s": 10.0 ** rng.uniform(-4, 3, n),
        "theta_deg": rng.uniform(-90, 90, n),
        "is_changepoint": rng.uniform(size=n) < 0.1,
    })
    table.loc[3, "D1_um2_s"] = np.nan
    table.loc[4, "x_px"] = 0.0
    table.loc[5, "x_px"] = np.inf
    table.loc[6, "theta_deg"] = -12.5
    return table


def test_fast_path_parses_back_to_the_pandas_text():
    table = _table()
    fast = io.StringIO()
    write_csv_rows(table, list(table.columns), fast)
    slow = table.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    fast_text = fast.getvalue()
    assert fast_text.splitlines()[0] == slow.splitlines()[0]
    back_fast = pd.read_csv(io.StringIO(fast_text))
    back_slow = pd.read_csv(io.StringIO(slow))
    pd.testing.assert_frame_equal(back_fast, back_slow, check_exact=False, rtol=1e-12)
    # same text except the spelling of exponents: most lines byte for byte
    same = sum(a == b for a, b in zip(fast_text.splitlines(), slow.splitlines()))
    assert same >= 0.95 * (len(table) + 1)
    assert "True" in fast_text and "False" in fast_text and ",nan" not in fast_text.lower()


def test_text_columns_and_empty_tables_use_pandas():
    table = pd.DataFrame({"a": [1.5, 2.0], "notes": ["x;y", "z"]})
    out = io.StringIO()
    write_csv_rows(table, ["notes", "a"], out)
    assert out.getvalue() == "notes,a\nx;y,1.5\nz,2\n"
    empty = io.StringIO()
    write_csv_rows(table.iloc[:0], ["a", "notes"], empty)
    assert empty.getvalue() == "a,notes\n"


def test_round_significant():
    values = np.array([0.1234567891234, 123456789.87, -3.14159265358979e-12, 0.0, np.nan, -np.inf, 1e-300])
    rounded = round_significant(values)
    for v, r in zip(values, rounded):
        if np.isfinite(v):
            assert float(f"{v:.9g}") == r
        else:
            assert (np.isnan(v) and np.isnan(r)) or v == r


def test_extreme_values_odd_names_and_nullable_columns():
    values = np.array([9.893717849999999e-24, 3.4005148700000004e33, -1.2345678912e-300, 1e200, 5e-324])
    rounded = round_significant(values)
    assert [float(f"{v:.9g}") for v in values] == list(rounded)
    table = pd.DataFrame({"Mean intensity, ch1": [1.0, 2.5], "x": [0.5, np.nan]})
    out = io.StringIO()
    write_csv_rows(table, list(table.columns), out)
    back = pd.read_csv(io.StringIO(out.getvalue()))
    assert list(back.columns) == list(table.columns) and back.shape == (2, 2)
    nullable = pd.DataFrame({"flag": pd.array([True, None], dtype="boolean"), "n": pd.array([1, None], dtype="Int64")})
    out = io.StringIO()
    write_csv_rows(nullable, ["flag", "n"], out)
    assert out.getvalue() == nullable.to_csv(index=False, lineterminator="\n")
