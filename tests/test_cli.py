"""Tests of the spt-diffusion command line (run in-process through cli.main)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_spt_diffusion import cli
from napari_spt_diffusion import io as sio
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.io import read_movie, read_results, write_movie

TINY = ["--frames", "12", "--particles", "3", "--size", "24x32", "--seed", "5"]


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code, err, *fragments):
    """Exit status 2 and exactly one ``spt-diffusion: error:`` line, the last one (progress
    lines may precede it on stderr), and no traceback."""
    assert code == cli.EXIT_USAGE
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("spt-diffusion: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for fragment in fragments:
        assert fragment in errors[0]


# -------------------------------------------------------------------- simulate
def test_simulate_end_to_end(tmp_path, capsys):
    out = tmp_path / "tiny.tif"
    code, stdout, err = _run(["simulate", out, "--model", "aniso", *TINY], capsys)
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["tiny.tif", "tiny_truth_meta.json", "tiny_truth_summary.csv", "tiny_truth_tracks.csv"]
    with read_movie(out) as movie:
        assert movie.shape == (12, 24, 32) and movie.dtype == np.uint16
        assert movie.pixel_size_nm == pytest.approx(100.0) and movie.frame_interval_s == pytest.approx(0.01)
        frames = np.asarray(movie.data)
        assert movie.acquisition() == Acquisition()
    # camera offset 100 ADU + 10 background photons: the median pixel sits near 110 ADU
    assert 105 <= np.median(frames) <= 115
    truth = read_results(tmp_path / "tiny_truth")
    assert truth.n_tracks >= 1
    assert truth.tracks["frame"].between(0, 11).all()
    meta = json.loads((tmp_path / "tiny_truth_meta.json").read_text())
    assert meta["simulation"]["seed"] == 5 and meta["simulation"]["model"] == "aniso"
    assert meta["simulation"]["command"].startswith("spt-diffusion simulate ")
    assert meta["acquisition"]["pixel_size_nm"] == 100.0
    assert "wrote" in stdout

    # same seed, same movie; the existing files block a second run without --overwrite
    before = out.read_bytes()
    code, _, err = _run(["simulate", out, "--model", "aniso", *TINY], capsys)
    _assert_one_line_error(code, err, "already exists")
    assert out.read_bytes() == before
    code, _, err = _run(["simulate", out, "--model", "aniso", *TINY, "--overwrite"], capsys)
    assert code == 0, err
    with read_movie(out) as movie:
        np.testing.assert_array_equal(np.asarray(movie.data), frames)


def test_simulate_snr_and_calibration_options(tmp_path, capsys):
    from napari_spt_diffusion.simulation.render import signal_photons_for_snr, static_snr

    out = tmp_path / "snr.tiff"
    code, _, err = _run(["simulate", out, *TINY, "--snr", "20", "--psf-sigma-nm", "150",
                         "--pixel-size-nm", "65", "--frame-interval-s", "0.02", "--compress"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "snr_truth_meta.json").read_text())
    acq = Acquisition.from_dict(meta["acquisition"])
    assert acq.psf_sigma_nm == 150.0 and acq.pixel_size_nm == 65.0
    assert acq.signal_photons == pytest.approx(signal_photons_for_snr(20.0, acq))
    assert static_snr(acq) == pytest.approx(20.0)
    with read_movie(out) as movie:
        assert not movie.is_memmap  # deflate-compressed
        assert movie.pixel_size_nm == pytest.approx(65.0) and movie.frame_interval_s == pytest.approx(0.02)


def test_simulate_mixed_model(tmp_path, capsys):
    out = tmp_path / "mixed.tif"
    code, _, err = _run(["simulate", out, "--model", "mixed", "--frames", "40", "--particles", "8",
                         "--size", "48", "--seed", "3"], capsys)
    assert code == 0, err
    truth = read_results(tmp_path / "mixed_truth")
    assert truth.n_tracks >= 1


def test_simulate_bad_outputs(tmp_path, capsys):
    # a missing output folder is created (only when the run writes its files)
    code, _, err = _run(["simulate", tmp_path / "new" / "sub" / "m.tif", *TINY], capsys)
    assert code == 0, err
    assert (tmp_path / "new" / "sub" / "m.tif").exists()
    shutil.rmtree(tmp_path / "new")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, _, err = _run(["simulate", blocker / "m.tif", *TINY], capsys)
    _assert_one_line_error(code, err, "not a folder")
    code, _, err = _run(["simulate", blocker / "deeper" / "m.tif", *TINY], capsys)
    _assert_one_line_error(code, err, "cannot create folder", "not a folder")
    code, _, err = _run(["simulate", tmp_path / "m.png", *TINY], capsys)
    _assert_one_line_error(code, err, ".tif")
    code, _, err = _run(["simulate", tmp_path / "m.tif", "--frames", "1"], capsys)
    _assert_one_line_error(code, err, "--frames")
    code, _, err = _run(["simulate", tmp_path / "m.tif", "--snr", "10", "--photons", "500"], capsys)
    _assert_one_line_error(code, err, "not allowed with")
    code, _, err = _run(["simulate", tmp_path / "m.tif", "--size", "abc"], capsys)
    _assert_one_line_error(code, err, "--size")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_simulate_ctrl_c_leaves_no_file(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the files are being written: exit 130, nothing left behind."""

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sio.results, "_write_results_files", interrupted)  # after the TIFF temporary is written
    code, _, err = _run(["simulate", tmp_path / "c.tif", *TINY], capsys)
    assert code == cli.EXIT_INTERRUPTED
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("spt-diffusion: interrupted")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- track
def test_track_bad_inputs(tmp_path, capsys):
    code, _, err = _run(["track", tmp_path / "nothing.tif"], capsys)
    _assert_one_line_error(code, err, "does not exist")
    text = tmp_path / "notes.tif"
    text.write_text("hello")
    code, _, err = _run(["track", text], capsys)
    _assert_one_line_error(code, err, "not a TIFF")
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.zeros((16, 16), np.uint16))
    code, _, err = _run(["track", image], capsys)
    _assert_one_line_error(code, err, "single 2-D image")
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((3, 16, 16, 3), np.uint8), photometric="rgb")
    code, _, err = _run(["track", rgb], capsys)
    _assert_one_line_error(code, err, "RGB")
    uncalibrated = tmp_path / "plain.tif"
    tifffile.imwrite(uncalibrated, np.zeros((5, 16, 16), np.uint16))
    code, _, err = _run(["track", uncalibrated], capsys)
    _assert_one_line_error(code, err, "pixel size", "--pixel-size-nm")
    code, _, err = _run(["track", uncalibrated, "--pixel-size-nm", "-3"], capsys)
    _assert_one_line_error(code, err, "--pixel-size-nm")


def test_track_refuses_unwritable_or_existing_outputs_before_running(tmp_path, capsys):
    movie = write_movie(tmp_path / "m.tif", np.full((4, 16, 16), 110, np.uint16), Acquisition())
    # the movie holds no particle: the run fails, and the output folder it would have
    # created is not left behind
    code, _, err = _run(["track", movie, "--out", tmp_path / "nofolder" / "run"], capsys)
    assert code == 2 and "particle" in err
    assert not (tmp_path / "nofolder").exists()
    (tmp_path / "m_summary.csv").write_text("keep")
    code, _, err = _run(["track", movie], capsys)
    _assert_one_line_error(code, err, "already exists")
    assert (tmp_path / "m_summary.csv").read_text() == "keep"


@pytest.fixture(scope="module")
def tiny_movie(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    code = cli.main(["simulate", str(folder / "t.tif"), "--frames", "30", "--particles", "4",
                     "--size", "48", "--seed", "21"])
    assert code == 0
    return folder / "t.tif"


def test_track_end_to_end(tiny_movie, tmp_path, capsys):
    prefix = tmp_path / "run"
    code, out, err = _run(["track", tiny_movie, "--out", prefix, "--device", "cpu", "--frame-interval-s", "0.02"],
                          capsys)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_meta.json", "run_summary.csv", "run_tracks.csv"]
    results = read_results(prefix)
    assert results.n_tracks >= 1
    assert (results.summary["D1_um2_s"] >= results.summary["D2_um2_s"]).all()
    meta = json.loads((tmp_path / "run_meta.json").read_text())
    assert meta["acquisition"]["pixel_size_nm"] == 100.0  # from the TIFF's ImageJ calibration
    assert meta["model"] == "aniso" and meta["command"].startswith("spt-diffusion track ")
    assert "pixel size 100 nm" in out and "(file metadata: imagej)" in out
    assert meta["acquisition"]["frame_interval_s"] == 0.02  # the command line overrides the file
    assert meta["isotropy"]["text"].startswith("Isotropy: ") and meta["isotropy"]["text"] in out  # printed once
    np.testing.assert_allclose(results.tracks["x_um"], results.tracks["x_px"] * 0.1, rtol=1e-6)
    np.testing.assert_allclose(results.tracks["t_s"], results.tracks["frame"] * 0.02, rtol=1e-9)
    assert "Traceback" not in err


def test_track_no_particles_and_ctrl_c(tmp_path, capsys, monkeypatch):
    flat = write_movie(tmp_path / "flat.tif", np.full((10, 32, 32), 110, np.uint16), Acquisition())
    code, _, err = _run(["track", flat, "--device", "cpu"], capsys)
    _assert_one_line_error(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.tif"]

    from napari_spt_diffusion import pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "track_and_estimate", interrupted)
    code, _, err = _run(["track", flat, "--device", "cpu"], capsys)
    assert code == cli.EXIT_INTERRUPTED and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.tif"]


# ------------------------------------------------------------------ misc usage
def test_usage_errors_are_one_line(capsys):
    code, _, err = _run([], capsys)
    _assert_one_line_error(code, err, "choose a command")
    code, _, err = _run(["frobnicate"], capsys)
    _assert_one_line_error(code, err, "invalid choice")
    code, _, err = _run(["track"], capsys)
    _assert_one_line_error(code, err, "required")
    code, _, err = _run(["train"], capsys)
    _assert_one_line_error(code, err, "--model")
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and "spt-diffusion" in out


def test_benchmark_runs_scripts_and_reports_failures(tmp_path, capsys, monkeypatch):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    monkeypatch.chdir(tmp_path)
    (bench / "bench_speed.py").write_text(
        "import sys, pathlib\npathlib.Path('ran.txt').write_text(' '.join(sys.argv[1:]))\n"
    )
    (bench / "bench_broken.py").write_text("raise SystemExit(3)\n")
    (bench / "bench_accuracy.py").write_text("import pathlib\npathlib.Path('impostor.txt').write_text('x')\n")
    # a NAME runs the project's own scripts only, never ./benchmarks of the current folder
    code, _, err = _run(["benchmark", "speed", "--quick"], capsys)
    _assert_one_line_error(code, err, "bench_speed.py", "available:", "accuracy")
    monkeypatch.setattr(cli, "OWN_BENCHMARKS", tmp_path / "nowhere")
    code, _, err = _run(["benchmark", "accuracy"], capsys)
    _assert_one_line_error(code, err, "was not found")
    assert not (tmp_path / "impostor.txt").exists()
    # other scripts run by their path
    code, out, err = _run(["benchmark", "benchmarks/bench_speed.py", "--quick", "field"], capsys)
    assert code == 0, err
    assert (tmp_path / "ran.txt").read_text() == "--quick field"
    code, _, err = _run(["benchmark", str(bench / "bench_broken.py")], capsys)
    assert code == 3 and "bench_broken.py exited with status 3" in err
    code, _, err = _run(["benchmark", "missing/bench_none.py"], capsys)
    _assert_one_line_error(code, err, "not found")


def test_progress_bar_on_a_pipe():
    import io

    stream = io.StringIO()
    bar = cli.ProgressBar(stream)
    for k in range(101):
        bar(k / 100, "rendering")
    bar(1.0, "writing")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].strip().startswith("0.0%") and lines[-1].endswith("writing")
    assert len(lines) == 12  # one per 10 % plus the change of message


# ------------------------------------------------------------------ sample data
def test_sample_movie_is_reproduced_by_its_recorded_command(tmp_path, capsys):
    """The bundled sample is what the command in its README produces, up to floating point.

    The exact pixels depend on the CPU's SIMD path (a Poisson draw whose mean changes in the
    last bit can change by one count: 2 of 3.3 M pixels differed by 1 ADU on one machine,
    38,517 with AVX2 turned off), so the movie is compared by tolerance, not bit for bit.
    What this still catches: any change of the simulator's physics or random stream (PSF
    width, photons, background, camera, motion, seeding), which changes most pixels, the
    per-frame mean by far more than 0.05 ADU, or the truth tables. If the simulator changes
    on purpose, regenerate the sample with that command.
    """
    sample = sio.sample_movie_path()
    readme = (sample.parent / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("spt-diffusion simulate "))
    argv = command.split()[1:]
    assert Path(argv[1]).name == sample.name
    argv[1] = str(tmp_path / sample.name)
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    with read_movie(sample) as bundled, read_movie(argv[1]) as fresh:
        assert bundled.shape == (200, 128, 128)
        assert bundled.pixel_size_nm == pytest.approx(100.0) and bundled.frame_interval_s == pytest.approx(0.01)
        a = np.asarray(bundled.data).astype(np.int64)
        b = np.asarray(fresh.data).astype(np.int64)
    assert a.shape == b.shape
    differ = a != b
    assert differ.mean() < 0.02, f"{differ.mean():.2%} of the pixels differ"
    assert np.abs(a - b).max() <= 3
    np.testing.assert_allclose(a.mean(axis=(1, 2)), b.mean(axis=(1, 2)), atol=0.05)
    truth = read_results(sample.parent / "sample_movie_truth")
    fresh_truth = read_results(tmp_path / "sample_movie_truth")
    columns = ["x_px", "y_px", "D1_um2_s"]
    np.testing.assert_allclose(truth.tracks[columns], fresh_truth.tracks[columns], rtol=1e-8)
    assert set(truth.summary["particle_model"]) == {"aniso", "binding"}
    assert (truth.summary["n_changepoints"] > 0).any()


def test_track_settings_from_options():
    parser = cli.build_parser()
    args = parser.parse_args(["track", "m.tif", "--keep-encounters", "--memory-frames", "1"])
    settings = cli._track_settings(args)
    assert settings.split_encounters is False and settings.memory_frames == 1
    default = cli._track_settings(parser.parse_args(["track", "m.tif"]))
    assert default.split_encounters is True and default.memory_frames == 2
    assert default.model_switch is True
    # a read noise given is known (the calibration leaves an assumed one's range out of its uncertainties)
    assert default.read_noise_known is False
    assert cli._track_settings(parser.parse_args(["track", "m.tif", "--read-noise-e", "1.2"])).read_noise_known
    assert cli._track_settings(parser.parse_args(["track", "m.tif", "--keep-model"])).model_switch is False
    assert default.rescale_model is True
    assert cli._track_settings(parser.parse_args(["track", "m.tif", "--keep-model-scale"])).rescale_model is False
    assert default.model_range_check is True
    assert cli._track_settings(parser.parse_args(["track", "m.tif", "--keep-model-beyond-range"])).model_range_check \
        is False
