"""Pooling of the foreign-optics reports' interval coverage (benchmarks/bench_foreign_intervals.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_foreign_intervals import coverage_rows, main, pooled


def _report(path: Path, offset: int, cases: dict[str, tuple[float, int]]) -> Path:
    results = [{"case": case, "ours": {"interval_coverage": {
        "D1_68": c, "D1_95": c, "D1_n": n, "D2_68": c, "D2_95": c, "D2_n": n}}} for case, (c, n) in cases.items()]
    path.write_text(json.dumps({"seed_offset": offset, "results": results}))
    return path


def test_pooled_weights_each_seed_by_its_tracks_and_a_missing_case_keeps_its_column(tmp_path):
    a = _report(tmp_path / "a.json", 0, {"free": (0.5, 10), "aniso": (1.0, 30)})
    b = _report(tmp_path / "b.json", 10, {"aniso": (0.0, 10)})  # no "free" movie in this report
    seeds, cases = coverage_rows([a, b])
    assert seeds == ["+0", "+10"]
    assert cases["free"]["D1_68"][0] == (0.5, 10) and np.isnan(cases["free"]["D1_68"][1][0])
    assert pooled(cases["aniso"]["D2_95"]) == (pytest.approx(0.75), 40)
    assert pooled(cases["free"]["D1_68"]) == (pytest.approx(0.5), 10)


def test_missing_report_is_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--reports", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out.md")])
    assert "no such report" in capsys.readouterr().err
    assert not (tmp_path / "out.md").exists()
