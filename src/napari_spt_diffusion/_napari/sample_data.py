"""npe2 sample data: the bundled sample movie, and a freshly simulated small movie."""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers import LayerGeometry, image_layer, tracks_layer

__all__ = ["sample_movie", "simulated_movie"]

SIMULATED_SHAPE_YX = (128, 128)
SIMULATED_FRAMES = 100


def sample_movie() -> list[tuple[Any, dict[str, Any], str]]:
    """The bundled sample movie at its physical scale (pixel size and frame interval from its TIFF).

    Returns
    -------
    list
        One image layer data tuple; its metadata carry the acquisition and the file path,
        so the Track & Estimate widget is prefilled.
    """
    from .. import io

    path = io.sample_movie_path()
    movie = io.read_movie(path)
    try:
        acquisition = movie.acquisition()
        data = np.asarray(movie.data)
    finally:
        movie.close()
    return [image_layer(data, acquisition, name=path.stem, metadata={"path": str(path)})]


def simulated_movie(seed: int | None = None) -> list[tuple[Any, dict[str, Any], str]]:
    """A new 128 x 128 x 100 movie (mixed anisotropic and binding particles) and its true tracks.

    Parameters
    ----------
    seed
        Random seed; ``None`` draws a fresh one (recorded in the layer metadata).
    """
    from ..simulation import simulate_movie

    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    sim = simulate_movie(SIMULATED_SHAPE_YX, SIMULATED_FRAMES, None, seed, model="mixed", particles=20)
    layers = [image_layer(sim.movie, sim.acquisition, name=f"simulated movie (seed {seed})", metadata={"seed": seed})]
    if len(sim.truth.tracks):
        layers.append(
            tracks_layer(
                sim.truth,
                geometry=LayerGeometry.from_acquisition(sim.acquisition),
                name="truth tracks",
            )
        )
    return layers
