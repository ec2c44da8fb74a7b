"""picker3d train: a 3D-ResUNet picker from coordinates (weak labels)."""
import dataclasses

import numpy as np

from ..errors import InputError
from ..options import REMOVED_TRAIN_FLAGS, TRAIN_OPTIONS, TrainOptions, add_options, checked
from ..options.train import GROUPS
from .common import Removed, add_copick, add_gpu, log, options_of


def add_args(sub):
    p = sub.add_parser("train", help="train a 3D-ResUNet picker from coordinates (weak labels)")
    groups = add_options(p, TRAIN_OPTIONS, GROUPS)
    g = groups["inputs"]
    g.add_argument("--tomograms", nargs="+", default=[], help="training tomograms (MRC; or --copick-config)")
    g.add_argument("--coords", nargs="+", default=[], help="one coordinate table per training tomogram")
    g.add_argument("--diameters", default=None,
                   help="name=VOX,... : the classes and their diameters in voxels (with --copick-config, default: "
                        "twice each picked object's radius)")
    g.add_argument("--val-tomograms", nargs="*", default=[],
                   help="validation tomograms: they choose the epoch and calibrate the thresholds (default: none, "
                        "the training tomograms do)")
    g.add_argument("--val-coords", nargs="*", default=[], help="one coordinate table per validation tomogram")
    g.add_argument("--format", default=None, help="coordinate file format (default: from the extension)")
    add_copick(p, val_runs=True)
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="model file to write (the last state goes to OUT.ckpt)")
    g.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    add_gpu(groups["compute"])
    for flag, instead in REMOVED_TRAIN_FLAGS.items():
        p.add_argument(flag, action=Removed, instead=instead)


def _inputs(a, diam):
    """(train volumes, tables, voxel sizes, val volumes, tables, voxel sizes, diameters)."""
    if a.copick_config:
        from ..formats.copick_project import training_runs
        if a.tomograms or a.coords or a.val_tomograms:
            raise InputError("--tomograms: give MRC tomograms and tables or --copick-config, not both")
        return training_runs(a.copick_config, a.runs, a.val_runs, diam, a.voxel_spacing, a.tomo_type, a.picks_user,
                             a.picks_session)
    from ..formats.pairs import read_pairs
    if not a.tomograms or not a.coords:
        raise InputError("--tomograms, --coords: required (or give --copick-config)")
    if not diam:
        raise InputError("--diameters: required: name=VOX,... for each class")
    return (*read_pairs(a.tomograms, a.coords, a.format, ""), *read_pairs(a.val_tomograms, a.val_coords, a.format,
                                                                          "val-"), diam)


def main(a):
    from ..devices import device_list
    from ..formats.table import parse_diameters
    from ..sampling import same_sampling, training_voxel_sizes
    from ..training import train
    values = checked(TRAIN_OPTIONS, options_of(a, TRAIN_OPTIONS))      # before reading the tomograms
    vols, tables, vs, vvols, vtables, vvs, diam = _inputs(a, parse_diameters(a.diameters))
    classes = [k for k in diam if k != "*"] or sorted({c for t in tables for c in t.class_names()})
    for t in tables + vtables:
        if t.classes is None:   # a table without class column is one class
            if len(classes) != 1:
                raise InputError("--coords: a table without class column needs exactly one class in --diameters")
            t.classes = np.asarray([classes[0]] * len(t), dtype=object)
    names = list(a.tomograms) + list(a.val_tomograms) or list(a.runs) + list(a.val_runs)
    sizes = training_voxel_sizes(names, list(vs) + list(vvs), a.voxel_size)
    vols, tables, vvols, vtables = same_sampling(names, vols + vvols, tables + vtables, sizes, len(vols), log)
    options = dataclasses.replace(TrainOptions(**values), voxel_size=sizes[0],
                                  device=device_list(a.device, a.gpu, single=True))
    train(vols, tables, classes, diam, a.out, vvols, vtables, options, resume=a.resume, log=log)
    print(f"model written to {a.out}")
    return 0
