"""Take the napari screenshots of docs/ (run under a virtual display).

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/make_napari_screenshots.py

Writes docs/screenshot_results.png (the sample movie with Track & Estimate results:
tracks coloured by D1, tensor ellipses, changepoints, the results dock with timeline,
histogram and table), docs/screenshot_simulator.png (the simulator widget with its
live preview) and docs/screenshot_foreign.png (a movie from the independent foreign-optics
renderer opened as a plain image: the widget's measured acquisition and the guard's warning).
When the pipeline cannot run (no bundled models yet), pass
``--truth`` to show the simulated ground truth through the same layers instead.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent


def _settle(viewer, seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _movie(seed: int):
    """The bundled sample movie (or a simulated one like it) with its acquisition and truth."""
    from napari_spt_diffusion import io
    from napari_spt_diffusion.simulation import simulate_movie

    try:
        path = io.sample_movie_path()
    except io.InputError:
        sim = simulate_movie((128, 128), 200, None, seed, model="mixed", particles=30)
        return sim.movie, sim.acquisition, sim.truth, "simulated movie"
    movie = io.read_movie(path)
    acq = movie.acquisition()
    data = np.asarray(movie.data)
    movie.close()
    truth_prefix = path.with_name(path.stem + "_truth")
    truth = io.read_results(truth_prefix) if io.results_paths(truth_prefix)["tracks"].is_file() else None
    return data, acq, truth, path.stem


def results_screenshot(out: Path, use_truth: bool, seed: int) -> None:
    import napari

    from napari_spt_diffusion._napari.layers import LayerGeometry, image_layer
    from napari_spt_diffusion._napari.results_widget import show_results
    from napari_spt_diffusion._napari.track_widget import TrackEstimateWidget, pipeline_settings

    movie, acq, truth, name = _movie(seed)
    viewer = napari.Viewer(title="napari-spt-diffusion: Track & Estimate")
    viewer.window._qt_window.resize(1900, 1150)
    data, kwargs, _ = image_layer(movie, acq, name=name)
    image = viewer.add_image(data, **kwargs)
    widget = TrackEstimateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Track & Estimate", area="right")
    if use_truth:
        if truth is None:
            raise SystemExit(f"no ground truth beside {name}")
        results, prefix = truth, "truth "
        widget.status.value = "showing the simulated ground truth"
    else:
        from napari_spt_diffusion import pipeline

        widget.model_combo.value = "binding"
        widget.device_combo.value = "cpu"
        results = pipeline.track_and_estimate(movie, acq, pipeline_settings(widget.values()))
        prefix = f"{name} "
        widget.results = results
        widget.status.value = f"done: {results.n_tracks} tracks, {len(results.tracks)} localizations"
        widget.progress.value = 1000
    display, panel = show_results(viewer, results, acq, LayerGeometry.from_layer(image), prefix=prefix)
    # a track with a changepoint, in the middle of its life
    s = results.summary
    with_cp = s[s["n_changepoints"] > 0]
    pick = (with_cp if len(with_cp) else s).sort_values("n_frames", ascending=False).iloc[0]
    cps = [int(c) for c in str(pick["changepoint_frames"]).split(";") if c.strip()]
    frame = cps[0] if cps else int((pick["frame_start"] + pick["frame_end"]) // 2)
    viewer.dims.set_current_step(0, frame)
    display.select_track(int(pick["track_id"]))
    viewer.layers.selection.active = display.tracks_layer
    viewer.reset_view()
    # zoom onto the selected track so the tensor ellipses are visible
    rows = results.tracks[results.tracks["track_id"] == int(pick["track_id"])]
    yx = rows[["y_px", "x_px"]].to_numpy().mean(axis=0)
    world = np.asarray(image.scale)[1:] * yx + np.asarray(image.translate)[1:]
    viewer.camera.center = tuple(float(v) for v in world)
    viewer.camera.zoom = viewer.camera.zoom * 1.6
    _settle(viewer, 1.5)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}")
    viewer.close()


def simulator_screenshot(out: Path, seed: int) -> None:
    import napari

    from napari_spt_diffusion._napari.simulator_widget import SimulatorWidget

    viewer = napari.Viewer(title="napari-spt-diffusion: Simulator")
    viewer.window._qt_window.resize(1900, 1150)
    widget = SimulatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Simulator", area="right")
    widget.model_combo.value = "binding"
    widget.int_boxes["seed"].value = seed
    widget.int_boxes["particles"].value = 40
    widget._timer.stop()
    widget.preview()
    viewer.dims.set_current_step(0, 10)
    viewer.reset_view()
    _settle(viewer, 1.5)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}")
    viewer.close()


def foreign_screenshot(out: Path) -> None:
    """A foreign-optics movie (NA 0.8 Airy PSF, sCMOS camera) run through the widget as a user would."""
    import napari

    from napari_spt_diffusion._napari import _dialogs
    from napari_spt_diffusion._napari.track_widget import TrackEstimateWidget
    from napari_spt_diffusion.validation.foreign_renderer import foreign_case, render_foreign_movie

    case = foreign_case("free_wide")
    truth = render_foreign_movie(case["scene"], case["optics"], case["camera"], case["motion"], case["seed"])
    viewer = napari.Viewer(title="napari-spt-diffusion: a movie from another microscope")
    viewer.window._qt_window.resize(1900, 1150)
    viewer.add_image(truth.movie, name="foreign NA 0.8", scale=(0.01, 0.1, 0.1), axis_labels=("t", "y", "x"),
                     units=("s", "um", "um"))
    widget = TrackEstimateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Track & Estimate", area="right")
    widget.device_combo.value = "cpu"
    warnings_seen: list[str] = []
    notify = _dialogs.notify_warning
    _dialogs.notify_warning = lambda m: (warnings_seen.append(m), notify(m))
    widget.run()
    while widget.worker is not None:
        _settle(viewer, 0.5)
    viewer.dims.set_current_step(0, 60)
    viewer.reset_view()
    _settle(viewer, 2.0)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}; warnings: {warnings_seen}")
    viewer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", action="store_true", help="show the simulated truth instead of running the pipeline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    parser.add_argument("--only", choices=("results", "simulator", "foreign"), help="take one screenshot only")
    args = parser.parse_args(argv)
    import os
    import tempfile

    # the widgets' remembered parameters must not leak into (or come from) the user's
    os.environ["NAPARI_SPT_DIFFUSION_CONFIG_DIR"] = tempfile.mkdtemp(prefix="spt-screens-")
    if args.only in (None, "results"):
        results_screenshot(args.out_dir / "screenshot_results.png", args.truth, args.seed)
    if args.only in (None, "simulator"):
        simulator_screenshot(args.out_dir / "screenshot_simulator.png", args.seed)
    if args.only in (None, "foreign"):
        foreign_screenshot(args.out_dir / "screenshot_foreign.png")


if __name__ == "__main__":
    main()
