"""A training run's configuration: every option checked, and every automatic choice
(binning, patch, batch, learning rate, rotation, label diameters) resolved, once. The
configuration is what the checkpoint and the model file record."""
import math
from dataclasses import dataclass

import torch

from ..devices import resolve_device
from ..errors import InputError
from ..formats.table import diameter_of
from ..network import autocast_dtype
from ..options import TRAIN_OPTIONS, checked
from ..options.base import float_or_auto, int_or_auto  # noqa: F401  (picker3d.engine.training's API)
from ..picking.tomogram import default_peak_smoothing
from ..volume import LOCAL_SCALE
from .state import environment_versions

AUTO_BIN_MIN_DIAMETER = 16.0


AUTO_BIN_MIN_DIAMETER_CPU = 8.0


AUTO_BIN_MAX_DIAMETER_CPU = 12.0


AUTO_BIN4_MIN_DIAMETER_CPU = 24.0


def auto_bin(diameters, device="cpu"):
    """The binning ``--bin auto`` chooses: 2 when every class is at least
    ``AUTO_BIN_MIN_DIAMETER`` voxels across (8 or more after binning); on a CPU 4 when every
    class is at least ``AUTO_BIN4_MIN_DIAMETER_CPU`` (6 or more after binning), else 2 when
    every class is at least ``AUTO_BIN_MIN_DIAMETER_CPU`` (4 or more after binning) or the
    largest is at least ``AUTO_BIN_MAX_DIAMETER_CPU`` (6 or more after binning); else 1.

    Why: a CPU cannot train a full-resolution network long enough, and binning buys 8x fewer
    voxels per step; large particles gain from bin 4; on a GPU (hours of steps) particles
    under 16 voxels stay at full resolution. The measurements are in docs/picking.md
    (*Method*, binning).
    """
    sizes = [float(d) for d in diameters]
    if torch.device(device).type == "cpu":
        if min(sizes) >= AUTO_BIN4_MIN_DIAMETER_CPU:
            return 4
        if min(sizes) >= AUTO_BIN_MIN_DIAMETER_CPU or max(sizes) >= AUTO_BIN_MAX_DIAMETER_CPU:
            return 2
    return 2 if min(sizes) >= AUTO_BIN_MIN_DIAMETER else 1


def auto_patch(network_diameters, sparse=False):
    """(patch, batch) when ``train`` is not given them.

    Complete labels: the smallest multiple of 8 that is at least 32 and holds the largest
    particle plus 8 voxels of context, in batches of 8 (4 above 32): a small patch centred on
    a particle holds a larger share of labelled voxels, and more steps fit in a time budget
    (32³ at bin 2 is DeepETPicker's recommended minimum N = 64, DeepETPicker §A.8; measured in
    docs/picking.md, *Measured alternatives*). Sparse labels keep 48³ in batches of 4 (their benchmark
    was measured so)."""
    if sparse:
        return 48, auto_batch(48, sparse)
    largest = max(float(d) for d in network_diameters)
    patch = max(32, 8 * int(math.ceil((largest + 8) / 8.0)))
    return patch, auto_batch(patch, sparse)


def default_lr(sparse=False):
    """Peak learning rate when none is given: 3e-3 for complete labels, 1e-3 for sparse ones
    (the sparse-label paper's, the sparse-label paper §4.2: a few positives are memorised quickly and a
    gentler rate overfits them less; docs/sparse_labels.md)."""
    return 1e-3 if sparse else 3e-3


def default_rotation(sparse=False):
    """Largest augmentation rotation about z (degrees) when none is given: 20 for complete
    labels, any angle (180) for sparse ones.

    Rotating about the beam axis turns the missing wedge with the particle, so the network
    sees wedges where real data never have them; small angles keep it close. With a handful
    of annotated particles seeing each in every in-plane orientation is worth more
    (docs/sparse_labels.md, *Augmentation*)."""
    return 180.0 if sparse else 20.0


def auto_batch(patch, sparse=False, depth=None):
    """The batch ``--batch auto`` takes for a given patch, also when the patch is explicit:
    8 for patches of at most 32 voxels with complete labels, else 4 (see ``auto_patch``);
    slabs ``depth`` voxels thick hold the voxels of that many cubes in more, thinner patches."""
    cubes = 8 if patch <= 32 and not sparse else 4
    return cubes * max(1, patch // depth) if depth else cubes


# slab thickness of the slice network's training patches: its 3-D fusion block sees 5
# slices (two 3x3x3 convolutions; the sparse-label paper §4.2 trains on 64 x 64 x 5 crops), so thin slabs
# waste little and the same voxels cover three times as many particles as cubes
SLICE_PATCH_DEPTH = 16


def label_diameters(diameters, min_mask, max_mask_ratio=1.5):
    """Weak-label diameter of each class (network voxels): its own diameter, raised to at
    least ``min_mask`` and, when ``max_mask_ratio`` is not 0, to at most that multiple of its
    own diameter.

    The minimum helps classes that binning leaves a few voxels wide; the cap keeps the
    smallest class's label from growing past its neighbours' sizes
    (docs/picking.md, *Measured alternatives*).
    """
    out = {}
    for c, d in diameters.items():
        grown = max(float(d), float(min_mask))
        out[c] = min(grown, max_mask_ratio * float(d)) if max_mask_ratio else grown
    return out


# the checkpoint keys a resumed run takes its automatic choices from (patch_depth None: cubes)
RESUMED_KEYS = ("patch", "batch", "patch_depth", "network", "bin_phases", "init")


@dataclass
class TrainConfig:
    """Every option of a training run, checked and with its automatic choices resolved
    (:meth:`resolve`). Diameters are in the tomograms' voxels; ``network_diameters`` and
    ``label_diameters`` in network voxels (after binning)."""
    class_names: list
    diameters: dict
    voxel_size: float
    labels: str
    loss: str
    prior: object
    expected_particles: object
    epochs: int
    iters_per_epoch: int
    minutes: object
    bin: int
    patch: int
    batch: int
    patch_depth: object          # as given or restored (None: cubes)
    channels: tuple
    network: str
    coord_conv: object
    mask_type: str
    min_mask: float
    max_mask_ratio: float
    label_diameters: dict
    lr: float
    ema: float
    consistency: float
    contrastive: float
    rotation: float
    augment: bool
    precision: str
    amp: object                  # the autocast dtype, or None for float32
    tile: int
    pad: int
    flips: int
    holdout: float
    bin_phases: object           # resolved once the data are known (resolve_bin_phases)
    init: object
    seed: int
    device: object
    input_norm: object = None    # the network input's normalisation (volume.network_input); None: global
    polarity_skew: object = None  # set by prepare_data: the training tomograms' contrast
    resumed: bool = False
    val_labels: str = "auto"      # resolved by prepare_data: complete, sparse or none (sparse, no validation)

    @property
    def sparse(self):
        return self.labels == "sparse"

    @property
    def n_classes(self):
        return len(self.class_names)

    @property
    def network_diameters(self):
        return {c: self.diameters[c] / self.bin for c in self.class_names}

    @property
    def depth(self):
        """z side of the training patches."""
        return int(self.patch_depth) if self.patch_depth else self.patch

    @property
    def patch_shape(self):
        """What :func:`sample_batch` takes: a side, or (z, y, x) for slabs."""
        return (self.depth, self.patch, self.patch) if self.depth != self.patch else self.patch

    def architecture(self):
        return {"network": self.network, "n_classes": self.n_classes, "channels": self.channels,
                "heatmap": self.sparse, "coord_conv": self.coord_conv}

    def model_meta(self, init_info):
        """The metadata the model file records (the file format's keys, docs/model_file.md)."""
        amp = str(self.amp).replace("torch.", "") if self.amp else "float32"
        return {"classes": list(self.class_names), "diameters": dict(self.diameters),
                "voxel_size": float(self.voxel_size),
                "normalization": ("slow background removed (linear trend, then a low-pass at sigma "
                                  f"{self.input_norm['sigma']:g} network voxels), divided by the local std, "
                                  "then zero mean, unit std, clipped at +-3") if self.input_norm else
                                 ("per-tomogram zero mean, unit std (robust: fill value and 0.5 % tails "
                                  "left out), clipped at +-3"),
                "input_norm": self.input_norm, "polarity_skew": self.polarity_skew, "mask": self.mask_type, "loss": self.loss,
                "lr": self.lr, "consistency": float(self.consistency), "contrastive": float(self.contrastive),
                "rotation": float(self.rotation), "precision": amp,
                "patch": self.patch, "patch_depth": self.depth, "batch": self.batch, "network": self.network,
                "tile": self.tile, "pad": self.pad, "bin": self.bin, "flips": self.flips,
                "augment": bool(self.augment), "labels": self.labels, "prior": self.prior,
                "min_mask": float(self.min_mask), "max_mask_ratio": self.max_mask_ratio, "ema": float(self.ema),
                "bin_phases": self.bin_phases, "init": init_info, "val_labels": self.val_labels,
                "label_diameters": dict(self.label_diameters),
                "peak_smoothing": default_peak_smoothing(self.sparse), "versions": environment_versions()}

    def checkpoint_fields(self):
        """What a checkpoint records of the configuration, for a resumed run."""
        return {"patch": self.patch, "batch": self.batch, "patch_depth": self.patch_depth,
                "network": self.network, "bin_phases": self.bin_phases}

    def resolve_bin_phases(self, checkpoint, ckpt_path, log):
        """Shifted binning grids: as given, else as the interrupted run, else on (complete
        labels at binning 2 or more only)."""
        given = self.bin_phases
        if given is None:
            # checkpoints written before the flag was recorded come from runs with the default, on
            given = checkpoint.get("bin_phases", True) if checkpoint is not None else True
        self.bin_phases = bool(given) and self.bin > 1 and not self.sparse
        if checkpoint is not None and checkpoint.get("bin_phases", self.bin_phases) != self.bin_phases:
            log(f"warning: --{'' if self.bin_phases else 'no-'}bin-phases differs from the interrupted run "
                f"({ckpt_path}); the resumed run follows the command line")

    @classmethod
    def resolve(cls, class_names, diameters, volume_shapes, options, checkpoint=None, ckpt_path="", log=print):
        """Check ``options`` (a :class:`picker3d.engine.options.TrainOptions`) and resolve the
        automatic choices. ``checkpoint``: the interrupted run's, whose patches a resumed run keeps."""
        for c in class_names:
            diameter_of(diameters, c)
        o = checked(TRAIN_OPTIONS, vars(options))
        sparse = o["labels"] == "sparse"
        _label_defaults(o, sparse)
        device = torch.device(resolve_device(o["device"]))
        diam = {c: float(diameter_of(diameters, c)) for c in class_names}
        bin = o["bin"]
        if bin is None:
            bin = auto_bin(diam.values(), device)
            log(f"binning {bin} (auto: smallest diameter {min(diam.values()):g} voxels, {device.type}; --bin 1 "
                f"keeps full resolution)")
        diam_b = {c: diam[c] / bin for c in class_names}
        min_mask = o["min_mask"] if o["min_mask"] is not None else (3.0 if sparse else 9.0)
        ratio = float(o["max_mask_ratio"] or 0.0)
        if o["mask_diameter"] is not None:
            # DeepETPicker's constant-diameter weak labels (§A.3, Supp. Table 2: Const7 / Const9)
            mask_diam = {c: float(o["mask_diameter"]) for c in class_names}
        else:
            mask_diam = label_diameters(diam_b, min_mask, ratio)
        patch, batch, patch_depth, resumed = _resolve_patches(o, diam_b, sparse, checkpoint, ckpt_path)
        input_norm = {"kind": "local", "sigma": round(LOCAL_SCALE * max(diam_b.values()), 2)} \
            if o["normalisation"] == "local" else None
        # a plain array has no header: picker3d's simulator's 10 Å unless given
        voxel_size = 10.0 if o["voxel_size"] is None else float(o["voxel_size"])
        epochs = o["epochs"] or (1000 if o["minutes"] else 20)
        cfg = cls(class_names=list(class_names), diameters=diam, voxel_size=voxel_size,
                  labels=o["labels"], loss=o["loss"], prior=o["prior"], expected_particles=o["expected_particles"],
                  epochs=epochs, iters_per_epoch=o["iters_per_epoch"], minutes=o["minutes"], bin=bin,
                  patch=patch, batch=batch, patch_depth=patch_depth, channels=tuple(o["channels"]),
                  network=o["network"], coord_conv=o["coord_conv"], mask_type=o["mask_type"],
                  min_mask=float(min_mask), max_mask_ratio=ratio, label_diameters=mask_diam, lr=o["lr"],
                  ema=o["ema"], consistency=o["consistency"], contrastive=o["contrastive"],
                  rotation=o["rotation"], augment=o["augment"], precision=o["precision"],
                  amp=autocast_dtype(device, o["precision"], training=True), tile=o["tile"], pad=o["pad"],
                  flips=o["flips"], holdout=o["holdout"], bin_phases=o["bin_phases"], init=o["init"],
                  seed=o["seed"], device=device, input_norm=input_norm, resumed=resumed, val_labels=o["val_labels"])
        shape = f"{patch}³" if cfg.depth == patch else f"{cfg.depth}x{patch}x{patch} (z, y, x)"
        log(f"patches {shape} in batches of {batch}" + (" (as the interrupted run)" if resumed else ""))
        cfg._check_sizes(volume_shapes)
        return cfg

    def _check_sizes(self, volume_shapes):
        """The largest class must fit the binned tomograms, a tile and a patch."""
        diam_b = self.network_diameters
        big = max(self.class_names, key=lambda c: diam_b[c])
        d, b = self.diameters[big], self.bin
        # binned shapes without binning: bin_volume crops to a multiple of the factor
        smallest = min((tuple(n // b for n in s) for s in volume_shapes), key=min)
        if diam_b[big] >= min(smallest):
            raise InputError(f"--diameters: class {big} is {d:g} voxels ({diam_b[big]:g} at bin {b}), not "
                             f"smaller than the training tomogram ({'x'.join(map(str, smallest))} at bin {b}): "
                             f"check the diameters' unit (voxels of the tomograms)")
        if diam_b[big] > self.tile - 2 * self.pad:
            raise InputError(f"--diameters: class {big} is {d:g} voxels ({diam_b[big]:g} at bin {b}), larger "
                             f"than the {self.tile - 2 * self.pad} voxels a tile of {self.tile} keeps after its "
                             f"{self.pad}-voxel padding: raise --tile or --bin")
        if diam_b[big] > self.patch:
            raise InputError(f"--patch: {self.patch} voxels cannot hold class {big} ({diam_b[big]:g} voxels at "
                             f"bin {b}): raise --patch or --bin")


def _label_defaults(o, sparse):
    """The defaults that depend on the label kind (loss, rotation, learning rate), in place;
    the declared checks (picker3d.engine.options.train) have run."""
    o["loss"] = (o["loss"] if o["loss"] in ("pu", "pn") else "pu") if sparse else (o["loss"] or "dice+ce")
    o["rotation"] = default_rotation(sparse) if o["rotation"] is None else float(o["rotation"])
    o["lr"] = default_lr(sparse) if o["lr"] is None else float(o["lr"])


def _resolve_patches(o, diam_b, sparse, checkpoint, ckpt_path):
    """(patch, batch, patch_depth, resumed): as given, else as the interrupted run, else automatic."""
    patch, batch, patch_depth = o["patch"], o["batch"], o["patch_depth"]
    if checkpoint is not None and checkpoint.get("network", "resunet3d") != o["network"]:
        raise InputError(f"--network: the checkpoint {ckpt_path} was trained with --network "
                         f"{checkpoint.get('network', 'resunet3d')}, not {o['network']}")
    resumed = checkpoint is not None and (patch is None or batch is None)
    if resumed:
        # checkpoints written before the automatic choice do not record it: those runs used 48 x 4
        patch = checkpoint.get("patch", 48) if patch is None else patch
        batch = checkpoint.get("batch", 4) if batch is None else batch
        patch_depth = checkpoint.get("patch_depth") if patch_depth is None else patch_depth
    if patch_depth is None and o["network"] == "slice2d":
        patch_depth = SLICE_PATCH_DEPTH
    if patch is None or batch is None:
        patch = auto_patch(diam_b.values(), sparse)[0] if patch is None else patch
        batch = auto_batch(patch, sparse, patch_depth) if batch is None else batch
    return patch, batch, patch_depth, resumed
