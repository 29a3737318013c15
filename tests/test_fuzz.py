"""Fuzz test (issue 15): 50 random malformed movies and settings through ``spt-diffusion track``.

The cases are the first 50 of the fuzz benchmark's series (``benchmarks/_fuzz_cases.py``,
seed 1515; ``benchmarks/bench_fuzz.py`` runs 1,000 of them). Each must end acceptably: exit 0
with all three result files, or exit 2 with one ``spt-diffusion: error:`` line and no result
file; never a traceback, a hang (60 s per case), a partial output or a message of many lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _fuzz_cases import ACCEPTABLE, make_case, run_case

SEED = 1515
N_CASES = 50
TIMEOUT_S = 60.0


@pytest.mark.parametrize("index", range(N_CASES))
def test_fuzz_case_ends_acceptably(index: int, tmp_path: Path) -> None:
    case = make_case(SEED, index, tmp_path / "case")
    outcome = run_case(case, TIMEOUT_S)
    assert outcome.kind in ACCEPTABLE, (outcome, case.description, case.argv)


def test_cases_are_reproducible_and_varied(tmp_path: Path) -> None:
    a = make_case(SEED, 3, tmp_path / "a")
    b = make_case(SEED, 3, tmp_path / "b")
    assert a.description == b.description
    assert (tmp_path / "a" / "movie.tif").read_bytes() == (tmp_path / "b" / "movie.tif").read_bytes()
    kinds = {tuple(make_case(SEED, i, tmp_path / f"c{i}").description[1:3]) for i in range(12)}
    assert len(kinds) > 6


def test_run_case_detects_a_hang_and_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from napari_spt_diffusion import cli

    case = make_case(SEED, 0, tmp_path / "case")
    monkeypatch.setattr(cli, "main", lambda argv: time.sleep(5))
    assert run_case(case, 0.2).kind == "hang"
    monkeypatch.setattr(cli, "main", lambda argv: 1 / 0)
    assert run_case(case, 5).kind == "traceback"
    monkeypatch.setattr(cli, "main", lambda argv: 0)
    assert run_case(case, 5).kind == "partial output"  # exit 0 without the result files
