"""Training of the picker from weak labels (DeepETPicker, DeepFinder; sparse
labels: the sparse-label paper), with validation by picking F1, threshold calibration and resume.

- :mod:`.config` — the run's options checked and its automatic choices resolved
  (:class:`TrainConfig`: binning, patch, batch, learning rate, rotation, label diameters);
- :mod:`.data` — normalised, binned and labelled tomograms, hard negatives, hold-out,
  shifted binning grids, batch sampling and augmentation;
- :mod:`.losses` — Dice / cross-entropy / focal, PU / PN, consistency and contrastive terms;
- :mod:`.state` — network, optimiser, weight average, checkpoint save and resume, fine-tuning;
- :mod:`.calibration` — the score thresholds that maximise the validation F1;
- :mod:`.loop` — :func:`train`: steps, validation, checkpoint and model file each epoch.
"""
from ..options import TrainOptions
from .config import TrainConfig, auto_bin, float_or_auto, int_or_auto
from .loop import train

__all__ = ["TrainConfig", "TrainOptions", "auto_bin", "float_or_auto", "int_or_auto", "train"]
