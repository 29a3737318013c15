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
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = np.isfinite(x) & (np.abs(x) >= 1e-250)
        v = x[keep]
        k = digits - 1 - np.floor(np.log10(np.abs(v))).astype(np.int64)
        up = k >= 0
        scale = 10.0 ** np.abs(k)  # exact powers of ten up to 1e22: the quotient is the nearest double
        r = np.where(up, np.round(v * scale) / scale, np.round(v / scale) * scale)
    out[keep] = r
    return out


def _numeric_only(table: pd.DataFrame, columns: Sequence[str]) -> bool:
    return all(
        pd.api.types.is_bool_dtype(table[c]) or pd.api.types.is_numeric_dtype(table[c]) for c in columns
    )


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

    handle.write(",".join(columns) + "\n")
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
