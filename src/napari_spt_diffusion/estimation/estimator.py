"""Inference with a bundled cross-transformer: any number of tracks, of any length.

:class:`Estimator` loads a TorchScript checkpoint (sha256 verified by
:func:`~.checkpoint.load_checkpoint`) and estimates the diffusion tensor of every
track from its :class:`~napari_spt_diffusion.tracking.patches.TrackPatches`.

How tracks of any length are handled
------------------------------------
* ``min_frames <= T <= max_frames`` (from the model card): one pass, padded to the
  longest track of its batch with the ``valid`` mask of the model contract.
* ``T > max_frames``: overlapping windows of ``max_frames`` frames, consecutive windows
  overlapping by ``overlap`` (half a window by default), the last one aligned with the
  track's end. Every frame of a window gets the triangular weight
  ``w_i = min(i + 1, L - i)`` (``i`` its index in the window of ``L`` frames): a frame
  is trusted most from the window where it has the most context on both sides.

  - pointwise models: the per-frame estimates of all windows covering a frame are
    blended with these weights, ``log D1``/``log D2`` averaged in log space (the model
    predicts log D) and the angle on the doubled angle (the ``(sin 2theta, cos 2theta)``
    outputs are averaged, then ``theta = atan2(s, c) / 2``);
  - sequence models: the track's tensor is the weighted mean of the windows' tensors
    (:func:`~.tensor.mean_tensor`: the matrices ``D1 u1 u1^T + D2 u2 u2^T`` averaged, then
    eigen-decomposed), each window weighted by the share of the track's frames it
    represents (the sum over its frames of ``w_i / sum of the weights of that frame``),
    so every frame counts once whatever the overlap. Averaging the eigenvalues instead
    (log D1 and log D2 apart) kept each window's noise split of an isotropic track's D1
    and D2 however long the track: on the NA 0.8 foreign-optics movie, 100-120-frame
    isotropic tracks read D2 / D1 of about 0.6.
* ``T < min_frames``: the model is not used; the classical
  :func:`~.blur_moments.combined_tensor` (CVE and blur moments) gives the track's tensor
  and the result is flagged ``"classical"`` (``"clipped"`` too if that tensor was not
  positive-definite). Tracks of fewer than 3 localizations get NaN, flagged
  ``"too_short"``.

Gaps (frames missing inside a track, ``gap_before``): the model was trained on
consecutive frames, so a displacement spanning ``g`` frame intervals is divided by
``sqrt(g)`` (the one-frame displacement with the same variance for Brownian motion).

Memory stays bounded whatever the number of tracks: windows are generated lazily,
sorted by length and run in batches of ``batch_size`` windows; only the per-frame
accumulators of the tracks (a few numbers per localization) are kept.
On the CPU each batch goes through the model in calls of :data:`CPU_CHUNK` windows
(faster: the activations stay in the caches), and with ``k > 1`` torch threads the calls run
side by side in ``k`` Python threads of one torch thread each (torch's own parallelism is
inefficient for operations this small; measured in ``benchmarks/reports/inference.md``);
torch's thread setting is restored after each batch. The answers do not change.

Acquisition check
-----------------
:func:`check_acquisition` compares a movie's acquisition with the card's
``training_acquisition`` and returns one warning sentence per quantity outside the
trained range; :meth:`Estimator.estimate` issues them once (``AcquisitionWarning``).

PSF units
---------
With ``psf_units`` ``"on"`` (or ``"auto"`` and a movie PSF outside what the card was trained for) the
model gets its inputs in units of the PSF (:mod:`~.psf_units`): patches resampled from a
larger cut region (:meth:`Estimator.source_patch_size`) so that the PSF has the card's training
width, displacements times the scale factor ``s``, and its D divided by ``s^2``. The classical
fallback of short tracks keeps the movie's own pixels (the centre ``P x P`` of the cut region),
and the acquisition check judges the movie in virtual pixels, the PSF normalised
(:func:`~.psf_units.model_acquisition`). docs/models.md has the measurements.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..acquisition import Acquisition
from ..errors import SptDiffusionError
from ..tracking.patches import TrackPatches
from . import psf_units as pu
from .blur_moments import combined_tensor
from .checkpoint import CheckpointError, load_checkpoint
from .tensor import mean_tensor, theta_from_sin_cos_2theta

__all__ = [
    "AcquisitionWarning",
    "EstimatorError",
    "Estimator",
    "TrackEstimate",
    "check_acquisition",
    "resolve_device",
    "triangular_weights",
    "window_starts",
    "DEFAULT_TOLERANCES",
    "MOTION_TOLERANCES",
    "CPU_CHUNK",
]


class EstimatorError(SptDiffusionError, ValueError):
    """Bad estimator settings or inputs (one sentence)."""


class AcquisitionWarning(UserWarning):
    """The movie's acquisition lies outside what the model was trained for."""


#: Windows per model call and torch thread on the CPU. Measured on one thread
#: (benchmarks/reports/inference.md): the bundled models run ~1.4x faster per CPU second
#: in calls of 32-128 windows of 30 frames than in calls of 256-512 (the activations of a
#: call then stay in the CPU caches). With several threads the call grows with them: on
#: a busy machine small calls with 2 threads were far slower (every call synchronises
#: the threads several times). 32 was chosen for two calls side by side on a quiet 2-core
#: machine from scratch runs of ``track`` on the speed protocol's movie; the speed benchmark
#: before and after the change: benchmarks/reports/tracking.md (last section).
CPU_CHUNK = 32

#: Relative ranges around the training acquisition inside which no warning is given:
#: ``quantity: (lowest ratio, highest ratio)`` of movie value / training value.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "pixel_size_nm": (0.8, 1.25),
    "frame_interval_s": (0.8, 1.25),
    "psf_sigma_px": (0.85, 1.15),
    "signal_photons": (0.25, 4.0),  # (0.7, 4.0) for the motions of MOTION_TOLERANCES
    "background_photons": (0.25, 4.0),
    "exposure_fraction": (0.8, 1.25),
}

#: Tolerances that replace :data:`DEFAULT_TOLERANCES` for a card's motion model. A single-state anisotropic or a
#: two-state isotropic model trained at one photon count reads dimmer movies poorly well before a quarter of it:
#: `aniso` (1,000 photons) at 500 photons is less accurate than the classical estimators (MAE D1 / D2 0.49 / 0.43
#: against 0.44 / 0.27, benchmarks/reports/robustness.md), and at 250 the guard rejects `aniso` (1.38 x) and
#: `twostate` (1.50 x), where `aniso_any` and `twostate_any` meet the grid target (grid.md, grid_twostate.md).
#: The binding model holds at 250-500 photons (robustness.md; grid_binding.md), so it keeps 0.25 x. Until
#: 2026-12-07 every model had 0.25 x.
MOTION_TOLERANCES: dict[str, dict[str, tuple[float, float]]] = {
    "aniso": {"signal_photons": (0.7, 4.0)},
    "twostate": {"signal_photons": (0.7, 4.0)},
}


# ---------------------------------------------------------------- small helpers
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; ``"cpu"``; ``"cuda"`` (must exist)."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EstimatorError("device 'cuda' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")
        return torch.device(name)
    raise EstimatorError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def window_starts(n_frames: int, window: int, overlap: int) -> np.ndarray:
    """First frame index of each window covering ``n_frames`` frames.

    Windows of ``window`` frames, a new one every ``window - overlap`` frames, the last
    aligned with the end. A track no longer than ``window`` gets one window at 0.
    """
    if window < 1 or not 0 <= overlap < window:
        raise EstimatorError("need window >= 1 and 0 <= overlap < window")
    if n_frames <= window:
        return np.zeros(1, dtype=np.int64)
    stride = window - overlap
    starts = np.arange(0, n_frames - window, stride, dtype=np.int64)
    return np.unique(np.append(starts, n_frames - window))


def triangular_weights(length: int) -> np.ndarray:
    """``(length,)`` blending weights ``min(i + 1, length - i)`` (peak in the middle)."""
    i = np.arange(length)
    return np.minimum(i + 1, length - i).astype(np.float64)


def _ratio_ok(value: float, reference: float, low: float, high: float) -> bool:
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0:
        return True
    r = value / reference
    return low <= r <= high


def _trained_for_psf_units(card: dict[str, Any]) -> bool:
    """Whether a card's model was trained for PSF units (its last stage drew from a ``psf_units*`` range)."""
    trained = ((card.get("training") or {}).get("acquisition_range") or {})
    return isinstance(trained, dict) and str(trained.get("name", "")).startswith("psf_units")


def check_acquisition(
    card: dict[str, Any],
    acquisition: Acquisition,
    tolerances: dict[str, tuple[float, float]] | None = None,
    virtual_pixels: bool = False,
) -> list[str]:
    """Warnings (one sentence each) where the acquisition leaves the model's training range.

    Compared with the card's ``training_acquisition``: pixel size and frame interval (they
    set which D in um^2/s the model's trained range of px^2/frame corresponds to), PSF
    width in pixels, signal photons and background (the signal-to-noise ratio) and the
    exposed fraction of the frame (motion blur). A card may give explicit ranges in
    ``training_ranges`` (``{"signal_photons": [low, high], ...}``, physical units), which
    replace the relative tolerances (:data:`DEFAULT_TOLERANCES`). ``virtual_pixels``: the
    acquisition is in the virtual pixels of PSF units (:func:`~.psf_units.model_acquisition`);
    the messages then say so for the pixel size and the background, and a model trained for PSF
    units (its card's ``training.acquisition_range`` is a ``psf_units*`` range) is not judged on
    the virtual pixel size, which follows the movie's PSF by design (not even against a pixel
    range in its card).

    Returns
    -------
    list of str
        Empty when everything is inside the trained range.
    """
    trained = card.get("training_acquisition") or {}
    try:
        ref = Acquisition.from_dict({k: v for k, v in trained.items() if k in Acquisition.__dataclass_fields__})
    except (TypeError, ValueError):
        return ["the model card's training acquisition cannot be read, so the movie could not be compared with it"]
    tol = dict(DEFAULT_TOLERANCES)
    tol.update(MOTION_TOLERANCES.get(str(card.get("motion_model")), {}))
    if tolerances:
        tol.update(tolerances)
    ranges = card.get("training_ranges") or {}
    name = card.get("name", "the model")
    values = {
        "pixel_size_nm": (acquisition.pixel_size_nm, ref.pixel_size_nm,
                          "virtual pixel size (PSF units)" if virtual_pixels else "pixel size", "nm"),
        "frame_interval_s": (acquisition.frame_interval_s, ref.frame_interval_s, "frame interval", "s"),
        "psf_sigma_px": (acquisition.psf_sigma_px, ref.psf_sigma_px, "PSF sigma", "px"),
        "signal_photons": (acquisition.signal_photons, ref.signal_photons, "signal", "photons/frame"),
        "background_photons": (
            acquisition.background_photons,
            ref.background_photons,
            "background",
            "photons/virtual pixel/frame (PSF units)" if virtual_pixels else "photons/pixel/frame",
        ),
        "exposure_fraction": (
            acquisition.exposure_time_s / acquisition.frame_interval_s,
            ref.exposure_time_s / ref.frame_interval_s,
            "exposed fraction of the frame",
            "",
        ),
    }
    if virtual_pixels and _trained_for_psf_units(card):
        # a model trained for PSF units: the virtual pixel follows the movie's PSF by design; whether
        # the D range it then covers biases the estimates is for the guard's population test to find
        # (also where the card names the virtual pixels it was trained over: `aniso_any` was trained
        # over 60-260 nm and meets the grid target in all six cells at PSFs of 2.5 px, 250 nm virtual
        # pixels, and in four of six at 2 px; grid.md). In the movie's own pixels (a PSF near the
        # model's, no resampling) the pixel size is judged, against the card's range where it has one.
        del values["pixel_size_nm"]
    messages = []
    for key, (value, reference, label, unit) in values.items():
        if key in ranges:
            low, high = (float(v) for v in ranges[key])
            ok = low <= value <= high
            trained_text = f"{low:g}-{high:g} {unit}".strip()
        else:
            lo, hi = tol[key]
            ok = _ratio_ok(value, reference, lo, hi)
            trained_text = f"{reference:g} {unit}".strip()
        if not ok:
            messages.append(
                f"{label} {value:g} {unit} is outside what model '{name}' was trained for ({trained_text}); "
                "its estimates may be biased (retrain a model for this microscope with `spt-diffusion train`)".replace(
                    "  ", " "
                )
            )
    return messages


# ------------------------------------------------------------------- results
@dataclass
class TrackEstimate:
    """Estimates of one track.

    Attributes
    ----------
    track_id
        As in the input :class:`TrackPatches`.
    frames
        ``(T,)`` frame numbers.
    D1_um2_s, D2_um2_s, theta_deg
        ``(T,)`` per-frame estimates: the model's pointwise estimates (pointwise models)
        or the track's value repeated (sequence models, classical fallback).
    track_D1_um2_s, track_D2_um2_s, track_theta_deg
        The track's tensor (um^2/s, degrees in ``[0, 180)``). For pointwise models, the
        mean of the per-frame values (D arithmetic, theta on the doubled angle weighted by
        ``D1 - D2``, see :func:`~.tensor.mean_tensor`).
    method
        ``"model"`` or ``"classical"``.
    flags
        Notes such as ``"classical"`` (track shorter than the model's minimum),
        ``"clipped"``, ``"too_short"``, ``"gaps"``, ``"windows"``.
    n_windows
        Number of model windows used (0 for the classical fallback).
    """

    track_id: int
    frames: np.ndarray
    D1_um2_s: np.ndarray
    D2_um2_s: np.ndarray
    theta_deg: np.ndarray
    track_D1_um2_s: float
    track_D2_um2_s: float
    track_theta_deg: float
    method: str
    flags: tuple[str, ...] = ()
    n_windows: int = 0
    pointwise: bool = False

    @property
    def n_frames(self) -> int:
        """Number of localizations."""
        return int(len(self.frames))


@dataclass
class _Accumulator:
    """Weighted sums of one track's window outputs (log D px^2/frame, doubled angle)."""

    n: int
    pointwise: bool
    weight: np.ndarray = field(init=False)
    log_d1: np.ndarray = field(init=False)
    log_d2: np.ndarray = field(init=False)
    sin2: np.ndarray = field(init=False)
    cos2: np.ndarray = field(init=False)
    windows: list[tuple[int, int, np.ndarray]] = field(default_factory=list)
    n_windows: int = 0

    def __post_init__(self) -> None:
        size = self.n if self.pointwise else 1
        self.weight = np.zeros(self.n)
        self.log_d1 = np.zeros(size)
        self.log_d2 = np.zeros(size)
        self.sin2 = np.zeros(size)
        self.cos2 = np.zeros(size)


# ------------------------------------------------------------------ estimator
class Estimator:
    """A bundled cross-transformer ready for inference.

    Parameters
    ----------
    model_name
        Name of a bundled model (``checkpoint.available_models()``) or a path to a
        ``.pt``/``.json`` pair.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    batch_size
        Windows per forward pass (memory ~ ``batch_size * max_frames * P * P * 4`` bytes
        of input plus the activations).
    overlap
        Frames shared by consecutive windows of long tracks; ``None``: half a window.
    num_threads
        CPU threads for torch (``None`` leaves torch's setting).
    chunk_size
        Windows per model call inside a batch; ``None``: :data:`CPU_CHUNK` windows on the
        CPU, the whole batch on a GPU. Each window's answer does not depend on the others of
        its call (padding is masked), so this changes speed only, not the estimates.
    parallel_calls
        CPU only: model calls run side by side in this many Python threads, each with one
        torch thread (torch's thread count is set to 1 during a batch and restored after).
        ``None``: torch's thread count at the time of the batch; 1: one call at a time,
        using torch's own threads.
    psf_units
        ``"off"`` (default), ``"on"`` or ``"auto"``: the model's inputs in units of the PSF
        (module docstring, :func:`~.psf_units.scale_for`).

    Raises
    ------
    CheckpointError
        The model is missing, corrupt or does not match its card.
    EstimatorError
        Bad device or settings.
    """

    def __init__(
        self,
        model_name: str = "aniso",
        device: str = "auto",
        batch_size: int = 256,
        overlap: int | None = None,
        num_threads: int | None = None,
        chunk_size: int | None = None,
        parallel_calls: int | None = None,
        psf_units: str = "off",
    ) -> None:
        if int(batch_size) < 1:
            raise EstimatorError(f"batch_size must be at least 1, got {batch_size!r}")
        if chunk_size is not None and int(chunk_size) < 1:
            raise EstimatorError(f"chunk_size must be at least 1, got {chunk_size!r}")
        if parallel_calls is not None and int(parallel_calls) < 1:
            raise EstimatorError(f"parallel_calls must be at least 1, got {parallel_calls!r}")
        self.parallel_calls = None if parallel_calls is None else int(parallel_calls)
        if psf_units not in pu.PSF_UNITS_MODES:
            raise EstimatorError(f"psf_units must be one of {', '.join(pu.PSF_UNITS_MODES)}, got {psf_units!r}")
        self.psf_units = psf_units
        self.device = resolve_device(device)
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.module, self._card = load_checkpoint(model_name, device=self.device)
        self.model_name = str(self._card.get("name", model_name))
        contract = self._card.get("input_contract", {})
        kind = self._card.get("kind")
        if kind not in ("sequence", "pointwise"):
            raise CheckpointError(f"model card of {self.model_name!r} has an unknown kind {kind!r}")
        self.pointwise = kind == "pointwise"
        self.min_frames = int(contract.get("min_frames", getattr(self.module, "min_frames", 1)))
        self.max_frames = int(contract.get("max_frames", getattr(self.module, "max_frames", 30)))
        self.patch_size = int(contract.get("patch_size_px", 11))
        if not 1 <= self.min_frames <= self.max_frames:
            raise CheckpointError(f"model card of {self.model_name!r} has inconsistent min_frames/max_frames")
        self.batch_size = int(batch_size)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.overlap = self.max_frames // 2 if overlap is None else int(overlap)
        if not 0 <= self.overlap < self.max_frames:
            raise EstimatorError(f"overlap must be in [0, {self.max_frames}), got {overlap!r}")
        self._warned: set[str] = set()

    @property
    def card(self) -> dict[str, Any]:
        """The model card (a copy)."""
        return dict(self._card)

    @property
    def kind(self) -> str:
        """``"pointwise"`` or ``"sequence"``."""
        return "pointwise" if self.pointwise else "sequence"

    def psf_scale(self, acquisition: Acquisition) -> float:
        """Virtual px per movie px of the model's inputs for this acquisition (1.0: PSF units not used)."""
        return pu.scale_for(self._card, acquisition, self.psf_units, DEFAULT_TOLERANCES["psf_sigma_px"])

    def source_patch_size(self, acquisition: Acquisition) -> int:
        """Odd side (movie px) of the patches to cut for :meth:`estimate`: the model's ``patch_size``,
        or larger with PSF units (:func:`~.psf_units.source_patch_size`)."""
        return pu.source_patch_size(self.psf_scale(acquisition), self.patch_size)

    def check_acquisition(self, acquisition: Acquisition, warn: bool = True) -> list[str]:
        """:func:`check_acquisition` for this model; warns once per distinct message. With PSF units the
        acquisition is judged as the model sees it (:func:`~.psf_units.model_acquisition`)."""
        scale = self.psf_scale(acquisition)
        judged = pu.model_acquisition(acquisition, scale, pu.card_psf_sigma_px(self._card))
        messages = check_acquisition(self._card, judged, virtual_pixels=judged is not acquisition)
        if warn:
            for m in messages:
                if m not in self._warned:
                    self._warned.add(m)
                    warnings.warn(m, AcquisitionWarning, stacklevel=3)
        return messages

    # -------------------------------------------------------------- public
    def estimate(
        self,
        track_patches: Sequence[TrackPatches],
        acquisition: Acquisition,
        progress: Callable[[float, str], Any] | None = None,
        *,
        warn_acquisition: bool = True,
    ) -> list[TrackEstimate]:
        """Estimate every track.

        Parameters
        ----------
        track_patches
            Tracks as made by :func:`~napari_spt_diffusion.tracking.patches.extract_track_patches`
            (photo-electrons; odd patches of at least :meth:`source_patch_size` px, of which
            the model's ``patch_size`` without PSF units).
        acquisition
            The movie's acquisition (unit conversions; compared with the card).
        progress
            Optional ``progress(fraction, message)`` called after every batch; it may raise
            to stop the run (the pipeline raises ``Cancelled`` there).
        warn_acquisition
            Warn when the acquisition lies outside the model's training range (the
            pipeline leaves that to its guard, :mod:`~.guard`).

        Returns
        -------
        list of TrackEstimate
            In the order of ``track_patches``.
        """
        self.check_acquisition(acquisition, warn=warn_acquisition)
        tracks = list(track_patches)
        scale = self.psf_scale(acquisition)
        need = pu.source_patch_size(scale, self.patch_size)
        for tp in tracks:
            q = tp.patches_photons.shape[1:]
            if q[0] != q[1] or q[0] < need or (q[0] - self.patch_size) % 2:
                raise EstimatorError(
                    f"track {tp.track_id} has {q[0]}-px patches but model '{self.model_name}' needs "
                    f"{need}-px patches" + (f" (PSF units, scale {scale:.3g})" if need != self.patch_size else "")
                )
        results: list[TrackEstimate | None] = [None] * len(tracks)
        accumulators: dict[int, _Accumulator] = {}
        inputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # the model's patches and displacements
        for i, tp in enumerate(tracks):
            if tp.n_frames < self.min_frames:
                results[i] = self._classical(_centred(tp, self.patch_size), acquisition)
            else:
                accumulators[i] = _Accumulator(tp.n_frames, self.pointwise)
                inputs[i] = pu.model_inputs(tp.patches_photons, tp.subpixel_offset_px, tp.positions_px,
                                            tp.displacements_px, scale, self.patch_size)
        items = [
            (i, int(s), min(self.max_frames, tracks[i].n_frames))
            for i in accumulators
            for s in window_starts(tracks[i].n_frames, self.max_frames, self.overlap)
        ]
        # long windows first, then by length: batches hold windows of similar length
        items.sort(key=lambda it: -it[2])
        n_batches = max(1, math.ceil(len(items) / self.batch_size))
        for b in range(0, len(items), self.batch_size):
            batch = items[b : b + self.batch_size]
            out = self._run_batch(tracks, inputs, batch)
            if scale != 1.0:  # virtual px^2/frame -> movie px^2/frame (log D columns)
                out[..., :2] -= 2.0 * math.log(scale)
            for (i, start, length), row in zip(batch, out):
                self._accumulate(accumulators[i], start, length, row)
            if progress is not None:
                progress(
                    min(1.0, (b // self.batch_size + 1) / n_batches),
                    f"model {self.model_name}: batch {b // self.batch_size + 1}/{n_batches}",
                )
        for i, acc in accumulators.items():
            results[i] = self._finish(tracks[i], acc, acquisition)
        if progress is not None and not items:
            progress(1.0, f"model {self.model_name}: no track long enough for the model")
        return [r for r in results if r is not None]

    # ------------------------------------------------------------- internals
    def _window_inputs(
        self, tp: TrackPatches, inputs: tuple[np.ndarray, np.ndarray], start: int, length: int
    ) -> tuple[np.ndarray, np.ndarray]:
        sl = slice(start, start + length)
        patches = inputs[0][sl]
        disp = np.array(inputs[1][sl], dtype=np.float64)
        frames = np.asarray(tp.frames)[sl]
        if length > 1:
            steps = np.diff(frames).astype(np.float64)
            disp[1:] /= np.sqrt(np.maximum(steps, 1.0))[:, None]
        disp[0] = 0.0
        return patches, disp

    def _run_batch(
        self,
        tracks: Sequence[TrackPatches],
        inputs: dict[int, tuple[np.ndarray, np.ndarray]],
        batch: list[tuple[int, int, int]],
    ) -> np.ndarray:
        n = len(batch)
        t_max = max(length for _, _, length in batch)
        p = self.patch_size
        patches = np.zeros((n, t_max, p, p), dtype=np.float32)
        disp = np.zeros((n, t_max, 2), dtype=np.float32)
        valid = np.zeros((n, t_max), dtype=bool)
        for j, (i, start, length) in enumerate(batch):
            pa, d = self._window_inputs(tracks[i], inputs[i], start, length)
            patches[j, :length] = pa
            disp[j, :length] = d
            valid[j, :length] = True
        lengths = valid.sum(1)
        chunk = self.model_call_size()
        calls = [(a, min(n, a + chunk)) for a in range(0, n, chunk)]

        def call(ab: tuple[int, int]) -> np.ndarray:
            a, b = ab
            t = int(lengths[a:b].max())  # windows come sorted by length: little padding per chunk
            with torch.inference_mode():  # thread-local: entered in the thread that runs the call
                out = self.module.forward_log(
                    torch.from_numpy(patches[a:b, :t]).to(self.device),
                    torch.from_numpy(disp[a:b, :t]).to(self.device),
                    torch.from_numpy(valid[a:b, :t]).to(self.device),
                ).float().cpu().numpy()
            if out.ndim == 3 and t < t_max:  # pointwise: back to the batch's padded length
                out = np.concatenate([out, np.zeros((b - a, t_max - t, out.shape[2]), out.dtype)], axis=1)
            return out

        workers = min(self.parallel_workers(), len(calls))
        if workers <= 1:
            outs = [call(ab) for ab in calls]
        else:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    outs = list(pool.map(call, calls))
            finally:
                torch.set_num_threads(threads)
        return np.concatenate(outs).astype(np.float64)

    def parallel_workers(self) -> int:
        """Model calls run side by side: ``parallel_calls``, else torch's thread count (CPU); 1 on a GPU."""
        if self.device.type != "cpu":
            return 1
        if self.parallel_calls is not None:
            return self.parallel_calls
        return max(1, torch.get_num_threads())

    def model_call_size(self) -> int:
        """Windows per model call: ``chunk_size``, else :data:`CPU_CHUNK` (CPU) or the batch (GPU)."""
        if self.chunk_size is not None:
            return self.chunk_size
        if self.device.type == "cpu":
            return CPU_CHUNK
        return self.batch_size

    def _accumulate(self, acc: _Accumulator, start: int, length: int, row: np.ndarray) -> None:
        w = triangular_weights(length)
        acc.weight[start : start + length] += w
        acc.n_windows += 1
        if self.pointwise:
            sl = slice(start, start + length)
            r = row[:length]
            acc.log_d1[sl] += w * r[:, 0]
            acc.log_d2[sl] += w * r[:, 1]
            acc.sin2[sl] += w * r[:, 2]
            acc.cos2[sl] += w * r[:, 3]
        else:
            acc.windows.append((start, length, row.copy()))

    def _finish(self, tp: TrackPatches, acc: _Accumulator, acquisition: Acquisition) -> TrackEstimate:
        flags = ["windows"] if acc.n_windows > 1 else []
        if np.any(np.asarray(tp.gap_before)[1:]):
            flags.append("gaps")
        n = tp.n_frames
        if self.pointwise:
            w = acc.weight
            d1 = acquisition.diffusion_to_um2_s(np.exp(acc.log_d1 / w))
            d2 = acquisition.diffusion_to_um2_s(np.exp(acc.log_d2 / w))
            theta = theta_from_sin_cos_2theta(acc.sin2, acc.cos2)
            t1, t2, tt = mean_tensor(d1, d2, theta)
        else:
            # each window's share of the track: sum over its frames of w_i / (total weight of the frame)
            shares = []
            rows = []
            for start, length, row in acc.windows:
                w = triangular_weights(length)
                shares.append(float(np.sum(w / acc.weight[start : start + length])))
                rows.append(row)
            shares_a = np.asarray(shares)
            rows_a = np.asarray(rows)
            # the windows' tensors are averaged (as the frames' tensors of a pointwise model), not
            # their eigenvalues: a window of an isotropic track has a D1 > D2 split by noise along a
            # random axis, which averaging the eigenvalues would keep however long the track
            t1, t2, tt = mean_tensor(acquisition.diffusion_to_um2_s(np.exp(rows_a[:, 0])),
                                     acquisition.diffusion_to_um2_s(np.exp(rows_a[:, 1])),
                                     theta_from_sin_cos_2theta(rows_a[:, 2], rows_a[:, 3]), weights=shares_a)
            d1, d2, theta = np.full(n, t1), np.full(n, t2), np.full(n, tt)
        return TrackEstimate(
            track_id=int(tp.track_id),
            frames=np.asarray(tp.frames).copy(),
            D1_um2_s=np.asarray(d1, dtype=float),
            D2_um2_s=np.asarray(d2, dtype=float),
            theta_deg=np.asarray(theta, dtype=float),
            track_D1_um2_s=float(t1),
            track_D2_um2_s=float(t2),
            track_theta_deg=float(tt),
            method="model",
            flags=tuple(flags),
            n_windows=acc.n_windows,
            pointwise=self.pointwise,
        )

    def _classical(self, tp: TrackPatches, acquisition: Acquisition) -> TrackEstimate:
        n = tp.n_frames
        flags = ["classical"]
        if n < 3:
            d1 = d2 = th = float("nan")
            flags.append("too_short")
        else:
            est = combined_tensor(
                tp.positions_px,
                tp.patches_photons,
                acquisition,
                subpixel_offset_px=tp.subpixel_offset_px,
                outside_mask=tp.outside_mask,
                frames=np.asarray(tp.frames),
            )
            d1, d2, th = est.D1_um2_s, est.D2_um2_s, est.theta_deg
            if est.clipped:
                flags.append("clipped")
        if np.any(np.asarray(tp.gap_before)[1:]):
            flags.append("gaps")
        return TrackEstimate(
            track_id=int(tp.track_id),
            frames=np.asarray(tp.frames).copy(),
            D1_um2_s=np.full(n, d1),
            D2_um2_s=np.full(n, d2),
            theta_deg=np.full(n, th),
            track_D1_um2_s=float(d1),
            track_D2_um2_s=float(d2),
            track_theta_deg=float(th),
            method="classical",
            flags=tuple(flags),
            n_windows=0,
            pointwise=False,
        )


def _centred(tp: TrackPatches, patch_size: int) -> TrackPatches:
    """The track with the centre ``patch_size`` px of its patches (itself when they are that size)."""
    if tp.patches_photons.shape[1] == patch_size:
        return tp
    return TrackPatches(
        track_id=tp.track_id, frames=tp.frames, positions_px=tp.positions_px,
        patches_photons=pu.centre_crop(tp.patches_photons, patch_size), subpixel_offset_px=tp.subpixel_offset_px,
        outside_mask=pu.centre_crop(tp.outside_mask, patch_size), displacements_px=tp.displacements_px,
        gap_before=tp.gap_before,
    )
