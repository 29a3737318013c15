"""Changepoints found on the bundled sample movie with the ``binding`` model, with and without
the displacement confirmation (``Settings.changepoint_confirm``), next to the truth.

The sample movie mixes single-state anisotropic particles (75 %) with binding/unbinding ones
(``sample_data/README.md``); a single-state track should get no changepoint.

Command::

    .venv/bin/python benchmarks/check_sample_changepoints.py

Prints one line per setting (result tracks, changepoints) and the truth's counts.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from napari_spt_diffusion.acquisition import Acquisition
from napari_spt_diffusion.estimation.estimator import Estimator
from napari_spt_diffusion.io import read_movie, sample_movie_path
from napari_spt_diffusion.pipeline import Settings, track_and_estimate


def main() -> int:
    torch.set_num_threads(1)
    path = sample_movie_path()
    movie = np.asarray(read_movie(path).data)
    truth = pd.read_csv(str(path).replace(".tif", "_truth_summary.csv"))
    estimator = Estimator("binding", device="cpu")
    for confirm in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            results = track_and_estimate(movie, Acquisition(), Settings(device="cpu", changepoint_confirm=confirm),
                                         estimator=estimator)
        print(f"confirm={confirm}: {len(results.summary)} tracks, {int(results.summary['n_changepoints'].sum())} "
              f"changepoints (truth: {len(truth)} tracks, {int(truth['n_changepoints'].sum())} changepoints)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
