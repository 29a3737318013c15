"""Fuzz benchmark (protocol "fuzz", v1; issue 15): random malformed movies and settings.

Runs ``spt-diffusion track`` in this process (``cli.main``) on ``--cases`` random cases of
``benchmarks/_fuzz_cases.py`` (``make_case(seed, index)``, indices 0..N-1, seed 1515 unless
``--seed``): movies of random shape (1-30 frames, 1-48 px a side, extra axes, RGB), pixel
type (uint8/16/32, int16/32, negative int16, float32/64, floats scaled to 0-1, complex,
bool), NaN/Inf frames, camera offset and gain, signal and PSF, TIFF layout (ImageJ, OME,
plain pages; zlib or not), calibration metadata (missing or far out of range), truncation,
flipped bytes or no TIFF at all, and random command-line options, often extreme. Four in
ten cases are "mild": one aspect changed, the rest sane. Each case gets ``--timeout``
seconds of wall clock (SIGALRM).

Outcomes (``_fuzz_cases.OUTCOMES``): ``exit 0`` with all three result files; ``exit 2`` with
one ``spt-diffusion: error:`` line and no result file; ``traceback`` (an exception escaped,
or a traceback on stderr); ``hang`` (past the time limit); ``partial output`` (exit 2 with a
result file, or exit 0 without all three); ``bad message`` (exit 2 without exactly one error
line); ``other exit``. Target: 0 tracebacks, 0 hangs, 0 partial outputs.

Command::

    .venv/bin/python benchmarks/bench_fuzz.py [--cases 1000] [--seed 1515] [--timeout 120] [--quick]

``--quick``: 30 cases, report ``fuzz_quick.md``.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

from _common import command_line, report_header, report_path, write_report
from _fuzz_cases import ACCEPTABLE, OUTCOMES, make_case, run_case

SEED = 1515


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    parser.add_argument("--quick", action="store_true", help="30 cases")
    parser.add_argument("--out", default=None, help="report path")
    args = parser.parse_args(argv)
    n_cases = 30 if args.quick else args.cases
    counts: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    seconds: list[float] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spt_fuzz_") as tmp:
        for index in range(n_cases):
            case = make_case(args.seed, index, Path(tmp) / f"case{index:04d}")
            outcome = run_case(case, args.timeout)
            counts[outcome.kind] += 1
            seconds.append(outcome.seconds)
            if outcome.kind == "exit 2":
                errors[_kind_of_error(outcome.message)] += 1
            if outcome.kind not in ACCEPTABLE:
                problems.append(f"| {index} | {outcome.kind} | {'; '.join(case.description)} | "
                                f"`{' '.join(case.argv[4:])}` | {outcome.message.replace('|', '/')} |")
            if (index + 1) % 50 == 0:
                print(f"{index + 1}/{n_cases} cases: {dict(counts)}", flush=True)
    total = time.perf_counter() - t0
    command = command_line("bench_fuzz.py", argv)
    lines = report_header("Fuzz: random malformed movies and settings", f"fuzz v1, seed {args.seed}, "
                          f"{n_cases} cases, {args.timeout:g} s per case", command)
    lines += ["", "Each case runs `spt-diffusion track` in-process on a random movie and options "
              "(benchmarks/_fuzz_cases.py). Acceptable: exit 0 with the three result files, or exit 2 "
              "with one error line and no result file. Target: 0 tracebacks, 0 hangs, 0 partial outputs.", "",
              "| outcome | cases |", "|---|---|"]
    lines += [f"| {kind} | {counts.get(kind, 0)} |" for kind in OUTCOMES]
    lines += ["", f"Time: {total / 60:.1f} min in all; per case median {sorted(seconds)[len(seconds) // 2]:.2f} s, "
              f"longest {max(seconds):.1f} s.", "", "## Exit 2: the errors, by their first words", "",
              "| error | cases |", "|---|---|"]
    lines += [f"| {text} | {n} |" for text, n in errors.most_common()]
    lines += ["", "## Cases that were not acceptable", ""]
    if problems:
        lines += ["| case | outcome | movie | options | message |", "|---|---|---|---|---|", *problems]
    else:
        lines.append("None.")
    path = write_report(args.out or report_path("fuzz", args.quick), lines)
    print(f"wrote {path}: {dict(counts)}")
    return 0 if all(counts.get(k, 0) == 0 for k in ("traceback", "hang", "partial output")) else 1


def _kind_of_error(message: str) -> str:
    """The first words of an error line, numbers and file names dropped, to count errors by kind."""
    text = message.replace("spt-diffusion: error: ", "").replace("movie.tif", "MOVIE")
    words = []
    for word in text.split()[:7]:
        words.append("N" if any(c.isdigit() for c in word) else word)
    return " ".join(words).replace("|", "/")


if __name__ == "__main__":
    sys.exit(main())
