"""The torch spot path (accel/) against the numpy path (tracking/), on the CPU (and on a GPU when present).

The torch code is device-agnostic: what runs here on the CPU is what runs on a CUDA GPU. It
must find the same spots as :func:`~napari_spt_diffusion.tracking.spots.detect_and_localize`
(matched within 0.1 px), at positions within a small fraction of their localization
precision, with the same photons to 1 %, so that a model sees the same input whichever
path found the spots.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from napari_spt_diffusion.accel import SpotBackendError, detect_and_localize_torch, spot_function
from napari_spt_diffusion.accel.torch_detect import detect_batch, dog_filter_batch
from napari_spt_diffusion.accel.torch_localize import localize_batch
from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.errors import SptDiffusionError
from napari_spt_diffusion.pipeline import PipelineError, Settings, track_and_estimate
from napari_spt_diffusion.simulation.movie import simulate_movie
from napari_spt_diffusion.tracking.detect import DetectionSettings, TrackingInputError, detect_photons, dog_filter
from napari_spt_diffusion.tracking.localize import localize_arrays
from napari_spt_diffusion.tracking.spots import detect_and_localize

ACQ = Acquisition()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small batched ops run far faster on one thread than on two busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def movie():
    """A crowded 80 x 80 x 20 simulated movie (about 30 spots a frame, some streaks and close pairs)."""
    return simulate_movie((80, 80), 20, ACQ, rng=11, model="aniso", particles=30)


def _compare(a, b, n_frames: int) -> dict[str, float]:
    """Spots of table ``a`` matched in ``b`` (same frame, nearest within 0.1 px) and their worst differences."""
    matched, d_over_precision, photon_rel, snr_rel, fit_ok_same = 0, [], [], [], []
    for f in range(n_frames):
        fa, fb = a[a["frame"] == f], b[b["frame"] == f]
        if not len(fa) or not len(fb):
            continue
        dist, idx = cKDTree(fb[["y_px", "x_px"]].to_numpy()).query(fa[["y_px", "x_px"]].to_numpy())
        ok = dist < 0.1
        matched += int(ok.sum())
        ma, mb = fa[ok], fb.iloc[idx[ok]]
        precision_px = ma["loc_precision_nm"].to_numpy() / ACQ.pixel_size_nm
        d_over_precision.append(dist[ok] / precision_px)
        photon_rel.append(np.abs(mb["photons"].to_numpy() / ma["photons"].to_numpy() - 1.0))
        snr_rel.append(np.abs(mb["snr"].to_numpy() / ma["snr"].to_numpy() - 1.0))
        fit_ok_same.append(ma["fit_ok"].to_numpy() == mb["fit_ok"].to_numpy())
    return {
        "matched": matched / max(len(a), 1),
        "d_over_precision_max": float(np.max(np.concatenate(d_over_precision))),
        "photons_rel_max": float(np.max(np.concatenate(photon_rel))),
        "snr_rel_max": float(np.max(np.concatenate(snr_rel))),
        "fit_ok_same": float(np.mean(np.concatenate(fit_ok_same))),
    }


@pytest.mark.parametrize("overlaps", [False, True])
def test_torch_path_matches_the_numpy_path(movie, overlaps):
    frames = movie.movie
    numpy_spots = detect_and_localize(frames, ACQ, overlaps=overlaps)
    torch_spots = detect_and_localize_torch(frames, ACQ, overlaps=overlaps, device="cpu", batch_frames=10)
    assert len(numpy_spots) > 400
    assert list(torch_spots.columns) == list(numpy_spots.columns)
    assert torch_spots.dtypes.equals(numpy_spots.dtypes)
    assert abs(len(torch_spots) - len(numpy_spots)) <= 0.01 * len(numpy_spots)
    scores = _compare(numpy_spots, torch_spots, frames.shape[0])
    assert scores["matched"] >= (0.99 if not overlaps else 0.98), scores
    assert scores["d_over_precision_max"] < 0.01, scores
    assert scores["photons_rel_max"] < 0.01, scores
    assert scores["snr_rel_max"] < 1e-3, scores
    assert scores["fit_ok_same"] >= 0.99, scores
    for key in ("n_frames", "frames_processed", "stopped_early"):
        assert torch_spots.attrs[key] == numpy_spots.attrs[key]
    if overlaps:
        assert numpy_spots.attrs["n_split"] > 0  # the second pass had work to do here
        for key in ("n_split", "n_merged"):
            assert abs(torch_spots.attrs[key] - numpy_spots.attrs[key]) <= max(2, 0.05 * numpy_spots.attrs[key])


def test_detection_of_a_batch_equals_the_numpy_detection():
    rng = np.random.default_rng(4)
    frames = rng.poisson(10.0, (3, 40, 7)).astype(np.float32)  # narrower than the DoG's kernel: reflected borders
    frames[0, 20, 3] += 400.0
    frames[1, 0, 0] += 600.0  # a spot in the corner
    frames[2, 10:12, 2:4] += 150.0
    dog = dog_filter_batch(torch.from_numpy(frames), ACQ.psf_sigma_px).numpy()
    scale = float(np.abs(dog).max())
    found = detect_batch(torch.from_numpy(frames), ACQ, DetectionSettings(threshold_snr=4.0))
    for b, frame in enumerate(frames):
        np.testing.assert_allclose(dog[b], dog_filter(frame, ACQ.psf_sigma_px), atol=1e-5 * scale)
        peaks, snr = detect_photons(frame, ACQ, DetectionSettings(threshold_snr=4.0))
        assert len(peaks) >= 1
        np.testing.assert_array_equal(found[b][0], peaks)
        np.testing.assert_allclose(found[b][1], snr, rtol=1e-4)


def test_batched_fits_equal_the_per_frame_fits_with_neighbours():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:32, :32]
    frames, peaks, frame_of = [], [], []
    for b, centres in enumerate([[(10.3, 10.6), (12.8, 14.1), (25.0, 5.2)], [(0.4, 16.0), (16.2, 16.7)]]):
        image = np.full((32, 32), 8.0)
        for y, x in centres:
            image += 900.0 / (2 * np.pi * 1.3**2) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.3**2))
            peaks.append((int(round(y)), int(round(x))))
            frame_of.append(b)
        frames.append(rng.poisson(image).astype(np.float32))
    frames = np.stack(frames)
    peaks, frame_of = np.array(peaks), np.array(frame_of)
    batched = localize_batch(torch.from_numpy(frames), peaks, frame_of, ACQ)
    for b in range(len(frames)):
        rows = frame_of == b
        single = localize_arrays(frames[b], peaks[rows], ACQ)
        for column, value in single.items():
            if column == "fit_ok":
                np.testing.assert_array_equal(batched[column][rows], value)
            else:
                np.testing.assert_allclose(batched[column][rows], value, rtol=1e-6, atol=1e-6)


def test_the_pipeline_chooses_the_torch_path_on_a_gpu_only():
    assert spot_function("cpu") is detect_and_localize
    assert spot_function("cpu", "numpy") is detect_and_localize
    chosen = spot_function("cpu", "torch")
    assert chosen.func is detect_and_localize_torch and chosen.keywords["device"] == torch.device("cpu")
    if torch.cuda.is_available():
        assert spot_function("auto").keywords["device"].type == "cuda"
    else:
        assert spot_function("auto") is detect_and_localize
        with pytest.raises(SptDiffusionError, match="no CUDA GPU"):
            spot_function("cuda")
    with pytest.raises(SpotBackendError, match="spot_backend must be one of"):
        spot_function("cpu", "opencl")
    assert issubclass(SpotBackendError, SptDiffusionError)


def test_stop_progress_and_bad_frames(movie):
    frames = movie.movie[:12]
    seen: list[float] = []
    calls = iter([False, False, True])
    part = detect_and_localize_torch(frames, ACQ, device="cpu", batch_frames=4, overlaps=False,
                                     progress=lambda f, m: seen.append(f), should_stop=lambda: next(calls))
    assert part.attrs["stopped_early"] and part.attrs["frames_processed"] == 8
    assert part["frame"].max() <= 7 and seen == sorted(seen) and seen[-1] == pytest.approx(8 / 12)
    bad = frames.astype(np.float32)
    bad[5, 3, 3] = np.nan
    with pytest.raises(TrackingInputError, match="frame 5"):
        detect_and_localize_torch(bad, ACQ, device="cpu")
    with pytest.raises(TrackingInputError, match="batch_frames"):
        detect_and_localize_torch(frames, ACQ, device="cpu", batch_frames=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_the_gpu_path_matches_the_numpy_path(movie):
    numpy_spots = detect_and_localize(movie.movie, ACQ, overlaps=False)
    gpu_spots = detect_and_localize_torch(movie.movie, ACQ, overlaps=False, device="cuda")
    scores = _compare(numpy_spots, gpu_spots, movie.movie.shape[0])
    assert scores["matched"] >= 0.99 and scores["d_over_precision_max"] < 0.01, scores
    assert scores["photons_rel_max"] < 0.01, scores


@pytest.mark.parametrize("chunk_frames", [0, 9])
def test_the_pipeline_with_the_torch_path_gives_the_numpy_paths_results(toy_models, chunk_frames):
    small = simulate_movie((64, 64), 30, ACQ, rng=3, model="aniso", particles=6, D1_range_um2_s=(0.5, 2.0))
    base = {"model": toy_models["sequence"], "device": "cpu", "min_track_length": 3, "chunk_frames": chunk_frames}
    plain = track_and_estimate(small.movie, ACQ, Settings(**base, spot_backend="numpy"))
    torch_run = track_and_estimate(small.movie, ACQ, Settings(**base, spot_backend="torch"))
    assert torch_run.meta["settings"]["spot_backend"] == "torch"
    assert torch_run.meta["n_localizations_detected"] == plain.meta["n_localizations_detected"]
    assert len(torch_run.tracks) == len(plain.tracks) > 0
    for column in ("frame", "x_px", "y_px", "D1_um2_s", "D2_um2_s"):
        np.testing.assert_allclose(torch_run.tracks[column].to_numpy(float), plain.tracks[column].to_numpy(float),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(PipelineError, match="spot_backend"):
        Settings(spot_backend="gpu")
