"""The options of ``picker3d train`` / :func:`picker3d.engine.training.train` / the train
protocol, each declared once (:class:`Option`)."""
from .base import (
    PRECISION,
    SEED,
    Option,
    at_least,
    between,
    float_or_auto,
    int_list,
    int_or_auto,
    options_class,
    positive_voxel_size,
)

NETWORKS = ("resunet3d", "slice2d")
# the network's position channels by their command-line name (picker3d.engine.network.COORD_CONV)
COORD_CONV_NAMES = {"z": "z", "xyz": True, "none": False}


def _coord_conv(value, flag):
    if isinstance(value, str):
        if value not in COORD_CONV_NAMES:
            from ..errors import InputError
            raise InputError(f"{flag}: '{value}' must be z, xyz or none")
        return COORD_CONV_NAMES[value]
    return value


def _multiple_of_8(v, _values):
    return None if v is None or v % 8 == 0 else f"{v} is not a multiple of 8"


def _loss(v, values):
    if values.get("labels") != "sparse" and v in ("pu", "pn"):
        return f"'{v}' needs --labels sparse"
    return None


def _val_labels(v, values):
    if v not in ("auto", "complete", "sparse"):
        return f"'{v}' must be auto, complete or sparse"
    if v == "sparse" and (values.get("labels") != "sparse" or values.get("loss") == "pn"):
        return "sparse validation coordinates need --labels sparse (and its class prior)"
    return None


def _labels(v, _values):
    return None if v in ("complete", "sparse") else f"'{v}' must be complete or sparse"


def _prior(v, values):
    sparse_pu = values.get("labels") == "sparse" and values.get("loss") != "pn"
    if sparse_pu and v is None and not values.get("expected_particles"):
        return "sparse labels need the class prior (--prior PI or --expected-particles N)"
    if v is not None and not 0 < v < 1:
        return f"{v:g} must be a fraction of voxels between 0 and 1"
    return None


def _contrastive(v, values):
    if v is not None and not v >= 0:
        return f"{v:g} must be a weight of 0 (off) or more"
    if v and values.get("labels") != "sparse":
        return "the contrastive module needs --labels sparse"
    return None


def _lr(v, _values):
    return None if v is None or 0 < v < 1 else f"{v:g} must be a learning rate between 0 and 1 (or auto)"


def _patch_depth(v, values):
    network = values.get("network", "resunet3d")
    if v is not None and (int(v) < 1 or (network == "resunet3d" and int(v) % 8)):
        return (f"{v} must be a positive number of slices"
                + (" and a multiple of 8 for resunet3d" if network == "resunet3d" else ""))
    return None


def _network(v, _values):
    return None if v in NETWORKS else f"'{v}' must be one of {', '.join(NETWORKS)}"


def _max_mask_ratio(v, _values):
    return None if v is None or not v or v >= 1 else f"{v:g} must be 1 or more (0 = no cap)"


def _holdout(v, _values):
    if not 0 <= v < 0.5:
        return f"{v:g} must be a fraction in [0, 0.5) (0 = calibrate on the training data)"
    return None


def _normalisation(v, _values):
    return None if v in ("local", "global") else f"'{v}' must be local or global"


INPUTS, T, N, A, S, C, R, V = ("inputs", "time budget", "network", "augmentation", "sparse labels", "compute",
                          "the tomograms as they are", "advanced (variants of the papers and label geometry)")
GROUPS = (INPUTS, T, N, A, S, C, R, V)

TRAIN_OPTIONS = (
    Option("labels", "complete", group=INPUTS, check=_labels, argparse={"choices": ("complete", "sparse")},
           help="complete (default): every particle of the training tomograms is annotated; sparse: only some "
                "are (positive-unlabeled training on centre heatmaps)"),
    Option("val_labels", "auto", group=INPUTS, check=_val_labels, argparse={"choices": ("auto", "complete", "sparse")},
           help="how the validation tomograms are annotated: complete (every particle; the epoch and thresholds "
                "maximise F1) or sparse (a few per species; each class keeps as many picks as its prior "
                "expects, and the epoch kept finds most annotated particles among them); auto (default): "
                "sparse with --labels sparse when the validation coordinates hold fewer than half the particles "
                "the prior expects, else complete"),
    Option("mask_type", "tball", group=INPUTS, flag="--mask",
           argparse={"choices": ("tball", "ball", "cubic", "sphere")}, help="weak-label shape (default tball)"),
    Option("init", None, group=INPUTS, argparse={"metavar": "MODEL"},
           help="start from this picker3d model's weights instead of random ones (fine-tuning; same --network, "
                "--channels, --coord-conv and --labels; the output layer is kept when the classes are the same; "
                "default: random weights)"),
    Option("epochs", None, group=T, check=at_least(1), exclusive="time", argparse={"type": int},
           help="number of epochs (default 20; with --minutes as many as fit)"),
    Option("minutes", None, group=T, check=at_least(0, strict=True), exclusive="time", argparse={"type": float},
           help="wall-clock budget in minutes instead of epochs (default: none)"),
    Option("iters_per_epoch", 40, group=T, check=at_least(1), argparse={"type": int},
           help="training steps between two validations (default 40)"),
    Option("channels", (8, 16, 24, 36), group=N, convert=int_list, argparse={"default": "8,16,24,36"},
           help="channel widths per U-Net level (default 8,16,24,36)"),
    Option("bin", "auto", group=N, convert=int_or_auto,
           help="train and pick on tomograms binned by this factor; auto (default): chosen from the smallest and "
                "largest diameters and the device (picker3d.engine.training.config.auto_bin); the model stores "
                "it, coordinates stay in the original voxels"),
    Option("patch", "auto", group=N, convert=int_or_auto, check=_multiple_of_8,
           help="training patch side in network voxels, a multiple of 8 (default auto: the smallest of at least 32 "
                "that holds the largest particle plus 8 voxels; 48 with sparse labels)"),
    Option("batch", "auto", group=N, convert=int_or_auto,
           help="patches per step (default auto: 8 for patches of at most 32 voxels, else 4; 4 with sparse "
                "labels)"),
    Option("loss", None, group=N, check=_loss, argparse={"choices": ("dice", "ce", "focal", "dice+ce", "pu", "pn")},
           help="complete labels: dice, ce, focal or dice+ce (default); sparse labels: pu (default, "
                "positive-unlabeled) or pn (unlabeled taken as negative, a baseline)"),
    Option("lr", "auto", group=N, convert=float_or_auto, check=_lr,
           help="peak learning rate of the one-cycle schedule (default auto: 3e-3 with complete labels, 1e-3 with "
                "sparse labels)"),
    Option("ema", 0.99, group=N, check=between(0, 1, "a decay in", high_open=True),
           argparse={"type": float, "metavar": "DECAY"},
           help="validate and keep an exponential moving average of the weights with this decay per step (default "
                "0.99; 0 = the last step's weights)"),
    Option("flips", 1, group=N, argparse={"type": int, "choices": (1, 2, 4, 8)},
           help="test-time mirrored copies averaged in validation and, by default, picking (default 1)"),
    Option("tile", 128, group=N, check=_multiple_of_8, argparse={"type": int},
           help="largest inference tile side, a multiple of 8 (default 128)"),
    Option("pad", 12, group=N, check=at_least(0), argparse={"type": int},
           help="overlap-tile padding: neighbouring tiles overlap by at least twice this (default 12)"),
    Option("rotation", None, group=A, check=between(0, 180, "an angle in degrees in"),
           argparse={"type": float, "metavar": "DEG"},
           help="largest rotation about the beam axis (z) of the training patches, 0-180 (default: 20 for "
                "complete labels, which keeps the missing wedge near where the data have it; 180 for sparse "
                "labels)"),
    Option("prior", None, group=S, check=_prior, argparse={"type": float},
           help="class prior = fraction of the tomogram's voxels inside particles (all of them, annotated or "
                "not); or give --expected-particles (default: none; sparse labels need one of the two)"),
    Option("expected_particles", None, group=S, check=at_least(0, strict=True),
           argparse={"type": float, "metavar": "N"},
           help="rough number of particles per training tomogram (all classes); sets the prior from the "
                "diameters (default: none)"),
    Option("contrastive", 0.0, group=S, check=_contrastive, argparse={"type": float, "metavar": "WEIGHT"},
           help="weight of the sparse-label method's voxel-level debiased contrastive module (Eq. 8-13; 0.1 "
                "there; default 0 = off; doubles the cost of a step)"),
    Option("device", "auto", group=C, help="auto (default: cuda when available), cpu, cuda or cuda:N"),
    PRECISION,
    SEED,
    Option("voxel_size", None, group=R, check=positive_voxel_size, argparse={"type": float, "metavar": "A"},
           help="the tomograms' voxel size in Å (default: each MRC header's); tomograms more than 2 %% apart are "
                "resampled to the first one's"),
    Option("invert", False, group=R, argparse={"action": "store_true"},
           help="flip the contrast of the training and validation tomograms (default: as they are; the model "
                "records the contrast it learned and picking checks tomograms against it)"),
    Option("normalisation", "local", group=R, check=_normalisation, argparse={"choices": ("local", "global")},
           help="the network's input: local (default): slow background (ice thickness, carbon) removed at the "
                "largest diameter and divided by the local std; global: one mean and std per tomogram, as "
                "picker3d 0.1 models"),
    Option("network", "resunet3d", group=V, check=_network, argparse={"choices": NETWORKS},
           help="resunet3d (default): 3-D residual U-Net; slice2d: the same U-Net in 2-D layers on every "
                "z-slice, fused by 3-D layers (the sparse-label method's backbone)"),
    Option("patch_depth", None, group=V, check=_patch_depth, argparse={"type": int},
           help="z thickness of the training patches (default: the patch side for resunet3d, 16 slices for "
                "slice2d)"),
    Option("coord_conv", "z", group=V, convert=_coord_conv, argparse={"choices": tuple(COORD_CONV_NAMES)},
           help="position channels of the network: z = depth in the tomogram (default), xyz = DeepETPicker's "
                "three, none"),
    Option("consistency", 0.0, group=V, check=at_least(0, " (0 = off)"), argparse={"type": float, "metavar": "WEIGHT"},
           help="weight of the sparse-label method's consistency term between a batch and a mirrored, re-noised "
                "view (Eq. 14; 0.1 there; default 0 = off; doubles the cost of a step)"),
    Option("mask_diameter", None, group=V, check=at_least(1, " voxel"), argparse={"type": float, "metavar": "VOX"},
           help="one weak-label diameter for every class in network voxels, as DeepETPicker's constant masks "
                "(Const7/Const9; default: each class's own diameter)"),
    Option("min_mask", None, group=V, argparse={"type": float, "metavar": "VOX"},
           help="smallest weak-label diameter in network voxels (default 9 for complete labels, 3 for sparse "
                "labels)"),
    Option("max_mask_ratio", 1.5, group=V, check=_max_mask_ratio, argparse={"type": float, "metavar": "RATIO"},
           help="no weak label wider than RATIO x its class's own diameter (default 1.5; 0 = no cap)"),
    # for benchmarks and tests only (the command line retired them: REMOVED_TRAIN_FLAGS)
    Option("augment", True, cli=False, help="False: mirrors only"),
    Option("holdout", 0.0, cli=False, check=_holdout,
           help="without validation tomograms, this fraction of each training tomogram calibrates"),
    Option("bin_phases", None, cli=False,
           help="False: the unshifted binning grid only; None: on, or as the interrupted run"),
)

TrainOptions = options_class(
    "TrainOptions", TRAIN_OPTIONS,
    "The options of a training run as given (``TrainOptions(minutes=10, labels='sparse', ...)``); "
    ":meth:`TrainConfig.resolve` checks them and makes the automatic choices.")

# Flags the command line retired: variants measured worse that none of the papers describes
REMOVED_TRAIN_FLAGS = {
    "--no-augment": "augmentation is always on (benchmarks: TrainOptions(augment=False))",
    "--bin-phases": "the shifted binning grids are always trained on with complete labels at binning 2 or more",
    "--no-bin-phases": "the shifted binning grids are always trained on (benchmarks: TrainOptions(bin_phases=False))",
    "--holdout": "give validation tomograms (--val-tomograms, --val-coords), or none: the training tomograms "
                 "then calibrate (benchmarks: TrainOptions(holdout=F))",
}
