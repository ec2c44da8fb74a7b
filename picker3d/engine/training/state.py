"""A training run's state: network, optimiser, weight average, best epoch so far and the
random streams; checkpoint save and resume; fine-tuning from a model file."""
import copy
import math
import os
import platform

import numpy as np
import torch

from ..._version import __version__ as PICKER3D_VERSION
from ..errors import InputError
from ..fileio import atomic_write
from ..modelfile import load_model, save_model
from ..network import build_network, count_parameters


def initialise_from(model, path, class_names, network_voxel_size, device, log=print):
    """Copy a model file's weights into ``model`` (the start of a fine-tuning run).

    Every layer is taken from the file; the output layer only when the file was trained
    for the same classes in the same order (other classes get a new, randomly initialised
    output layer). Returns the provenance recorded in the new model file. Raises InputError
    naming the file when its architecture differs from this run's.
    """
    source, meta = load_model(path, device=device)
    # the 3-D ResUNet's config has no "network" key; the class count may differ (new head)
    own = dict({"network": "resunet3d"}, **model.config)
    theirs = dict({"network": "resunet3d"}, **source.config)
    flags = {"network": "--network", "channels": "--channels", "coord_conv": "--coord-conv", "heatmap": "--labels"}
    for key in sorted(set(own) | set(theirs), key=lambda k: (k not in flags, k)):
        if key != "n_classes" and own.get(key) != theirs.get(key):
            flag = flags.get(key, f"network setting '{key}'")
            raise InputError(f"--init: {path} was trained with {flag} {_arch_value(key, theirs.get(key))}, this run "
                             f"uses {_arch_value(key, own.get(key))}: give the same {flag} or train from scratch")
    same_classes = list(meta.get("classes", [])) == list(class_names)
    state = source.state_dict()
    if not same_classes:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    # the architectures are equal (checked above): only a dropped output layer leaves keys unset
    model.load_state_dict(state, strict=same_classes)
    theirs_voxel = float(meta.get("voxel_size") or 0) * int(meta.get("bin", 1))
    if theirs_voxel and abs(theirs_voxel - network_voxel_size) / theirs_voxel > 0.05:
        log(f"warning: --init: {path} saw {theirs_voxel:.2f} Å per network voxel, this run "
            f"{network_voxel_size:.2f}: features tuned to other particle sizes in voxels")
    log(f"starting from {path} (classes {', '.join(meta.get('classes', []))}): "
        + ("every layer kept" if same_classes else f"new output layer for {', '.join(class_names)}"))
    return {"path": os.path.abspath(path), "classes": list(meta.get("classes", [])),
            "output_layer_kept": same_classes}


def _arch_value(key, value):
    if key == "heatmap":
        return "sparse" if value else "complete"
    if key == "channels":
        return ",".join(map(str, value))
    return {True: "xyz", False: "none"}.get(value, value)


class WeightAverage:
    """Exponential moving average of a network's weights and BatchNorm statistics.

    The decay ramps up as (1 + step) / (10 + step) until it reaches ``decay``, so early
    averages are not dominated by the random initialisation. The averaged copy is what
    validation sees and what is kept: with one annotated tomogram the last step's weights
    swing from epoch to epoch (validation F1 moved by ±0.05 between neighbouring epochs).
    """

    def __init__(self, model, decay=0.99):
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model, step):
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        live = model.state_dict()
        for name, avg in self.model.state_dict().items():
            if avg.dtype.is_floating_point:
                avg.lerp_(live[name], 1.0 - d)
            else:
                avg.copy_(live[name])

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)


def one_cycle_lr(frac, max_lr, warmup=0.2, div=25.0, final_div=1e4):
    """One-cycle learning rate at training fraction ``frac``: cosine warm-up from
    max_lr/div to max_lr over the first ``warmup`` share, then cosine decay to
    max_lr/final_div (the shape of torch's OneCycleLR, defined by fraction so that a time
    budget can drive it)."""
    frac = min(max(frac, 0.0), 1.0)
    if frac < warmup:
        lo, hi, t = max_lr / div, max_lr, frac / warmup
    else:
        lo, hi, t = max_lr, max_lr / final_div, (frac - warmup) / (1.0 - warmup)
    return hi + (lo - hi) * (1 + math.cos(math.pi * t)) / 2


def environment_versions():
    """The library versions a model file records."""
    return {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "picker3d": PICKER3D_VERSION}


def load_checkpoint(path, device):
    """The checkpoint a resumed run continues from, or None when there is none."""
    return torch.load(path, map_location=device, weights_only=False) if os.path.exists(path) else None


class TrainingState:
    """Network, optimiser, weight average, contrastive projection, step counters, history and
    the best epoch so far, for a configuration (:class:`TrainConfig`); saved as a checkpoint
    after every epoch and restored from one, so a resumed run continues to the same result."""

    def __init__(self, cfg, checkpoint=None, ckpt_path="", log=print):
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self.model = build_network(cfg.architecture()).to(cfg.device)
        self.init_info = checkpoint.get("init") if checkpoint is not None else None   # a resumed run keeps it
        if cfg.init is not None:
            if checkpoint is not None:
                log(f"--init {cfg.init}: ignored, resuming from the checkpoint {ckpt_path}")
            else:
                self.init_info = initialise_from(self.model, cfg.init, cfg.class_names, cfg.voxel_size * cfg.bin,
                                                 cfg.device, log)
        self.averaged = WeightAverage(self.model, cfg.ema) if cfg.ema else None
        # the contrastive module's projection head (the sparse-label paper Fig. 2b; a 1x1x1 convolution, i.e. a
        # linear map per voxel); not part of the picking model
        self.projection = torch.nn.Linear(cfg.channels[0], 32).to(cfg.device) if cfg.contrastive else None
        trained = list(self.model.parameters()) + (list(self.projection.parameters())
                                                   if self.projection is not None else [])
        self.opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=1e-4)
        self.step, self.train_seconds, self.start_epoch = 0, 0.0, 0
        self.history, self.best_f1, self.best_state, self.best_thr = [], -1.0, None, None
        if checkpoint is not None:
            self._restore(checkpoint, ckpt_path, log)

    def _restore(self, ck, ckpt_path, log):
        self.model.load_state_dict(ck["model"])
        if (ck.get("projection") is None) != (self.projection is None):
            raise InputError(f"--contrastive: the checkpoint {ckpt_path} was trained "
                             f"{'without' if self.projection is not None else 'with'} it: resume with the same "
                             f"setting")
        if self.projection is not None:
            self.projection.load_state_dict(ck["projection"])
        self.opt.load_state_dict(ck["opt"])
        self.step, self.train_seconds = ck["step"], ck["train_seconds"]
        self.rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        self.history, self.best_f1 = ck["history"], ck["best_f1"]
        self.best_state, self.best_thr = ck["best_state"], ck["best_thr"]
        if self.averaged is not None:
            if ck.get("ema") is not None:
                self.averaged.load_state_dict(ck["ema"])
            else:       # a checkpoint written without averaging: start the average here
                self.averaged = WeightAverage(self.model, self.cfg.ema)
        self.start_epoch = ck["epoch"] + 1
        log(f"resuming from epoch {self.start_epoch} ({ckpt_path})")

    @property
    def evaluated(self):
        """The weights validation sees and the model file keeps."""
        return self.averaged.model if self.averaged is not None else self.model

    def keep_if_best(self, f1, thresholds):
        """Keep the current weights when ``f1`` is at least the best so far (the later of
        equal epochs: further along the one-cycle annealing); ``f1`` None: no validation,
        the last epoch is kept."""
        if f1 is None:
            self.best_state, self.best_thr = copy.deepcopy(self.evaluated.state_dict()), thresholds
        elif f1 >= self.best_f1:
            self.best_f1, self.best_thr = f1, thresholds
            self.best_state = copy.deepcopy(self.evaluated.state_dict())

    def save_checkpoint(self, path, epoch, elapsed):
        with atomic_write(path, ".ckpt") as tmp:
            torch.save(dict({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                             "train_seconds": elapsed, "rng": self.rng.bit_generator.state,
                             "torch_rng": torch.get_rng_state(), "history": self.history,
                             "best_f1": self.best_f1, "best_state": self.best_state, "best_thr": self.best_thr,
                             "epoch": epoch, "ema": self.averaged.state_dict() if self.averaged is not None else None,
                             "init": self.init_info,
                             "projection": self.projection.state_dict() if self.projection is not None else None},
                            **self.cfg.checkpoint_fields()), tmp)

    def save_model(self, path, validated):
        """The model file: the best epoch's weights with the configuration and the history."""
        final = copy.deepcopy(self.model)
        final.load_state_dict(self.best_state)
        save_model(path, final, dict(self.cfg.model_meta(self.init_info), thresholds=self.best_thr,
                                     history=self.history, best_val_f1=self.best_f1 if validated else None,
                                     parameters=count_parameters(self.model)))
