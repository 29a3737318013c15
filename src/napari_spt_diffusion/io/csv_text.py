"""Fast CSV text of numeric tables, with floats at 9 significant digits.

pandas formats every float of ``to_csv(float_format="%.9g")`` in Python: about 1 s per
100,000 rows of the per-frame tracks table, the largest single cost of writing results.
:func:`write_csv_rows` rounds float columns to 9 significant digits with numpy and lets
Arrow's C++ writer print them (shortest round-trip text, so the digits are those of
``%.9g``; only the exponent of very small or large numbers is spelt differently, e.g.
``1e-7`` for ``1e-07``, which every CSV reader parses alike). Tables with text columns go
through pandas as before. Booleans are written ``True`` / ``False`` and NaN as an empty
cell, as pandas writes them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import IO

import numpy as np
import pandas as pd

__all__ = ["FLOAT_FORMAT", "round_significant", "write_csv_rows"]

#: printf format of floats in CSV tables (pandas path) and the digits of the fast path.
FLOAT_FORMAT = "%.9g"
SIGNIFICANT_DIGITS = 9
#: Rows formatted at a time on the pandas path (a few MB of text in memory, not the whole table).
PANDAS_CHUNK_ROWS = 100_000
#: Rows converted and printed at a time on the fast path.
FAST_CHUNK_ROWS = 200_000


def round_significant(values: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> np.ndarray:
    """``values`` (any shape) as float64 rounded to ``digits`` significant decimal digits.

    Zeros, non-finite values and magnitudes below 1e-250 (whose power of ten would
    overflow) are returned unchanged.
    """
    x = np.asarray(values, dtype=np.float64)
    out = x.copy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        finite = np.isfinite(x) & (x != 0)
        k = np.zeros(x.shape, dtype=np.int64)
        k[finite] = digits - 1 - np.floor(np.log10(np.abs(x[finite]))).astype(np.int64)
        # powers of ten up to 1e22 are exact, so the rounded quotient is the double nearest the
        # decimal; outside that (|x| below ~1e-14 or above ~1e31) Python's formatting rounds
        exact = finite & (np.abs(k) <= 22)
        v, kk = x[exact], k[exact]
        scale = 10.0 ** np.abs(kk)
        out[exact] = np.where(kk >= 0, np.round(v * scale) / scale, np.round(v / scale) * scale)
    for i in np.flatnonzero(finite & ~exact):
        out.flat[i] = float(f"{x.flat[i]:.{digits}g}")
    return out


def _numeric_only(table: pd.DataFrame, columns: Sequence[str]) -> bool:
    """Every column a plain numpy bool, integer or float column (extension dtypes such as pandas'
    nullable ``boolean`` or ``Int64`` go through pandas)."""
    return all(
        isinstance(table[c].dtype, np.dtype) and table[c].dtype.kind in "biuf" for c in columns
    ) and all(isinstance(c, str) for c in columns)


def write_csv_rows(table: pd.DataFrame, columns: Sequence[str], handle: IO[str]) -> None:
    """Write ``table[columns]`` with a header line to the text ``handle`` (``\\n`` line ends)."""
    columns = list(columns)
    if len(table) == 0 or not _numeric_only(table, columns):
        for start in range(0, max(len(table), 1), PANDAS_CHUNK_ROWS):
            part = table.iloc[start:start + PANDAS_CHUNK_ROWS].loc[:, columns]
            part.to_csv(handle, index=False, header=start == 0, float_format=FLOAT_FORMAT, lineterminator="\n")
        return
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(columns)  # quoted where a name needs it, as pandas does
    handle.write(header.getvalue())
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    for start in range(0, len(table), FAST_CHUNK_ROWS):
        part = table.iloc[start:start + FAST_CHUNK_ROWS]
        arrays = []
        for name in columns:
            values = part[name].to_numpy()
            if values.dtype == bool:
                arrays.append(pa.array(np.where(values, "True", "False")))
            elif np.issubdtype(values.dtype, np.floating):
                rounded = round_significant(values)
                arrays.append(pa.array(rounded, mask=np.isnan(rounded)))
            else:
                arrays.append(pa.array(values))
        buffer = io.BytesIO()
        pa_csv.write_csv(pa.Table.from_arrays(arrays, names=columns), buffer, options)
        handle.write(buffer.getvalue().decode("utf-8"))
