"""Take the napari screenshots of docs/ (run under a virtual display).

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/make_napari_screenshots.py
    ... [--only results|msd|simulator|foreign|model_switch|state_note|rescale|model_range|reloaded|camera_note]
    ... [--sizes 1920x1080,1280x800]

Each screenshot is taken at every window size of ``--sizes``: ``screenshot_<kind>.png`` at
1920 x 1080 and ``screenshot_<kind>_<W>x<H>.png`` at any other size (1280 x 800 by default).

- ``results``: the sample movie after Track & Estimate run through the widget: tracks
  coloured by D1, tensor ellipses, changepoints, the results dock with its tabs (table,
  D(t) timeline, histogram) and the notifications of the run's warnings;
- ``msd``: the same run with the dock's MSD tab (ensemble and selected track, with their
  line fits) and the widget's "Estimate on existing tracks" group open;
- ``simulator``: the simulator widget with its live preview (in the dock);
- ``foreign``: a movie from the independent foreign-optics renderer opened as a plain
  image: the widget's measured acquisition, the guard's banner and warning notifications;
- ``model_switch``: the same run with the results dock's warnings tab (``aniso`` asked,
  ``aniso_any`` run, the guard's decision), at 1920 x 1080 only;
- ``state_note``: the NA 1.45 free-diffusion movie with ``binding`` asked (``binding_any`` runs): the
  warnings tab with the note that few tracks show a change of state, at 1920 x 1080 only;
- ``rescale``: the NA 0.8 free-diffusion movie of seed offset 30 (the case's seed + 30), where the guard
  accepts ``aniso_any`` but shows it reading 0.86 x the classical estimate: the warnings tab with the
  sentence that its D1 and D2 were divided by that factor, at 1920 x 1080 only;
- ``reloaded``: the results of the sample movie written to CSV and opened again with the
  plugin's reader beside the movie (File > Open of ``<prefix>_meta.json``).

The screen itself is grabbed (not the window), so napari's notification pop-ups show.
When the pipeline cannot run (no bundled models yet), pass ``--truth`` to show the
simulated ground truth through the same layers instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent


def _settle(viewer, seconds: float = 0.5) -> None:
    """Run a real Qt event loop for ``seconds`` (animations such as the notifications' fade-in
    do not advance under bare ``processEvents`` calls)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()


def _window(viewer, size: tuple[int, int]):
    window = viewer.window._qt_window
    window.move(0, 0)
    window.resize(*size)
    return window


def _grab(viewer, out: Path) -> None:
    """Save the screen area of the main window (pop-up notifications included)."""
    from qtpy.QtWidgets import QApplication

    window = viewer.window._qt_window
    _settle(viewer, 0.3)
    geo = window.frameGeometry()
    QApplication.primaryScreen().grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height()).save(str(out))
    print(f"wrote {out} ({geo.width()} x {geo.height()})")


def _run_widget(viewer, widget) -> None:
    """Press Run and wait for the worker (the notifications of the run's warnings pop up)."""
    widget.run()
    while widget.worker is not None:
        _settle(viewer, 0.3)


def _focus_track(viewer, display, image, results) -> None:
    """Select a long track (one with a changepoint if any) and zoom onto it."""
    s = results.summary
    with_cp = s[s["n_changepoints"] > 0]
    pick = (with_cp if len(with_cp) else s).sort_values("n_frames", ascending=False).iloc[0]
    cps = [int(c) for c in str(pick["changepoint_frames"]).split(";") if c.strip()]
    frame = cps[0] if cps else int((pick["frame_start"] + pick["frame_end"]) // 2)
    viewer.dims.set_current_step(0, frame)
    display.select_track(int(pick["track_id"]))
    viewer.layers.selection.active = display.tracks_layer
    viewer.reset_view()
    rows = results.tracks[results.tracks["track_id"] == int(pick["track_id"])]
    yx = rows[["y_px", "x_px"]].to_numpy().mean(axis=0)
    world = np.asarray(image.scale)[1:] * yx + np.asarray(image.translate)[1:]
    viewer.camera.center = tuple(float(v) for v in world)
    viewer.camera.zoom = viewer.camera.zoom * 1.6


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


def results_screenshot(out: Path, use_truth: bool, seed: int, size: tuple[int, int], keep: Path | None = None,
                       msd: bool = False) -> None:
    import napari

    from napari_spt_diffusion._napari.layers import LayerGeometry, image_layer
    from napari_spt_diffusion._napari.results_widget import _results_widget_for, show_results
    from napari_spt_diffusion._napari.track_widget import TrackEstimateWidget

    movie, acq, truth, name = _movie(seed)
    viewer = napari.Viewer(title="napari-spt-diffusion: Track & Estimate")
    _window(viewer, size)
    data, kwargs, _ = image_layer(movie, acq, name=name)
    image = viewer.add_image(data, **kwargs)
    widget = TrackEstimateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Track & Estimate", area="right")
    if use_truth:
        if truth is None:
            raise SystemExit(f"no ground truth beside {name}")
        results = truth
        display, _ = show_results(viewer, results, acq, LayerGeometry.from_layer(image), prefix="truth ")
        widget.status.value = "showing the simulated ground truth"
    else:
        widget.model_combo.value = "binding"
        widget.device_combo.value = "cpu"
        _run_widget(viewer, widget)
        results = widget.results
        display = _results_widget_for(viewer).display
    if keep is not None and results is not None:  # for the 'reloaded' screenshot
        from napari_spt_diffusion import io

        io.write_results(keep, results, overwrite=True)
    _focus_track(viewer, display, image, results)
    dock = _results_widget_for(viewer)
    if msd:  # the MSD tab, and the widget's "Estimate on existing tracks" group
        widget.existing_group.expand(animate=False)
        dock.tabs.setCurrentIndex(dock.msd_tab)
        _settle(viewer, 0.5)
        for area in (widget.scroll, dock.scroll):  # both docks scrolled to their ends (they scroll on small screens)
            area.verticalScrollBar().setValue(area.verticalScrollBar().maximum())
    else:
        dock.tabs.setCurrentIndex(1)  # the D(t) timeline of the selected track
    _settle(viewer, 1.0)
    _grab(viewer, out)
    viewer.close()


def reloaded_screenshot(out: Path, seed: int, size: tuple[int, int], prefix: Path) -> None:
    """The movie, then its results file opened with the plugin's reader (as File > Open does)."""
    import napari

    from napari_spt_diffusion._napari.layers import image_layer
    from napari_spt_diffusion._napari.results_widget import _results_widget_for

    movie, acq, _, name = _movie(seed)
    viewer = napari.Viewer(title="napari-spt-diffusion: results reloaded")
    _window(viewer, size)
    data, kwargs, _ = image_layer(movie, acq, name=prefix.name)
    image = viewer.add_image(data, **kwargs)
    viewer.open(str(prefix) + "_meta.json", plugin=None)  # only this plugin reads _meta.json
    _settle(viewer, 0.5)
    dock = _results_widget_for(viewer)
    display = dock.display
    _focus_track(viewer, display, image, display.results)
    dock.tabs.setCurrentIndex(0)  # the table
    _settle(viewer, 1.0)
    _grab(viewer, out)
    viewer.close()


def simulator_screenshot(out: Path, seed: int, size: tuple[int, int]) -> None:
    import napari

    from napari_spt_diffusion._napari.simulator_widget import SimulatorWidget

    viewer = napari.Viewer(title="napari-spt-diffusion: Simulator")
    _window(viewer, size)
    widget = SimulatorWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Simulator", area="right")
    widget.model_combo.value = "binding"
    widget.int_boxes["seed"].value = seed
    widget.int_boxes["particles"].value = 40
    widget._timer.stop()
    widget.preview()
    widget.frame_slider.setValue(10)
    # Generate: the full movie as a layer, its truth in the results dock
    widget.generate()
    while widget.worker is not None:
        _settle(viewer, 0.3)
    viewer.dims.set_current_step(0, 10)
    viewer.reset_view()
    _settle(viewer, 1.0)
    _grab(viewer, out)
    viewer.close()


def foreign_screenshot(out: Path, size: tuple[int, int], warnings_tab: bool = False, case_name: str = "free_wide",
                       model: str = "aniso", seed_offset: int = 0, max_d_um2_s: float | None = None) -> None:
    """A foreign-optics movie (by default NA 0.8 Airy PSF, sCMOS camera) run through the widget as a user
    would (``warnings_tab``: the results dock shows its warnings tab, where the model switch and the guard's
    decision are told, instead of the histogram; ``model``: the motion model asked for; ``max_d_um2_s``: the
    widget's largest D, for linking, where the movie's particles are faster than its default)."""
    import napari

    from napari_spt_diffusion._napari.results_widget import _results_widget_for
    from napari_spt_diffusion._napari.track_widget import TrackEstimateWidget
    from napari_spt_diffusion.validation.foreign_renderer import foreign_case, render_foreign_movie

    case = foreign_case(case_name)
    truth = render_foreign_movie(case["scene"], case["optics"], case["camera"], case["motion"],
                                 case["seed"] + seed_offset)
    viewer = napari.Viewer(title="napari-spt-diffusion: a movie from another microscope")
    _window(viewer, size)
    viewer.add_image(truth.movie, name=f"foreign NA {case['optics'].na:g}", scale=(0.01, 0.1, 0.1),
                     axis_labels=("t", "y", "x"), units=("s", "um", "um"))
    widget = TrackEstimateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Track & Estimate", area="right")
    widget.device_combo.value = "cpu"
    widget.model_combo.value = model
    if max_d_um2_s is not None:
        widget.max_D.value = max_d_um2_s
    widget.acq_group.expand(animate=False)  # the measured acquisition, with its uncertainties
    _run_widget(viewer, widget)
    results = _results_widget_for(viewer)
    results.tabs.setCurrentIndex(results.warnings_tab if warnings_tab else 2)  # 2: the histogram
    viewer.dims.set_current_step(0, 60)
    viewer.reset_view()
    _settle(viewer, 1.0)
    _grab(viewer, out)
    viewer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth", action="store_true", help="show the simulated ground truth instead of running")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    parser.add_argument("--only", help="one kind only",
                        choices=("results", "msd", "simulator", "foreign", "model_switch", "state_note", "rescale",
                                 "model_range", "reloaded", "camera_note"))
    parser.add_argument("--sizes", default="1920x1080,1280x800", help="window sizes, e.g. 1920x1080,1280x800")
    args = parser.parse_args(argv)
    import os
    import tempfile

    import napari._qt.qt_main_window as qt_main_window

    # napari's one-off notice about PyQt5 would cover the notifications of the run
    qt_main_window.SHOW_QT_WARNING = False
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    # keep the notifications of the run on screen until the picture is taken (they stack: last on top)
    NapariQtNotification.DISMISS_AFTER = 0
    # the widgets' remembered parameters must not leak into (or come from) the user's
    os.environ["NAPARI_SPT_DIFFUSION_CONFIG_DIR"] = tempfile.mkdtemp(prefix="spt-screens-")
    results_dir = Path(tempfile.mkdtemp(prefix="spt-screens-results-"))
    sizes = [tuple(int(v) for v in text.split("x")) for text in args.sizes.split(",")]
    for size in sizes:
        tag = "" if size == (1920, 1080) else f"_{size[0]}x{size[1]}"
        name = lambda kind: args.out_dir / f"screenshot_{kind}{tag}.png"  # noqa: E731, B023
        prefix = results_dir / "sample_movie"
        if args.only in (None, "results", "reloaded"):
            results_screenshot(name("results"), args.truth, args.seed, size, keep=prefix)
        if args.only in (None, "msd"):
            results_screenshot(name("msd"), args.truth, args.seed, size, msd=True)
        if args.only in (None, "reloaded"):
            reloaded_screenshot(name("reloaded"), args.seed, size, prefix)
        if args.only in (None, "simulator"):
            simulator_screenshot(name("simulator"), args.seed, size)
        if args.only in (None, "foreign"):
            foreign_screenshot(name("foreign"), size)
        if args.only in (None, "model_switch") and size == (1920, 1080):
            foreign_screenshot(args.out_dir / "screenshot_model_switch.png", size, warnings_tab=True)
        if args.only in (None, "state_note") and size == (1920, 1080):
            foreign_screenshot(args.out_dir / "screenshot_state_note.png", size, warnings_tab=True,
                               case_name="free_narrow", model="binding")
        if args.only in (None, "rescale") and size == (1920, 1080):
            foreign_screenshot(args.out_dir / "screenshot_rescale.png", size, warnings_tab=True, seed_offset=30)
        if args.only in (None, "model_range") and size == (1920, 1080):
            foreign_screenshot(args.out_dir / "screenshot_model_range.png", size, warnings_tab=True,
                               case_name="free_fast", max_d_um2_s=20.0)
        if args.only in (None, "camera_note") and size == (1920, 1080):
            foreign_screenshot(args.out_dir / "screenshot_camera_note.png", size, warnings_tab=True,
                               case_name="free_emccd_bright")


if __name__ == "__main__":
    main()
