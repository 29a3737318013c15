"""Training of the cross-transformer models on simulated samples, and writing their checkpoints.

* :mod:`.config` — :class:`TrainConfig`, every parameter of a run (JSON in and out), and
  the ``train`` command-line options built from it;
* :mod:`.samples` — training and test samples made through the pipeline's spot path and
  the tracking patch path;
* :mod:`.data` — datasets (generation, ``.npz`` cache), targets, augmentation;
* :mod:`.models` — the cross-transformer (one readable file);
* :mod:`.loop` — :func:`~.loop.train_model`, the training loop;
* :mod:`.card` — export to TorchScript, model cards, lineage, bundling, re-export.

Run ``python -m napari_spt_diffusion.training --model aniso ...`` (the same options as
``spt-diffusion train``), ``... --bundle RUN_DIR`` or ``... --reexport NAME ...``.
Inference needs none of this: it loads the exported TorchScript files
(:mod:`napari_spt_diffusion.estimation.checkpoint`).

Only :mod:`.config` is imported here (no torch), so that the command line's parser stays light.
"""

from .config import TrainConfig, TrainingError

__all__ = ["TrainConfig", "TrainingError"]
