"""Acquisition settings of a single-particle-tracking movie and unit conversions.

Every physical quantity of the project is converted between pixels/frames and
physical units (nm, um, s, um^2/s) here and nowhere else.

The defaults are the "standard" acquisition of ``docs/protocols.md``: 100 nm pixels,
10 ms frames exposed continuously (simulated as 10 sub-steps of 1 ms), a Gaussian
PSF of sigma 100 nm, 1,000 signal photons per frame, 10 background photons per
pixel per frame, camera gain 1 ADU/e-, offset 100 ADU and 1.5 e- rms read noise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SptDiffusionError

__all__ = ["Acquisition", "AcquisitionError"]


class AcquisitionError(SptDiffusionError, ValueError):
    """Raised for acquisition settings that cannot describe a real movie."""


@dataclass(frozen=True)
class Acquisition:
    """Camera, optics and timing of a movie.

    Attributes
    ----------
    pixel_size_nm
        Side of one camera pixel in the sample plane (nm).
    frame_interval_s
        Time from the start of one frame to the start of the next (s).
    exposure_s
        Exposure time of each frame (s), at most ``frame_interval_s``. ``None`` means
        continuous exposure (``exposure_s == frame_interval_s``).
    substeps_per_frame
        Number of sub-steps a frame interval is divided into by the simulator; the
        positions of the exposed sub-steps are averaged by the camera (motion blur).
    psf_sigma_nm
        Standard deviation of the Gaussian point-spread function (nm).
    signal_photons
        Mean number of detected signal photons per particle per frame.
    background_photons
        Mean number of background photons per pixel per frame.
    read_noise_e
        Gaussian read noise of the camera (electrons rms).
    gain_adu_per_e
        Camera gain (ADU per photo-electron).
    offset_adu
        Camera offset added to every pixel (ADU); negative for signed movies whose
        background was shifted below zero (e.g. background-subtracted ``int16`` data).
    """

    pixel_size_nm: float = 100.0
    frame_interval_s: float = 0.01
    exposure_s: float | None = None
    substeps_per_frame: int = 10
    psf_sigma_nm: float = 100.0
    signal_photons: float = 1000.0
    background_photons: float = 10.0
    read_noise_e: float = 1.5
    gain_adu_per_e: float = 1.0
    offset_adu: float = 100.0

    def __post_init__(self) -> None:
        positive = {
            "pixel_size_nm": self.pixel_size_nm,
            "frame_interval_s": self.frame_interval_s,
            "psf_sigma_nm": self.psf_sigma_nm,
            "gain_adu_per_e": self.gain_adu_per_e,
        }
        for name, value in positive.items():
            if not _is_finite_number(value) or value <= 0:
                raise AcquisitionError(f"{name} must be a positive number, got {value!r}")
        non_negative = {
            "signal_photons": self.signal_photons,
            "background_photons": self.background_photons,
            "read_noise_e": self.read_noise_e,
        }
        for name, value in non_negative.items():
            if not _is_finite_number(value) or value < 0:
                raise AcquisitionError(f"{name} must be a non-negative number, got {value!r}")
        if not _is_finite_number(self.offset_adu):
            raise AcquisitionError(f"offset_adu must be a number, got {self.offset_adu!r}")
        if (
            isinstance(self.substeps_per_frame, bool)
            or int(self.substeps_per_frame) != self.substeps_per_frame
            or self.substeps_per_frame < 1
        ):
            raise AcquisitionError(
                f"substeps_per_frame must be a whole number >= 1, got {self.substeps_per_frame!r}"
            )
        object.__setattr__(self, "substeps_per_frame", int(self.substeps_per_frame))
        if self.exposure_s is not None:
            if not _is_finite_number(self.exposure_s) or self.exposure_s <= 0:
                raise AcquisitionError(f"exposure_s must be a positive number, got {self.exposure_s!r}")
            if self.exposure_s > self.frame_interval_s * (1 + 1e-9):
                raise AcquisitionError(
                    f"exposure_s ({self.exposure_s} s) cannot exceed frame_interval_s "
                    f"({self.frame_interval_s} s)"
                )

    # ------------------------------------------------------------------ timing
    @property
    def exposure_time_s(self) -> float:
        """Exposure time of a frame (s); equals the frame interval for continuous exposure."""
        return self.frame_interval_s if self.exposure_s is None else float(self.exposure_s)

    @property
    def substep_interval_s(self) -> float:
        """Duration of one simulator sub-step (s): ``frame_interval_s / substeps_per_frame``."""
        return self.frame_interval_s / self.substeps_per_frame

    @property
    def exposed_substeps(self) -> int:
        """Number of sub-steps at the start of each frame that the camera integrates (>= 1)."""
        fraction = self.exposure_time_s / self.frame_interval_s
        return max(1, min(self.substeps_per_frame, int(round(fraction * self.substeps_per_frame))))

    @property
    def blur_coefficient(self) -> float:
        """Motion-blur coefficient R of the displacement statistics (dimensionless).

        For ``m`` exposed sub-positions (spaced by one sub-step) averaged in a frame of
        ``n`` sub-steps, ``R = (m^2 - 1) / (6 m n)``; continuous exposure with many
        sub-steps tends to 1/6, and ``m = n`` gives ``(1 - 1/n^2)/6``.
        It enters ``<dx_k^2> = 2 D dt (1 - 2R) + 2 s^2`` and
        ``<dx_k dx_(k+1)> = 2 R D dt - s^2`` (Vestergaard et al. 2014).
        """
        m = self.exposed_substeps
        n = self.substeps_per_frame
        return (m * m - 1) / (6.0 * m * n)

    # ------------------------------------------------------------------ lengths
    @property
    def pixel_size_um(self) -> float:
        """Pixel size in um."""
        return self.pixel_size_nm / 1000.0

    @property
    def psf_sigma_px(self) -> float:
        """PSF standard deviation in pixels."""
        return self.psf_sigma_nm / self.pixel_size_nm

    def px_to_um(self, value_px: Any) -> Any:
        """Convert lengths/positions from pixels to um (scalars or arrays)."""
        return (
            np.asarray(value_px, dtype=float) * self.pixel_size_um
            if not np.isscalar(value_px)
            else float(value_px) * self.pixel_size_um
        )

    def um_to_px(self, value_um: Any) -> Any:
        """Convert lengths/positions from um to pixels (scalars or arrays)."""
        return (
            np.asarray(value_um, dtype=float) / self.pixel_size_um
            if not np.isscalar(value_um)
            else float(value_um) / self.pixel_size_um
        )

    def px_to_nm(self, value_px: Any) -> Any:
        """Convert lengths from pixels to nm (scalars or arrays)."""
        return (
            np.asarray(value_px, dtype=float) * self.pixel_size_nm
            if not np.isscalar(value_px)
            else float(value_px) * self.pixel_size_nm
        )

    def frames_to_s(self, frames: Any) -> Any:
        """Convert frame indices/counts to seconds."""
        return (
            np.asarray(frames, dtype=float) * self.frame_interval_s
            if not np.isscalar(frames)
            else float(frames) * self.frame_interval_s
        )

    # --------------------------------------------------------- diffusion units
    @property
    def um2_s_per_px2_frame(self) -> float:
        """How many um^2/s one px^2/frame is."""
        return self.pixel_size_um**2 / self.frame_interval_s

    def diffusion_to_px2_per_frame(self, D_um2_s: Any) -> Any:
        """Convert diffusion coefficients from um^2/s to px^2/frame."""
        if np.isscalar(D_um2_s):
            return float(D_um2_s) / self.um2_s_per_px2_frame
        return np.asarray(D_um2_s, dtype=float) / self.um2_s_per_px2_frame

    def diffusion_to_um2_s(self, D_px2_frame: Any) -> Any:
        """Convert diffusion coefficients from px^2/frame to um^2/s."""
        if np.isscalar(D_px2_frame):
            return float(D_px2_frame) * self.um2_s_per_px2_frame
        return np.asarray(D_px2_frame, dtype=float) * self.um2_s_per_px2_frame

    def diffusion_to_px2_per_substep(self, D_um2_s: Any) -> Any:
        """Convert diffusion coefficients from um^2/s to px^2 per simulator sub-step."""
        return self.diffusion_to_px2_per_frame(D_um2_s) / self.substeps_per_frame

    # ------------------------------------------------------------ camera units
    def adu_to_photons(self, adu: Any) -> np.ndarray:
        """Convert camera counts (ADU) to photo-electrons: ``(adu - offset) / gain``."""
        return (np.asarray(adu, dtype=np.float32) - np.float32(self.offset_adu)) / np.float32(self.gain_adu_per_e)

    # ----------------------------------------------------------- serialisation
    def replace(self, **changes: Any) -> Acquisition:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of the fields (units in the names)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Acquisition:
        """Build from a dictionary as written by :meth:`to_dict`; unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise AcquisitionError(f"unknown acquisition field(s): {', '.join(unknown)}")
        return cls(**values)


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
