"""Interval coverage on the foreign-optics movies, pooled over seeds (reads the reports of ``bench_foreign.py``).

``bench_foreign.py`` scores, per movie, the share of output tracks whose true D1 / D2 (mean over
the matched frames) lies in the reported 68 % / 95 % interval (``interval_coverage`` in its JSON).
One movie holds 34-135 such tracks, so one seed's coverage moves by +-5-8 points from sampling
alone. This script reads the JSON reports of several seeds (by default the protocol run,
``foreign.json``, and the four seed reports ``foreign_seeds/foreign_seed_offset_{10,20,30,40}.json``),
and per case and interval gives each seed's coverage and the pooled one (tracks of all seeds
counted alike), with the 5-95 % range of a binomial share at the nominal level over the pooled
number of tracks (what sampling alone allows; the tracks of one movie share its bias, so the true
spread is wider). Nothing is rendered or tracked: run ``bench_foreign.py`` for each seed first.

Command::

    .venv/bin/python benchmarks/bench_foreign_intervals.py [--reports A.json,B.json,...] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import binom

from _common import REPO, command_line, report_header, write_report

REPORTS = REPO / "benchmarks" / "reports"
DEFAULT_REPORTS = (REPORTS / "foreign.json",
                   *(REPORTS / "foreign_seeds" / f"foreign_seed_offset_{k}.json" for k in (10, 20, 30, 40)))
LEVELS = (("68", 0.68), ("95", 0.95))


def coverage_rows(paths: list[Path]) -> tuple[list[str], dict[str, dict[str, list[tuple[float, int]]]]]:
    """Seed labels and ``{case: {"D1_68": [(coverage, n tracks) per report], ...}}`` from the reports (a case a
    report does not hold: ``(NaN, 0)`` in its column)."""
    reports = [json.loads(Path(path).read_text()) for path in paths]
    seeds = [f"+{int(data.get('seed_offset', 0))}" for data in reports]
    found = [{r["case"]: r.get("ours", {}).get("interval_coverage") or {} for r in data["results"]} for data in reports]
    cases: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for case in dict.fromkeys(c for per in found for c in per):
        cases[case] = {}
        for key in ("D1", "D2"):
            for label, _ in LEVELS:
                column = []
                for per in found:
                    value = per.get(case, {}).get(f"{key}_{label}")
                    n = int(per.get(case, {}).get(f"{key}_n", 0) or 0)
                    column.append((float(value) if value is not None else float("nan"), n))
                cases[case][f"{key}_{label}"] = column
    return seeds, cases


def pooled(values: list[tuple[float, int]]) -> tuple[float, int]:
    """Coverage over all seeds' tracks and their number."""
    ok = [(c, n) for c, n in values if np.isfinite(c) and n > 0]
    n = sum(n for _, n in ok)
    return (sum(c * n for c, n in ok) / n if n else float("nan")), n


def render(seeds: list[str], cases: dict, command: str) -> list[str]:
    lines = report_header("Interval coverage on the foreign-optics movies, pooled over seeds",
                          "foreign optics (docs/protocols.md); pooled over the seed reports read", command)
    lines += ["", "Coverage in % of the output tracks scored in each movie (`bench_foreign.py`: tracks of >= 5 "
              "matched frames, the true D averaged over them). Seeds: the `--seed-offset` of each report read. "
              "Sampling range: the 5-95 % range of a binomial share at the nominal level over the pooled tracks.", ""]
    lines += [f"| case | interval | {' | '.join(f'seed {s}' for s in seeds)} | pooled (tracks) | sampling range |",
              "|---|---|" + "---|" * len(seeds) + "---|---|"]
    for case, per in cases.items():
        for key in ("D1", "D2"):
            for label, nominal in LEVELS:
                values = per[f"{key}_{label}"]
                cov, n = pooled(values)
                lo, hi = ((100 * binom.ppf(q, n, nominal) / n for q in (0.05, 0.95)) if n else (np.nan, np.nan))
                cells = " | ".join("-" if not np.isfinite(c) else f"{100 * c:.1f}" for c, _ in values)
                lines.append(f"| {case} | {key} {label} % | {cells} | {100 * cov:.1f} ({n}) | {lo:.1f}-{hi:.1f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", default=",".join(str(p) for p in DEFAULT_REPORTS),
                        help="comma-separated JSON reports of bench_foreign.py")
    parser.add_argument("--out", type=Path, default=REPORTS / "foreign_intervals.md")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.reports.split(",") if p]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"no such report: {', '.join(missing)} (run bench_foreign.py for that seed first)")
    seeds, cases = coverage_rows(paths)
    write_report(args.out, render(seeds, cases, command_line("bench_foreign_intervals.py", argv)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
