"""The per-frame spot path on torch tensors, for a GPU (or, for testing, the CPU).

:mod:`.torch_detect` (Difference-of-Gaussians filter, robust noise, thresholded local
maxima) and :mod:`.torch_localize` (batched Poisson maximum-likelihood fit of the
pixel-integrated Gaussian, with the neighbour refits) port the numpy/scipy code of
:mod:`~napari_spt_diffusion.tracking.detect` and :mod:`~napari_spt_diffusion.tracking.localize`
to torch, a batch of frames at a time, with the same parameters and the same arithmetic
(float32 filters, float64 fits), so that a model sees the same spots whichever path found them.
:mod:`.torch_spots` runs them over a movie (the overlap pass stays on the CPU) and chooses
the path for a device (:func:`~.torch_spots.spot_function`).

``tracking/`` must not import torch; this package sits above it and imports from it.
"""

from .torch_spots import SPOT_BACKENDS, SpotBackendError, check_spot_backend, detect_and_localize_torch, spot_function

__all__ = ["SPOT_BACKENDS", "SpotBackendError", "check_spot_backend", "detect_and_localize_torch", "spot_function"]
