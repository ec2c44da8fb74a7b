"""The ``picker3d`` command line: a public contract (add flags, never rename them).

Sub-commands: simulate, masks, evaluate, train, pick, classify. Bad input ends in one line ``picker3d: error: ...`` naming the culprit and
exit status 2; no traceback is shown (set PICKER3D_DEBUG=1 to see it).
"""
import argparse
import json
import os
import sys
import time

from .errors import InputError
from .formats.writers import OUTPUT_FORMATS


def _add_simulate(sub):
    p = sub.add_parser("simulate", help="generate synthetic tomograms (or sub-tomograms) with ground truth")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (tomogram i uses seed+i)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=[96, 256, 256])
    p.add_argument("--snr", type=float, default=0.05, help="per-projection SNR (inf = noise free)")
    p.add_argument("--species", nargs="+", default=None,
                   help="species to include (default: large barrel shell rod tiny)")
    p.add_argument("--tilt-range", type=float, default=60.0, help="max tilt angle, degrees (±)")
    p.add_argument("--tilt-step", type=float, default=3.0, help="tilt increment, degrees")
    p.add_argument("--voxel-size", type=float, default=10.0, help="voxel size in Å")
    p.add_argument("--n-tomograms", type=int, default=1, help="number of tomograms")
    p.add_argument("--crowders", type=int, default=None, help="unlabelled crowder particles (default scales with volume)")
    p.add_argument("--no-distractors", action="store_true", help="no membranes, vesicles, gold or crowders")
    p.add_argument("--subtomograms", type=int, default=0, metavar="N",
                   help="sub-tomogram mode: N labelled boxes per species instead of tomograms")
    p.add_argument("--box", type=int, default=32, help="sub-tomogram box size (voxels)")
    g = p.add_argument_group("what real tomograms bring (added to each reconstructed tomogram)")
    g.add_argument("--gradient", type=float, default=0.0, metavar="SIGMA",
                   help="thickness gradient: the mean ramps by +-SIGMA standard deviations across x (default 0)")
    g.add_argument("--carbon-edge", type=float, default=0.0, metavar="FRACTION",
                   help="a band of dense carbon over this fraction of y (default 0: none)")
    g.add_argument("--ice-blobs", type=int, default=0, metavar="N", help="N ice contamination blobs (default 0)")
    g.add_argument("--empty-ice", type=int, default=0, metavar="PLANES",
                   help="planes of empty ice added above and below the specimen (default 0)")
    g.add_argument("--invert", action="store_true", help="flip the contrast: particles bright (default: dark)")


def _add_masks(sub):
    p = sub.add_parser("masks", help="weak-label masks from particle centres")
    p.add_argument("--tomogram", required=True, help="tomogram MRC (gives shape and voxel size)")
    p.add_argument("--coords", required=True, help="coordinate table")
    p.add_argument("--diameters", required=True, help="name=VOX,... or one number for all classes")
    p.add_argument("--type", default="tball", choices=("tball", "ball", "cubic", "sphere", "gaussian"))
    p.add_argument("--out", required=True, help="output mask MRC")
    p.add_argument("--format", default=None, help="coordinate file format (default: from the extension)")


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="compare picks with reference coordinates (prints JSON)")
    p.add_argument("--pred", required=True, nargs="+",
                   help="predicted coordinate table(s); several: one per tomogram, in the order of --ref; with "
                        "--copick-config: the picks' USER[:SESSION]")
    p.add_argument("--ref", required=True, nargs="+",
                   help="reference coordinate table(s); with several pairs the JSON holds each tomogram's "
                        "figures (per_tomogram, by file stem) and the pooled ones (overall)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--radius-frac", type=float, default=0.5, help="match radius as a fraction of the diameter")
    g.add_argument("--radius", type=float, default=None, help="match radius in voxels")
    p.add_argument("--diameters", default=None, help="name=VOX,... (needed with --radius-frac)")
    p.add_argument("--occupancy", default=None, help="occupancy MRC for the SHREC hit test")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--metric", default="picking", choices=("picking", "challenge"),
                   help="picking (default): precision, recall, F1, AP per class and pooled; challenge: the CZII "
                        "challenge's score, F-beta (beta 4) per object from counts pooled over tomograms, a pick "
                        "found within half the particle radius, objects weighted (copick: metadata weight, else 1)")
    _add_copick(p, picks_in=False)


def _add_copick(p, picks_in=True, picks_out=False, val_runs=False):
    """Options that read tomograms (and picks) from a copick project instead of MRC files and
    tables (picker3d.engine.formats.copick_project)."""
    g = p.add_argument_group("copick project (instead of MRC files and tables)")
    g.add_argument("--copick-config", default=None, metavar="JSON",
                   help="copick configuration file: the runs' tomograms (and picks) are read from the project "
                        "(needs the copick library: pip install 'scipion-em-picker3d[engine,copick]')")
    g.add_argument("--runs", nargs="+", default=[], help="runs to read (default: every run of the project)")
    if val_runs:
        g.add_argument("--val-runs", nargs="*", default=[],
                       help="validation runs, annotated like the training runs (default: none)")
    g.add_argument("--voxel-spacing", type=float, default=10.0, help="voxel spacing of the tomograms in Å (default 10)")
    g.add_argument("--tomo-type", default="wbp", help="reconstruction type of the tomograms (default wbp)")
    if picks_in:
        g.add_argument("--picks-user", default=None, help="read the picks of this user (default: any)")
        g.add_argument("--picks-session", default=None, help="read the picks of this session (default: any)")
    if picks_out:
        g.add_argument("--out-user", default="picker3d",
                       help="write the picks back into the project as this user (default picker3d)")
        g.add_argument("--out-session", default="0", help="... and this session (default 0)")


class _Removed(argparse.Action):
    """A retired flag: one error line saying so and what to use instead."""

    def __init__(self, option_strings, dest, instead="", **kw):
        kw.pop("nargs", None)
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS, **kw)
        self.instead = instead

    def __call__(self, parser, namespace, values, option_string=None):
        raise InputError(f"{option_string}: removed in picker3d 0.2; {self.instead}")


# Flags retired by issue 29: variants measured worse that no seed paper describes. The
# engine keeps them as keyword arguments of train() for the benchmarks.
REMOVED_TRAIN_FLAGS = {
    "--no-augment": "augmentation is always on (benchmarks: train(augment=False))",
    "--bin-phases": "the shifted binning grids are always trained on with complete labels at binning 2 or more",
    "--no-bin-phases": "the shifted binning grids are always trained on (benchmarks: train(bin_phases=False))",
    "--holdout": "give validation tomograms (--val-tomograms, --val-coords), or none: the training tomograms "
                 "then calibrate (benchmarks: train(holdout=F))",
}


def _add_train(sub):
    p = sub.add_parser("train", help="train a 3D-ResUNet picker from coordinates (weak labels)")
    _train_inputs(p.add_argument_group("inputs"))
    _add_copick(p, val_runs=True)
    _train_time(p.add_argument_group("time budget"))
    _train_network(p.add_argument_group("network"))
    g = p.add_argument_group("augmentation")
    g.add_argument("--rotation", type=float, default=None, metavar="DEG",
                   help="largest rotation about the beam axis (z) of the training patches, 0-180 (default: 20 "
                        "for complete labels, which keeps the missing wedge near where the data have it; 180 for "
                        "sparse labels)")
    _train_sparse(p.add_argument_group("sparse labels"))
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="model file to write (the last state goes to OUT.ckpt)")
    g.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda or cuda:N")
    _add_gpu(g)
    _add_precision(g)
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g = p.add_argument_group("the tomograms as they are")
    g.add_argument("--voxel-size", type=float, default=None, metavar="A",
                   help="the tomograms' voxel size in Å (default: each MRC header's); tomograms more than 2 %% "
                        "apart are resampled to the first one's")
    g.add_argument("--invert", action="store_true",
                   help="flip the contrast of the training and validation tomograms (default: as they are; "
                        "the model records the contrast it learned and picking checks tomograms against it)")
    g.add_argument("--normalisation", default="local", choices=("local", "global"),
                   help="the network's input: local (default): slow background (ice thickness, carbon) removed "
                        "at the largest diameter and divided by the local std; global: one mean and std "
                        "per tomogram, as picker3d 0.1 models")
    _train_advanced(p.add_argument_group("advanced (seed-paper variants and label geometry)"))
    for flag, instead in REMOVED_TRAIN_FLAGS.items():
        p.add_argument(flag, action=_Removed, instead=instead)


def _train_inputs(g):
    g.add_argument("--tomograms", nargs="+", default=[], help="training tomograms (MRC; or --copick-config)")
    g.add_argument("--coords", nargs="+", default=[], help="one coordinate table per training tomogram")
    g.add_argument("--diameters", default=None,
                   help="name=VOX,... : the classes and their diameters in voxels (with --copick-config, default: "
                        "twice each picked object's radius)")
    g.add_argument("--val-tomograms", nargs="*", default=[],
                   help="validation tomograms: they choose the epoch and calibrate the thresholds (default: "
                        "none, the training tomograms do)")
    g.add_argument("--val-coords", nargs="*", default=[], help="one coordinate table per validation tomogram")
    g.add_argument("--labels", default="complete", choices=("complete", "sparse"),
                   help="complete (default): every particle of the training tomograms is annotated; sparse: "
                        "only some are (positive-unlabeled training on centre heatmaps)")
    g.add_argument("--mask", default="tball", choices=("tball", "ball", "cubic", "sphere"),
                   help="weak-label shape (default tball)")
    g.add_argument("--format", default=None, help="coordinate file format (default: from the extension)")
    g.add_argument("--init", default=None, metavar="MODEL",
                   help="start from this picker3d model's weights instead of random ones (fine-tuning; same "
                        "--network, --channels, --coord-conv and --labels; the output layer is kept when the "
                        "classes are the same; default: random weights)")


def _train_time(g):
    e = g.add_mutually_exclusive_group()
    e.add_argument("--epochs", type=int, default=None, help="number of epochs (default 20)")
    e.add_argument("--minutes", type=float, default=None, help="wall-clock budget in minutes instead of epochs")
    g.add_argument("--iters-per-epoch", type=int, default=40,
                   help="training steps between two validations (default 40)")


def _train_network(g):
    g.add_argument("--channels", default="8,16,24,36", help="channel widths per U-Net level (default 8,16,24,36)")
    g.add_argument("--bin", default="auto",
                   help="train and pick on tomograms binned by this factor; auto (default): chosen from the "
                        "smallest and largest diameters and the device (picker3d.engine.training.config.auto_bin); "
                        "the model stores it, coordinates stay in the original voxels")
    g.add_argument("--patch", default="auto",
                   help="training patch side in network voxels, a multiple of 8 (default auto: the smallest of at "
                        "least 32 that holds the largest particle plus 8 voxels; 48 with sparse labels)")
    g.add_argument("--batch", default="auto",
                   help="patches per step (default auto: 8 for patches of at most 32 voxels, else 4; 4 with "
                        "sparse labels)")
    g.add_argument("--loss", default=None, choices=("dice", "ce", "focal", "dice+ce", "pu", "pn"),
                   help="complete labels: dice, ce, focal or dice+ce (default); sparse labels: pu (default, "
                        "positive-unlabeled) or pn (unlabeled taken as negative, a baseline)")
    g.add_argument("--lr", default="auto",
                   help="peak learning rate of the one-cycle schedule (default auto: 3e-3 with complete labels, "
                        "1e-3 with sparse labels)")
    g.add_argument("--ema", type=float, default=0.99, metavar="DECAY",
                   help="validate and keep an exponential moving average of the weights with this decay per "
                        "step (default 0.99; 0 = the last step's weights)")
    g.add_argument("--flips", type=int, default=1, choices=(1, 2, 4, 8),
                   help="test-time mirrored copies averaged in validation and, by default, picking (default 1)")
    g.add_argument("--tile", type=int, default=128,
                   help="largest inference tile side, a multiple of 8 (default 128)")
    g.add_argument("--pad", type=int, default=12,
                   help="overlap-tile padding: neighbouring tiles overlap by at least twice this (default 12)")


def _train_sparse(g):
    g.add_argument("--prior", type=float, default=None,
                   help="class prior = fraction of the tomogram's voxels inside particles (all of them, "
                        "annotated or not); or give --expected-particles")
    g.add_argument("--expected-particles", type=float, default=None, metavar="N",
                   help="rough number of particles per training tomogram (all classes); sets the prior from "
                        "the diameters")
    g.add_argument("--contrastive", type=float, default=0.0, metavar="WEIGHT",
                   help="weight of seed 002's voxel-level debiased contrastive module (Eq. 8-13; 0.1 there; "
                        "default 0 = off; doubles the cost of a step)")


def _train_advanced(g):
    g.add_argument("--network", default="resunet3d", choices=("resunet3d", "slice2d"),
                   help="resunet3d (default): 3-D residual U-Net; slice2d: the same U-Net in 2-D layers on "
                        "every z-slice, fused by 3-D layers (seed 002's backbone)")
    g.add_argument("--patch-depth", type=int, default=None,
                   help="z thickness of the training patches (default: the patch side for resunet3d, 16 "
                        "slices for slice2d)")
    g.add_argument("--coord-conv", default="z", choices=("z", "xyz", "none"),
                   help="position channels of the network: z = depth in the tomogram (default), xyz = "
                        "DeepETPicker's three, none")
    g.add_argument("--consistency", type=float, default=0.0, metavar="WEIGHT",
                   help="weight of seed 002's consistency term between a batch and a mirrored, re-noised view "
                        "(Eq. 14; 0.1 there; default 0 = off; doubles the cost of a step)")
    g.add_argument("--mask-diameter", type=float, default=None, metavar="VOX",
                   help="one weak-label diameter for every class in network voxels, as DeepETPicker's constant "
                        "masks (Const7/Const9; default: each class's own diameter)")
    g.add_argument("--min-mask", type=float, default=None, metavar="VOX",
                   help="smallest weak-label diameter in network voxels (default 9 for complete labels, 3 for "
                        "sparse labels)")
    g.add_argument("--max-mask-ratio", type=float, default=None, metavar="RATIO",
                   help="no weak label wider than RATIO x its class's own diameter (default 1.5; 0 = no cap)")


def _add_precision(p):
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="arithmetic of the network: auto (default) = bfloat16 on CPUs that compute it "
                        "natively (AVX512-BF16, AMX) and float16 for CUDA inference, float32 elsewhere")


def _add_pick(sub):
    p = sub.add_parser("pick", help="pick particles with a trained model")
    g = p.add_argument_group("inputs")
    g.add_argument("--model", required=True, help="model file from 'picker3d train'")
    g.add_argument("--tomograms", nargs="+", default=[], help="tomograms to pick (MRC; or --copick-config)")
    g = p.add_argument_group("output")
    g.add_argument("--out-dir", required=True, help="writes OUT_DIR/<stem>.tsv (x y z class score)")
    g.add_argument("--format", default="tsv", choices=tuple(OUTPUT_FORMATS),
                   help="also write the picks as: relion5 (OUT_DIR/<stem>.star, rlnTomoName and "
                        "rlnCenteredCoordinateX/Y/ZAngst), relion (RELION 3/4 rlnCoordinateX/Y/Z in pixels), dynamo "
                        "(OUT_DIR/<stem>.tbl), copick (OUT_DIR/<stem>_<class>.json, Å); default tsv: the table only")
    g.add_argument("--score-map", action="store_true", help="also write OUT_DIR/<stem>_score.mrc")
    g.add_argument("--classes", default=None,
                   help="comma-separated classes to keep (default: all the model's classes)")
    g = p.add_argument_group("picking")
    g.add_argument("--threshold", type=float, default=None,
                   help="score threshold for all classes (default: the model's calibrated thresholds)")
    g.add_argument("--mode", default="peaks", choices=("peaks", "cc"),
                   help="peaks (default): local maxima at each class's scale; cc: connected components")
    g.add_argument("--flips", type=int, default=None, choices=(1, 2, 4, 8),
                   help="test-time mirrored copies to average (default: the model's)")
    g.add_argument("--border", type=float, default=0.0,
                   help="drop particles whose centre is closer than this (voxels) to the volume's faces "
                        "(default 0)")
    g.add_argument("--tile", type=int, default=None, help="tile side (default: the model's)")
    g = p.add_argument_group("the tomograms as they are")
    g.add_argument("--voxel-size", type=float, default=None, metavar="A",
                   help="the tomograms' voxel size in Å (default: the MRC header's; a header with none, 0 or 1 "
                        "Å, is taken as the model's). A tomogram more than 2 %% off the model's voxel size is "
                        "resampled to it and the picks mapped back to its voxels")
    g.add_argument("--invert", action="store_true",
                   help="flip the contrast (for tomograms whose dense material is the opposite of the training "
                        "tomograms'; default: as they are)")
    g.add_argument("--no-polarity-check", dest="polarity_check", action="store_false",
                   help="pick even when the contrast looks inverted relative to the model (default: stop with a "
                        "line naming --invert)")
    g.add_argument("--z-range", default="auto", metavar="Z0-Z1",
                   help="keep picks in these z planes (voxels, Z1 exclusive); auto (default): the specimen slab "
                        "found from the band-passed density per plane (empty ice above and below left out); all: "
                        "every plane")
    g.add_argument("--mask", nargs="+", default=None, metavar="MRC",
                   help="one mask per tomogram (MRC of the tomogram's shape): picks only where it is non-zero "
                        "(default: none)")
    g.add_argument("--pad", type=int, default=None,
                   help="tile overlap padding: neighbouring tiles overlap by at least twice this (default: the "
                        "model's)")
    _add_copick(p, picks_in=False, picks_out=True)
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="auto",
                   help="auto (default), cpu, cuda or cuda:N; a comma-separated list (cuda:0,cuda:1) picks the "
                        "tomograms on several devices at once, one model per device")
    _add_gpu(g)
    _add_precision(g)


def _add_classify(sub):
    p = sub.add_parser("classify", help="sort picked sub-volumes into homogeneous classes (DISCA)")
    g = p.add_argument_group("inputs")
    g.add_argument("--tomograms", nargs="+", default=[], help="tomograms (MRC) the coordinates refer to")
    g.add_argument("--coords", nargs="+", default=[], help="one coordinate table per tomogram")
    g.add_argument("--subtomograms", default=None,
                   help="instead of tomograms + coordinates: a stack of boxes (MRC, n x box x box x box, "
                        "e.g. from 'picker3d simulate --subtomograms') with its table next to it (.tsv)")
    g.add_argument("--box", type=int, default=32,
                   help="sub-volume side in voxels, about 1.3 x the largest diameter (default 32)")
    g.add_argument("--out-of-volume", default="pad", choices=("pad", "skip"),
                   help="boxes reaching outside the tomogram: pad by mirroring the tomogram at its edge (default), "
                        "or leave them out")
    g.add_argument("--format", default=None, help="coordinate file format (default: from the extension)")
    _add_copick(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="output table: the input columns plus cluster and posterior")
    g.add_argument("--averages", default=None, help="folder for class averages (default: OUT stem + _averages)")
    g.add_argument("--boxes-dir", default=None,
                   help="also write every extracted sub-volume (full resolution, in the tomogram's normalised "
                        "units) as DIR/particle_NNNNNN.mrc, and DIR/particles.star: the boxes with their class "
                        "and alignment for RELION (3.1 sub-tomogram format, the missing wedge as DIR/wedge.mrc; "
                        "even boxes only); the table gets a box_file column")
    g = p.add_argument_group("clustering")
    g.add_argument("--k-range", default="2-20", help="candidate numbers of classes, MIN-MAX (default 2-20)")
    g.add_argument("--iterations", type=int, default=10, help="maximum DISCA iterations (default 10)")
    g.add_argument("--epochs", type=int, default=1, help="network training passes per iteration (default 1)")
    g.add_argument("--bin", type=int, default=2,
                   help="bin the boxes by this factor before clustering (default 2; 1 keeps full detail)")
    g = p.add_argument_group("class averages")
    g.add_argument("--align", action=argparse.BooleanOptionalAction, default=True,
                   help="align each class's members to one another (reference-free, missing wedge masked) "
                        "before averaging; adds rot tilt psi shift_x shift_y shift_z to the table and the "
                        "FSC of two half averages (default on; --no-align: plain averages)")
    g.add_argument("--tilt-range", type=float, default=60.0,
                   help="the tomograms' tilt range in degrees (+-), for the missing-wedge mask (default 60)")
    g.add_argument("--align-step", type=float, default=30.0,
                   help="angular step of the global rotation search in degrees (default 30; a local search "
                        "at a third of it follows)")
    g = p.add_argument_group("compute")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    _add_gpu(g)
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g = p.add_argument_group("advanced")
    g.add_argument("--pca-dim", type=int, default=8, help="PCA components the mixture sees (default 8)")
    g.add_argument("--network-from", type=int, default=1000,
                   help="train the DISCA network (YOPO) only from this many picks; fewer are clustered on "
                        "their radial density profiles alone (default 1000)")
    g.add_argument("--contrast-weight", type=float, default=3.0,
                   help="weight of each box's contrast (log std, and density at the centre against the rim, "
                        "in the tomogram's units) next to the shape features (default 3; 0: shape only)")
    g.add_argument("--split-separation", type=float, default=3.0,
                   help="after clustering, split a class in two where its boxes' centre density is bimodal "
                        "with two Gaussians separated by Ashman's D of at least this (default 3; 0: no split)")


def _add_convert(sub):
    p = sub.add_parser("convert", help="write a coordinate table in another program's format")
    p.add_argument("--in", dest="input", required=True, help="coordinate file (any format picker3d reads)")
    p.add_argument("--format", default=None, help="its format (default: from the extension)")
    p.add_argument("--out", required=True, help="file to write (copick: one OUT-stem_<class>.json per class)")
    p.add_argument("--to", required=True, choices=tuple(OUTPUT_FORMATS), help="format to write")
    p.add_argument("--tomogram", default=None,
                   help="the tomogram (MRC) the coordinates refer to: its shape and voxel size (needed for "
                        "relion5 and copick, both in Å, and to read RELION 5 or copick input)")
    p.add_argument("--voxel-size", type=float, default=None,
                   help="voxel size in Å when the tomogram's header has none (default: the header's)")
    p.add_argument("--tomo-name", default=None, help="rlnTomoName / copick run (default: the tomogram's file stem)")


def _add_copick_commands(sub):
    p = sub.add_parser("copick-read", help="a copick project's tomograms (MRC) and picks (tables) as files")
    _add_copick(p)
    p.add_argument("--out-dir", required=True,
                   help="writes OUT_DIR/<run>.mrc, OUT_DIR/<run>.tsv (the picks, in voxels) and copick_runs.json")
    p = sub.add_parser("copick-write", help="coordinate tables into a copick project, as a user / session's picks")
    p.add_argument("--copick-config", required=True, metavar="JSON", help="copick configuration file")
    p.add_argument("--coords", nargs="+", required=True,
                   help="one coordinate table per run (voxels of --voxel-spacing; run = the file stem unless --runs)")
    p.add_argument("--runs", nargs="+", default=[], help="the run of each table (default: the tables' file stems)")
    p.add_argument("--format", default=None, help="coordinate file format (default: from the extension)")
    p.add_argument("--voxel-spacing", type=float, default=10.0, help="voxel size of the coordinates in Å (default 10)")
    p.add_argument("--out-user", default="picker3d", help="copick user of the picks (default picker3d)")
    p.add_argument("--out-session", default="0", help="copick session of the picks (default 0)")
    p.add_argument("--diameters", default=None,
                   help="name=VOX,...: radius of the objects the configuration lacks (added; default: none given)")


def _add_model_info(sub):
    p = sub.add_parser("model-info", help="print what a model file was trained for (JSON); --write stores it beside the file")
    p.add_argument("--model", required=True, help="model file from 'picker3d train'")
    p.add_argument("--write", action="store_true",
                   help="(re)write MODEL.json, the metadata the Scipion layer reads without torch "
                        "(model files from picker3d 0.1 before it have none)")


def _k_range(text):
    try:
        lo, _, hi = text.partition("-")
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        raise InputError(f"--k-range: '{text}' is not MIN-MAX (e.g. 2-20)") from None
    if lo < 1 or hi < lo:
        raise InputError(f"--k-range: '{text}' needs 1 <= MIN <= MAX")
    return range(lo, hi + 1)


def resolve_device(name):
    import torch
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device: {name} requested but no CUDA device is available")
    return name


def _add_gpu(p):
    p.add_argument("--gpu", nargs="+", default=None, metavar="ID",
                   help="GPU ids to use (space-separated, as Scipion's %%(GPU)s gives them): with --device "
                        "auto or cuda, the same as --device cuda:ID[,cuda:ID2]; with --device auto and no CUDA, "
                        "the CPU (default: none, --device decides)")


def device_list(a, single=False):
    """The devices ``--device`` and ``--gpu`` name, resolved ("auto" -> cuda or cpu). With
    ``single``, the first one (training and classification run one network)."""
    device = (a.device or "auto").strip()
    # an unfilled Scipion placeholder (a step given no GPU share) means no GPU was assigned
    gpus = [g for arg in (a.gpu or []) if arg != "%(GPU)s" for g in arg.replace(",", " ").split()]
    if gpus and device in ("auto", "cuda"):
        import torch
        if device == "auto" and not torch.cuda.is_available():
            devices = ["cpu"]
        else:
            bad = [g for g in gpus if not g.isdigit()]
            if bad:
                raise InputError(f"--gpu: {' '.join(bad)} is not a GPU id (0, 1, ...)")
            devices = [resolve_device(f"cuda:{g}") for g in gpus]
    else:
        devices = [resolve_device(d.strip()) for d in device.split(",") if d.strip()] or [resolve_device("auto")]
    return devices[0] if single else devices


def build_parser():
    from .._version import __version__
    parser = argparse.ArgumentParser(prog="picker3d", description="Deep-learning particle picking in cryo-ET.")
    parser.add_argument("--version", action="version", version=f"picker3d {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_masks(sub)
    _add_evaluate(sub)
    _add_train(sub)
    _add_pick(sub)
    _add_classify(sub)
    _add_convert(sub)
    _add_copick_commands(sub)
    _add_model_info(sub)
    return parser


def cmd_simulate(a):
    from .simulation.dataset import simulate_subtomograms, write_simulation
    from .formats.mrc import write_volume
    from .formats.table import CoordTable
    from .formats.writers import write_table
    import numpy as np
    t0 = time.time()
    if a.subtomograms:
        stack, rows = simulate_subtomograms(a.subtomograms, a.box, a.seed, a.snr, a.species, a.voxel_size,
                                            a.tilt_range, a.tilt_step)
        os.makedirs(a.out, exist_ok=True)
        write_volume(os.path.join(a.out, "subtomograms.mrc"), stack, a.voxel_size)
        table = CoordTable(np.zeros((len(rows), 3)) + (a.box - 1) / 2, [r["class"] for r in rows],
                           extra={k: [r[k] for r in rows] for k in ("rot", "tilt", "psi", "dx", "dy", "dz")})
        write_table(os.path.join(a.out, "subtomograms.tsv"), table)
        print(f"wrote {len(rows)} sub-tomograms of {a.box}^3 to {a.out} in {time.time() - t0:.1f} s")
        return 0
    kw = dict(shape=tuple(a.shape), snr=a.snr, species=a.species, voxel_size=a.voxel_size,
              tilt_range=a.tilt_range, tilt_step=a.tilt_step, crowders=a.crowders)
    if a.no_distractors:
        kw.update(crowders=0, vesicles=0, membranes=0, gold=0)
    for flag, value in (("--gradient", a.gradient), ("--ice-blobs", a.ice_blobs), ("--empty-ice", a.empty_ice)):
        if value < 0:
            raise InputError(f"{flag}: {value} must be 0 or more")
    if not 0 <= a.carbon_edge < 1:
        raise InputError(f"--carbon-edge: {a.carbon_edge} must be a fraction of y in [0, 1)")
    art = {"gradient": a.gradient, "carbon_edge": a.carbon_edge, "ice_blobs": a.ice_blobs,
           "empty_ice": a.empty_ice, "invert": a.invert}
    man = write_simulation(a.out, n_tomograms=a.n_tomograms, seed=a.seed,
                           artefacts=art if any(art.values()) else None, **kw)
    for t in man["tomograms"]:
        counts = ", ".join(f"{k} {v['count']}" for k, v in t["species"].items())
        print(f"{t['name']}: {counts} particles; {t['seconds']} s")
    print("diameters (voxels): " + ",".join(f"{k}={v}" for k, v in man["diameters"].items()))
    print(f"wrote {a.n_tomograms} tomogram(s) to {a.out} in {time.time() - t0:.1f} s")
    return 0


def cmd_masks(a):
    from .formats.readers import read_table
    from .formats.table import parse_diameters
    from .masks import label_mask
    from .formats.mrc import read_volume, write_volume
    data, voxel_size = read_volume(a.tomogram)  # validates the file (exists, 3D, finite)
    shape = data.shape
    del data
    table = read_table(a.coords, a.format)
    table.check_inside(shape, a.coords)
    diam = parse_diameters(a.diameters)
    mask = label_mask(shape, table, diam, a.type)
    write_volume(a.out, mask, voxel_size)
    n = int((mask > 0).sum())
    print(f"{a.out}: {a.type} mask for {len(table)} particles, {n} labelled voxels "
          f"({100.0 * n / mask.size:.2f}% of the volume)")
    return 0


def _user_session(text, what):
    user, _, session = text.partition(":")
    if not user:
        raise InputError(f"--{what}: '{text}' is not USER[:SESSION] (copick picks)")
    return user, session or None


def _evaluate_copick(a):
    """--pred / --ref as copick USER[:SESSION] of each run: picking figures pooled over the runs,
    or the challenge's score."""
    from .formats.copick_project import object_radii, object_weights, read_picks
    from .formats.table import parse_diameters
    from .metrics import challenge_score, evaluate_tomograms
    if len(a.pred) != 1 or len(a.ref) != 1:
        raise InputError("--pred, --ref: with --copick-config each is one USER[:SESSION]")
    pu, ps = _user_session(a.pred[0], "pred")
    ru, rs = _user_session(a.ref[0], "ref")
    root, runs = _copick_runs(a, a.runs)
    pairs = {r.name: (read_picks(r, a.voxel_spacing, pu, ps), read_picks(r, a.voxel_spacing, ru, rs)) for r in runs}
    if not any(len(ref) for _, ref in pairs.values()):
        raise InputError(f"--ref: no picks of user {ru}, session {rs or 'any'} in {a.copick_config}")
    radii = {k: v / a.voxel_spacing for k, v in object_radii(root).items() if v}
    radii.update({k: d / 2.0 for k, d in parse_diameters(a.diameters).items()})
    if a.metric == "challenge":
        return challenge_score(pairs, radii, object_weights(root))
    diam = {k: 2.0 * v for k, v in radii.items()}
    return evaluate_tomograms(pairs, diam, radius_frac=a.radius_frac, radius=a.radius)


def cmd_evaluate(a):
    from .formats.readers import read_table
    from .formats.table import parse_diameters
    from .metrics import challenge_score, evaluate, evaluate_tomograms
    from .formats.mrc import read_volume
    if a.copick_config:
        return _print_json(a, _evaluate_copick(a))
    if len(a.pred) != len(a.ref):
        raise InputError(f"--pred: {len(a.pred)} tables for {len(a.ref)} reference tables (--ref): give one per "
                         f"tomogram, in the same order")
    preds = [read_table(p, allow_empty=True) for p in a.pred]
    refs = [read_table(r) for r in a.ref]
    diam = parse_diameters(a.diameters)
    if a.radius is None and not diam:
        raise InputError("--diameters: needed to turn --radius-frac into voxels (or give --radius)")
    occ = read_volume(a.occupancy, dtype="int32")[0] if a.occupancy else None
    if a.metric == "challenge":
        if not diam:
            raise InputError("--diameters: the challenge's metric needs each class's diameter (name=VOX,...)")
        runs = {f"{i}": (p, r) for i, (p, r) in enumerate(zip(preds, refs))}
        return _print_json(a, challenge_score(runs, {k: d / 2.0 for k, d in diam.items()}))
    if len(refs) == 1:
        res = evaluate(preds[0], refs[0], diam, radius_frac=a.radius_frac, radius=a.radius, occupancy=occ)
    else:
        if occ is not None:
            raise InputError("--occupancy: one occupancy map goes with one --pred / --ref pair")
        names = [os.path.splitext(os.path.basename(r))[0] for r in a.ref]
        if len(set(names)) < len(names):
            names = [f"{i + 1}_{n}" for i, n in enumerate(names)]     # same stems in other folders
        res = evaluate_tomograms(dict(zip(names, zip(preds, refs))), diam, radius_frac=a.radius_frac,
                                 radius=a.radius)
    return _print_json(a, res)


def _print_json(a, res):
    text = json.dumps(res, indent=1)
    if a.out:
        from .fileio import atomic_text
        atomic_text(a.out, text + "\n")
    print(text)
    return 0


def _iter_pairs(tomos, coords, fmt, what):
    """(tomogram, coordinate file, volume, voxel size, table) per pair, read one pair at a
    time, the table checked against its volume."""
    from .formats.readers import read_table
    from .formats.mrc import read_volume
    if len(tomos) != len(coords):
        raise InputError(f"--{what}coords: {len(coords)} coordinate files for {len(tomos)} tomograms")
    for t, c in zip(tomos, coords):
        v, s = read_volume(t)
        tab = read_table(c, fmt)
        tab.check_inside(v.shape, c)
        yield t, c, v, s, tab


def _read_pairs(tomos, coords, fmt, what):
    vols, tables, vs = [], [], []
    for _, _, v, s, tab in _iter_pairs(tomos, coords, fmt, what):
        vols.append(v)
        tables.append(tab)
        vs.append(s)
    return vols, tables, vs


def cmd_train(a):
    import numpy as np
    from .formats.table import parse_diameters
    from .network import COORD_CONV
    from .training.config import float_or_auto, int_or_auto
    from .training import train
    diam = parse_diameters(a.diameters)
    patch, batch = int_or_auto(a.patch, "--patch"), int_or_auto(a.batch, "--batch")   # before reading
    lr = float_or_auto(a.lr, "--lr")
    if a.copick_config:
        vols, tables, vs, vvols, vtables, _vs, diam = _train_copick(a, diam)
    else:
        if not a.tomograms or not a.coords:
            raise InputError("--tomograms, --coords: required (or give --copick-config)")
        if not diam:
            raise InputError("--diameters: required: name=VOX,... for each class")
        vols, tables, vs = _read_pairs(a.tomograms, a.coords, a.format, "")
        vvols, vtables, _vs = _read_pairs(a.val_tomograms, a.val_coords, a.format, "val-")
    classes = [k for k in diam if k != "*"] or sorted({c for t in tables for c in t.class_names()})
    for t in tables + vtables:
        if t.classes is None:   # a table without class column is one class
            if len(classes) != 1:
                raise InputError("--coords: a table without class column needs exactly one class in --diameters")
            t.classes = np.asarray([classes[0]] * len(t), dtype=object)
    names = list(a.tomograms) + list(a.val_tomograms) or list(a.runs) + list(a.val_runs)
    sizes = _training_voxel_sizes(names, list(vs) + list(_vs), a.voxel_size)
    vols, tables, vvols, vtables = _same_sampling(names, vols + vvols, tables + vtables, sizes, len(vols))
    if a.invert:
        vols, vvols = [-v for v in vols], [-v for v in vvols]
    vs = sizes
    channels = tuple(int(c) for c in a.channels.split(","))
    epochs = a.epochs or (1000 if a.minutes else 20)
    train(vols, tables, classes, diam, a.out, vvols, vtables, voxel_size=vs[0], epochs=epochs,
          iters_per_epoch=a.iters_per_epoch, minutes=a.minutes, patch=patch, batch=batch, channels=channels,
          loss=a.loss, mask_type=a.mask, lr=lr, seed=a.seed, device=device_list(a, single=True),
          resume=a.resume, tile=a.tile, pad=a.pad, log=lambda m: print(m, flush=True), bin=a.bin, flips=a.flips,
          min_mask=a.min_mask, labels=a.labels, prior=a.prior,
          expected_particles=a.expected_particles, coord_conv=COORD_CONV[a.coord_conv], ema=a.ema,
          consistency=a.consistency, mask_diameter=a.mask_diameter, network=a.network,
          patch_depth=a.patch_depth, contrastive=a.contrastive, rotation=a.rotation,
          precision=a.precision, init=a.init,
          max_mask_ratio=a.max_mask_ratio, normalisation=a.normalisation)
    print(f"model written to {a.out}")
    return 0


def _given_voxel_size(value):
    """--voxel-size as given (None when not), refused unless positive."""
    if value is not None and not value > 0:
        raise InputError(f"--voxel-size: {value:g} must be a positive number of Å")
    return None if value is None else float(value)


def _training_voxel_sizes(names, header_sizes, given):
    """Each training / validation tomogram's voxel size: --voxel-size, else its header's (0 or
    1 Å in a header is no voxel size: a one-line error asks for --voxel-size)."""
    from .formats.mrc import usable_voxel_size
    if _given_voxel_size(given) is not None:
        return [float(given)] * len(names)
    for path, v in zip(names, header_sizes):
        if not usable_voxel_size(v):
            raise InputError(f"{path}: voxel size is {v or 0:g} Å in the MRC header; give --voxel-size (or set it, "
                             f"e.g. 'alterheader -del' in IMOD) so the model records its sampling")
    return [float(v) for v in header_sizes]


def _same_sampling(names, volumes, tables, sizes, n_train):
    """Every tomogram at the first one's voxel size (resampled, its table scaled) when they
    differ by more than 2 %; returns (train volumes, train tables, val volumes, val tables)."""
    from .volume import resample
    target = sizes[0]
    for i, (name, v) in enumerate(zip(names, sizes)):
        if abs(v - target) / target > 0.02:
            print(f"{name}: {v:g} Å/voxel: resampled to {target:g} Å/voxel, the first tomogram's (the diameters "
                  f"are in its voxels)", flush=True)
            volumes[i] = resample(volumes[i], v, target)
            tables[i] = tables[i].scaled(v / target)
    return volumes[:n_train], tables[:n_train], volumes[n_train:], tables[n_train:]


def _train_copick(a, diam):
    """Training and validation runs of a copick project; the diameters default to twice each
    picked object's radius in the configuration."""
    from .formats.copick_project import object_radii, open_project
    if a.tomograms or a.coords or a.val_tomograms:
        raise InputError("--tomograms: give MRC tomograms and tables or --copick-config, not both")
    if not a.runs:
        raise InputError("--runs: name the training runs of the copick project (and --val-runs the validation ones)")
    root = open_project(a.copick_config)
    radii = object_radii(root)
    unknown = [c for c in diam if c != "*" and c not in radii]
    if unknown:
        raise InputError(f"--diameters: no object {', '.join(unknown)} in {a.copick_config} "
                         f"(its particle objects: {', '.join(sorted(radii)) or 'none'})")
    train = _copick_pairs(a, root, a.runs)
    val = _copick_pairs(a, root, a.val_runs, "val-") if a.val_runs else []
    if not diam:
        picked = sorted({c for _, _, _, t in train for c in t.class_names()})
        missing = [c for c in picked if not radii.get(c)]
        if missing:
            raise InputError(f"--diameters: the copick objects {', '.join(missing)} have no radius in "
                             f"{a.copick_config}: give name=VOX for each class")
        diam = {c: round(2.0 * radii[c] / a.voxel_spacing, 2) for c in picked}

    def of_classes(t):      # picks of objects the model is not trained on are left out
        return t if "*" in diam else t.subset([i for i, c in enumerate(t.classes) if c in diam])

    return ([v for _, v, _, _ in train], [of_classes(t) for _, _, _, t in train], [s for _, _, s, _ in train],
            [v for _, v, _, _ in val], [of_classes(t) for _, _, _, t in val], [s for _, _, s, _ in val], diam)


def cmd_pick(a):
    from concurrent.futures import ThreadPoolExecutor
    from .modelfile import load_model
    # --device cuda:0,cuda:1: one model per device, tomograms dealt out in turn
    devices = device_list(a)
    if a.copick_config and a.tomograms:
        raise InputError("--tomograms: give MRC tomograms or --copick-config, not both")
    if not a.copick_config and not a.tomograms:
        raise InputError("--tomograms: required (or give --copick-config)")
    _given_voxel_size(a.voxel_size)
    if a.mask and len(a.mask) != len(a.tomograms):
        raise InputError(f"--mask: {len(a.mask)} masks for {len(a.tomograms)} tomograms (--tomograms)")
    # the model first: its binning says how to read the tomograms
    models = []
    for i, dev in enumerate(devices):
        # (no voxel size: a tomogram at another sampling is resampled to the model's, _network_volume)
        model, meta = load_model(a.model, dev, voxel_size=None,
                                 warn=(lambda m: print(m, file=sys.stderr)) if i == 0 else (lambda m: None))
        models.append(model)
    keep = None
    if a.classes:
        keep = [c.strip() for c in a.classes.split(",") if c.strip()]
        unknown = [c for c in keep if c not in meta["classes"]]
        if unknown:
            raise InputError(f"--classes: the model {a.model} was not trained on {', '.join(unknown)} "
                             f"(its classes: {', '.join(meta['classes'])})")
    if a.copick_config:
        return _pick_copick(a, models[0], meta, devices[0], keep)
    if len(devices) == 1:
        for path in a.tomograms:
            _pick_one(a, path, models[0], meta, devices[0], keep)
        return 0
    if len(set(devices)) < len(devices) and devices[0] == "cpu":
        import torch
        torch.set_num_threads(max(1, torch.get_num_threads() // len(devices)))    # share the cores
    jobs = [[p for j, p in enumerate(a.tomograms) if j % len(devices) == k] for k in range(len(devices))]

    def work(k):
        for path in jobs[k]:
            _pick_one(a, path, models[k], meta, devices[k], keep, quiet=True)

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        for f in [pool.submit(work, k) for k in range(len(devices))]:
            f.result()          # an error in any worker ends the command with its one line
    return 0


def _pick_copick(a, model, meta, device, keep):
    """Pick every run of a copick project: OUT_DIR/<run>.tsv, and the picks back into the
    project as --out-user / --out-session (an object the configuration lacks is added with
    the model's radius)."""
    from .formats.copick_project import read_tomogram, write_picks
    root, runs = _copick_runs(a, a.runs)
    radii = {c: d / 2.0 * a.voxel_spacing for c, d in (meta.get("diameters") or {}).items()}
    for run in runs:
        full, vs = read_tomogram(run, a.voxel_spacing, a.tomo_type)
        vol, shape, scale = _network_volume(f"run {run.name}", meta, vs, full=full)
        table = _pick_volume(a, run.name, vol, vs, shape, model, meta, device, keep, scale=scale,
                             specimen=_z_range(a.z_range, shape[0], f"run {run.name}"))
        added = write_picks(root, a.copick_config, run, table, a.voxel_spacing, a.out_user, a.out_session, radii)
        print(f"{a.copick_config}: run {run.name}: {len(table)} picks written as user {a.out_user}, session "
              f"{a.out_session}" + (f"; objects added to the configuration: {', '.join(added)}" if added else ""))
    return 0


def _score_map(probs, meta, full_shape, scale):
    """1 - background probability at the tomogram's voxels (upsampled from the network's, and
    resampled back when the tomogram was resampled to the model's voxel size)."""
    import numpy as np
    from .picking.tiles import upsample
    from .volume import resample
    factor = int(meta.get("bin", 1))
    if np.all(np.asarray(scale) == 1.0):
        return upsample(1.0 - probs[0], factor, full_shape)
    own = [int(n * factor) for n in probs.shape[1:]]
    score = resample(upsample(1.0 - probs[0], factor, own), 1.0, 1.0 / float(np.mean(scale)))
    out = np.zeros(full_shape, np.float32)
    z, y, x = (min(a, b) for a, b in zip(full_shape, score.shape))
    out[:z, :y, :x] = score[:z, :y, :x]
    return out


def _copick_runs(a, names):
    from .formats.copick_project import open_project, select_runs
    root = open_project(a.copick_config)
    return root, select_runs(root, names, a.copick_config)


def _copick_pairs(a, root, names, what=""):
    """(run name, volume, voxel size, picks table) of each run of ``root`` named (every run
    when none); a run without picks is refused."""
    from .formats.copick_project import read_run, select_runs
    out = []
    for run in select_runs(root, names, a.copick_config):
        vol, vs, tab = read_run(run, a.voxel_spacing, a.tomo_type, a.picks_user, a.picks_session)
        if not len(tab):
            raise InputError(f"--{what}runs: run {run.name} has no picks of user {a.picks_user or 'any'}, session "
                             f"{a.picks_session or 'any'} in {a.copick_config}")
        out.append((run.name, vol, vs, tab))
    return out


def _tomogram_voxel_size(path, header, given, meta):
    """The voxel size picking uses: --voxel-size (checked by cmd_pick), else a usable header's,
    else the model's (said in the log), else a one-line error asking for --voxel-size."""
    from .formats.mrc import usable_voxel_size
    if given is not None:
        return float(given)
    if usable_voxel_size(header):
        return float(header)
    if meta.get("voxel_size"):
        print(f"{path}: no voxel size in the header ({header or 0:g} Å): taken as the model's, "
              f"{meta['voxel_size']:g} Å (--voxel-size gives it)", flush=True)
        return float(meta["voxel_size"])
    raise InputError(f"{path}: the header has no usable voxel size ({header or 0:g} Å) and the model records "
                     f"none: give --voxel-size")


def _network_volume(path, meta, vs, full=None):
    """``(binned volume, full shape, scale)`` of a tomogram for the model: read and binned a
    few planes at a time (the full-size tomogram never in memory), or, more than 2 % off the
    model's voxel size, resampled to it first (``scale`` = model / tomogram voxel size: a
    position in the resampled voxels times it is one in the tomogram's). ``full``: the
    tomogram already in memory."""
    from .formats.mrc import read_binned, read_volume
    from .volume import bin_volume, resample, resample_scales
    factor = int(meta.get("bin", 1))
    model_vs = meta.get("voxel_size")
    if model_vs and abs(vs - model_vs) / model_vs > 0.02:
        if full is None:
            full, _ = read_volume(path)
        print(f"{path}: {vs:g} Å/voxel, the model {model_vs:g}: resampled to the model's voxel size, picks "
              f"mapped back to the tomogram's voxels", flush=True)
        return bin_volume(resample(full, vs, model_vs), factor), full.shape, resample_scales(full.shape, vs, model_vs)
    if full is not None:
        return bin_volume(full, factor), full.shape, 1.0
    vol, _, full_shape = read_binned(path, factor)
    return vol, full_shape, 1.0


def _z_range(text, nz, path):
    """--z-range as pick_tomogram's ``specimen``: "auto", None (all) or (z0, z1)."""
    if text in ("auto", "all"):
        return None if text == "all" else "auto"
    try:
        z0, z1 = (float(v) for v in text.split("-"))
    except ValueError:
        raise InputError(f"--z-range: '{text}' is not auto, all or Z0-Z1") from None
    if not 0 <= z0 < z1 <= nz:
        raise InputError(f"--z-range: {text} lies outside the {nz} planes of {path} (0-{nz})")
    return z0, z1


def _mask_for(a, index, path, shape):
    if not a.mask:          # (one mask per tomogram: checked by cmd_pick)
        return None
    from .formats.mrc import read_volume
    mask, _ = read_volume(a.mask[index])
    if mask.shape != tuple(shape):
        raise InputError(f"--mask: {a.mask[index]} is {'x'.join(map(str, mask.shape))} voxels (z y x), the "
                         f"tomogram {path} {'x'.join(map(str, shape))}")
    return mask


def _pick_one(a, path, model, meta, device, keep, quiet=False):
    """Pick one tomogram and write DIR/<stem>.tsv (and the score map)."""
    from .formats.mrc import read_shape, read_voxel_size
    vs = _tomogram_voxel_size(path, read_voxel_size(path), a.voxel_size, meta)
    shape = read_shape(path)
    specimen = _z_range(a.z_range, shape[0], path)          # checked before the work
    mask = _mask_for(a, a.tomograms.index(path), path, shape)
    vol, full_shape, scale = _network_volume(path, meta, vs)
    stem = os.path.splitext(os.path.basename(path))[0]
    _pick_volume(a, stem, vol, vs, full_shape, model, meta, device, keep, quiet, source=path, scale=scale,
                 specimen=specimen, mask=mask)


def _pick_volume(a, stem, vol, vs, full_shape, model, meta, device, keep, quiet=False, source=None, scale=1.0,
                 specimen="auto", mask=None):
    """Pick one (binned) tomogram and write DIR/<stem>.tsv, the --format file and the score
    map; returns the picks. ``scale`` (per axis x, y, z, or one number): positions in the
    voxels of the volume ``vol`` was binned from times it are the tomogram's (resampled to
    the model's voxel size)."""
    import numpy as np
    from .formats.writers import format_suffix, write_format, write_table
    from .formats.mrc import write_volume
    from .picking.tomogram import keep_in_mask, pick_tomogram
    from .picking.tiles import upsample
    t0 = time.time()
    if a.invert:
        vol = -vol
    scale = np.broadcast_to(np.asarray(scale, dtype=float), (3,))      # per axis x, y, z
    resampled = bool(np.any(scale != 1.0))
    if isinstance(specimen, tuple):
        specimen = (specimen[0] / scale[2], specimen[1] / scale[2])
    try:
        table, probs = pick_tomogram(model, meta, vol, device=device, threshold=a.threshold, tile=a.tile,
                                     pad=a.pad, mode=a.mode, progress=not quiet,
                                     log=None if quiet else (lambda m: print(m, flush=True)),
                                     flips=a.flips, border=a.border, prebinned=True,
                                     precision=a.precision, specimen=specimen, check_polarity=a.polarity_check)
    except InputError as exc:
        raise InputError(f"{source or stem}: {exc}") from None
    if resampled:
        table.xyz = table.xyz * scale
    table = keep_in_mask(table, mask)       # in the tomogram's voxels, after any resampling
    if keep is not None:
        table = table.subset([i for i, c in enumerate(table.classes) if c in keep])
    os.makedirs(a.out_dir, exist_ok=True)     # only once there is something to write
    write_table(os.path.join(a.out_dir, stem + ".tsv"), table)
    if a.format != "tsv":
        write_format(os.path.join(a.out_dir, stem + format_suffix(a.format)), table, a.format, stem, full_shape, vs)
    if a.score_map:
        write_volume(os.path.join(a.out_dir, stem + "_score.mrc"),
                     _score_map(probs, meta, full_shape, scale if resampled else 1.0), vs)
    counts = ", ".join(f"{c} {int((table.classes == c).sum())}" for c in (keep or meta["classes"]))
    print(f"{source or stem}: {len(table)} particles ({counts}) in {time.time() - t0:.1f} s [{device}]", flush=True)
    return table


def _write_boxes(folder, stack, voxel_size):
    """Each sub-volume of ``stack`` as ``folder/particle_NNNNNN.mrc`` (1-based, table order);
    returns the file names relative to ``folder``."""
    from .formats.mrc import write_volume
    os.makedirs(folder, exist_ok=True)
    names = [f"particle_{i:06d}.mrc" for i in range(1, len(stack) + 1)]
    for name, box in zip(names, stack):
        write_volume(os.path.join(folder, name), box, voxel_size or 1.0)
    return names


def cmd_classify(a):
    import numpy as np
    from .classification.boxes import normalize_box
    from .classification.disca import disca_on_boxes
    from .fileio import atomic_text
    from .formats.table import CoordTable
    from .formats.writers import write_table
    k_range = _check_classify_options(a)
    stack, tables, vs = _classify_inputs(a)
    if len(stack) <= max(2, k_range.start):
        raise InputError(f"--coords: {len(stack)} picks are too few to cluster into at least {k_range.start} "
                         f"classes (--k-range {a.k_range})")
    box_files = _write_boxes(a.boxes_dir, stack, vs) if a.boxes_dir else None
    res = disca_on_boxes(stack, a.bin, a.contrast_weight, a.split_separation, k_range=k_range, iterations=a.iterations,
                         epochs=a.epochs, seed=a.seed, pca_dim=a.pca_dim, device=device_list(a, single=True),
                         network_from=a.network_from,
                         log=lambda m: print(m, flush=True))
    stack = normalize_box(stack)
    labels = res["labels"]
    out = CoordTable(np.concatenate([t.xyz for t in tables]),
                     None if any(t.classes is None for t in tables) else np.concatenate([t.classes for t in tables]),
                     None if any(t.scores is None for t in tables) else np.concatenate([t.scores for t in tables]),
                     {k: np.concatenate([t.extra[k] for t in tables]) for k in tables[0].extra
                      if all(k in t.extra for t in tables)})
    if box_files is not None:
        out.extra["box_file"] = np.asarray(box_files, dtype=object)
    out.extra.update(cluster=labels + 1, posterior=np.round(res["posterior"], 4),
                     embed_x=np.round(res["embedding"][:, 0], 4), embed_y=np.round(res["embedding"][:, 1], 4))
    avg_dir = a.averages or os.path.splitext(a.out)[0] + "_averages"
    resolution = _class_averages(a, stack, labels, vs, avg_dir, out)
    history = [{k: v for k, v in h.items()} for h in res["history"]]
    atomic_text(os.path.splitext(a.out)[0] + "_disca.json", json.dumps(
        {"k": res["k"], "iteration": res["iteration"] + 1, "ddbi": res["ddbi"], "history": history,
         "sizes": np.bincount(labels).tolist(), "aligned": bool(a.align), "resolution": resolution,
         "density_splits": [{"class": c + 1, "new_class": n + 1, "sizes": sz, "separation": round(d, 3)}
                            for c, n, sz, d in res.get("splits", [])]}, indent=1) + "\n")
    write_table(a.out, out)
    if a.boxes_dir and a.box % 2:
        print(f"{a.boxes_dir}: no particles.star: RELION takes even box sizes only (--box {a.box})")
    elif a.boxes_dir:
        from .formats.relion_subtomo import write_particles_star
        star = write_particles_star(os.path.join(a.boxes_dir, "particles.star"), out, a.box, vs,
                                    tilt_range=a.tilt_range)
        print(f"{star}: the boxes with their classes and alignment for RELION (relion_reconstruct --3d_rot)")
    sizes = ", ".join(f"{i + 1}: {n}" for i, n in enumerate(np.bincount(labels)))
    print(f"{a.out}: {len(labels)} particles in {res['k']} classes ({sizes}); averages in {avg_dir}")
    return 0


def _check_classify_options(a):
    k_range = _k_range(a.k_range)
    if a.bin < 1:
        raise InputError(f"--bin: {a.bin} must be >= 1")
    if a.pca_dim < 1:
        raise InputError(f"--pca-dim: {a.pca_dim} must be >= 1")
    if a.contrast_weight < 0:
        raise InputError(f"--contrast-weight: {a.contrast_weight} must be >= 0")
    if a.split_separation < 0:
        raise InputError(f"--split-separation: {a.split_separation} must be >= 0 (0: no split)")
    if not 0 < a.tilt_range <= 90:
        raise InputError(f"--tilt-range: {a.tilt_range} must be an angle in (0, 90] degrees")
    if not 5 <= a.align_step <= 60:
        raise InputError(f"--align-step: {a.align_step} must be between 5 and 60 degrees")
    return k_range


def _classify_inputs(a):
    """The boxes in the tomograms' units (each tomogram normalised once: the contrast
    features need them; the shape features and the averages normalise each box), their
    tables (with the tomogram's file stem) and the voxel size."""
    import numpy as np
    from .classification.boxes import extract_subvolumes
    from .formats.mrc import read_stack
    from .formats.readers import read_table
    from .formats.table import CoordTable
    if a.subtomograms:
        if a.tomograms or a.coords:
            raise InputError("--subtomograms: give either a stack or --tomograms with --coords, not both")
        stack, vs = read_stack(a.subtomograms)
        table_path = os.path.splitext(a.subtomograms)[0] + ".tsv"
        table = read_table(table_path) if os.path.exists(table_path) else CoordTable(np.zeros((len(stack), 3)))
        if len(table) != len(stack):
            raise InputError(f"{table_path}: {len(table)} rows for {len(stack)} boxes in {a.subtomograms}")
        return np.asarray(stack, dtype=np.float32), [table], vs
    if not a.tomograms and not a.copick_config:
        raise InputError("--tomograms: required (or give --subtomograms or --copick-config)")
    if a.copick_config:
        from .formats.copick_project import open_project
        pairs = ((name, f"{a.copick_config} run {name}", vol, vs, tab) for name, vol, vs, tab in
                 _copick_pairs(a, open_project(a.copick_config), a.runs))
    else:
        pairs = _iter_pairs(a.tomograms, a.coords, a.format, "")
    stacks, tables, vs = [], [], None
    for t, c, vol, vs, tab in pairs:
        if a.box > min(vol.shape):
            raise InputError(f"--box: {a.box} voxels is larger than the tomogram {t} "
                             f"({'x'.join(map(str, vol.shape))}, z y x)")
        stack, kept, outside = extract_subvolumes(vol, tab.xyz, a.box, a.out_of_volume, per_box=False)
        if outside:
            what = "left out" if a.out_of_volume == "skip" else "padded by mirroring the tomogram"
            print(f"{c}: {outside} of {len(tab)} boxes reach outside {t}: {what}")
        tab = tab.subset(kept)
        tab.extra["tomogram"] = np.asarray([os.path.splitext(os.path.basename(t))[0]] * len(tab), dtype=object)
        stacks.append(stack)
        tables.append(tab)
    return np.concatenate(stacks), tables, vs


def _class_averages(a, stack, labels, vs, avg_dir, out):
    """Each class's average (aligned with --align, with the alignment of each member added to
    ``out`` and the half averages written beside), and the per-class FSC resolution."""
    import numpy as np
    from .classification.alignment import align_class
    from .classification.boxes import class_averages
    from .formats.mrc import write_volume
    os.makedirs(avg_dir, exist_ok=True)
    n = len(labels)
    euler, shifts, scores = np.zeros((n, 3)), np.zeros((n, 3)), np.full(n, np.nan)
    resolution = []
    plain = class_averages(stack, labels)
    for c in range(len(plain)):
        members = np.flatnonzero(labels == c)
        avg = plain[c]
        if a.align and len(members) >= 2:
            r = align_class(stack[members], tilt_range=a.tilt_range, voxel_size=vs or 1.0,
                            coarse_step=a.align_step, fine_step=a.align_step / 3, seed=a.seed,
                            log=lambda m: print(m, flush=True))
            avg = r["average"]
            euler[members], shifts[members], scores[members] = r["euler"], r["shifts"], r["scores"]
            for h in ("half1", "half2"):
                write_volume(os.path.join(avg_dir, f"class_{c + 1:02d}_{h}.mrc"), r[h], vs or 1.0)
            resolution.append({"class": c + 1, "members": int(len(members)),
                               "fsc_0143_A": round(r["resolution_0143"], 2), "fsc_05_A": round(r["resolution_05"], 2),
                               "fsc": [round(float(v), 4) for v in r["fsc"]]})
        write_volume(os.path.join(avg_dir, f"class_{c + 1:02d}.mrc"), avg, vs or 1.0)
    if a.align:
        for k, col in enumerate(("rot", "tilt", "psi")):
            out.extra[col] = np.round(euler[:, k], 2)
        for k, col in enumerate(("shift_x", "shift_y", "shift_z")):
            out.extra[col] = np.round(shifts[:, k], 2)
        out.extra["align_score"] = np.round(scores, 4)
    return resolution


def cmd_model_info(a):
    from .modelfile import describe_model
    from .modelinfo import read_model_info
    if a.write:
        describe_model(a.model)
    info = read_model_info(a.model)
    summary = {k: info.get(k) for k in ("classes", "diameters", "voxel_size", "bin", "thresholds", "best_val_f1",
                                        "labels", "network", "precision", "input_norm", "polarity_skew",
                                        "versions")}
    summary["epochs"] = len(info.get("history") or [])
    print(json.dumps(summary, indent=1))
    return 0


def cmd_convert(a):
    from .formats.mrc import read_shape, read_voxel_size, usable_voxel_size
    from .formats.readers import read_table
    from .formats.writers import write_format
    shape, vs = None, _given_voxel_size(a.voxel_size)
    if a.tomogram:
        shape = read_shape(a.tomogram)
        vs = vs or read_voxel_size(a.tomogram)
    in_angstrom = a.to in ("relion5", "copick")
    if in_angstrom and shape is None:
        raise InputError(f"--tomogram: {a.to} coordinates are in Å from the tomogram: give the tomogram (MRC)")
    if in_angstrom and not usable_voxel_size(vs):
        raise InputError(f"--voxel-size: {a.tomogram} has no usable voxel size in its header ({vs:g} Å): "
                         f"give it (Å) for {a.to}")
    table = read_table(a.input, a.format, tomo_shape=shape, pixel_size=vs)
    if shape is not None:
        table.check_inside(shape, a.input)
    name = a.tomo_name or (os.path.splitext(os.path.basename(a.tomogram))[0] if a.tomogram else "tomogram")
    written = write_format(a.out, table, a.to, name, shape, vs)
    print(f"{', '.join(written)}: {len(table)} particles ({a.to})")
    return 0


def cmd_copick_read(a):
    from .formats.copick_project import export_runs
    root, runs = _copick_runs(a, a.runs)
    man = export_runs(root, runs, a.out_dir, a.voxel_spacing, a.tomo_type, a.picks_user, a.picks_session)
    for r in man["runs"]:
        print(f"{a.out_dir}/{r['run']}.mrc: {'x'.join(map(str, r['shape']))} voxels, {r['picks']} picks")
    return 0


def cmd_copick_write(a):
    from .formats.copick_project import write_picks
    from .formats.readers import read_table
    from .formats.table import parse_diameters
    names = a.runs or [os.path.splitext(os.path.basename(c))[0] for c in a.coords]
    if len(names) != len(a.coords):
        raise InputError(f"--runs: {len(names)} runs for {len(a.coords)} tables (--coords)")
    if a.voxel_spacing <= 0:
        raise InputError(f"--voxel-spacing: {a.voxel_spacing} must be positive")
    root, runs = _copick_runs(a, names)          # every run and table checked before anything is written
    tables = [read_table(c, a.format, pixel_size=a.voxel_spacing, run_name=n) for c, n in zip(a.coords, names)]
    radii = {k: d / 2.0 * a.voxel_spacing for k, d in parse_diameters(a.diameters).items()}
    for run, table, path in zip(runs, tables, a.coords):
        added = write_picks(root, a.copick_config, run, table, a.voxel_spacing, a.out_user, a.out_session, radii)
        print(f"{path}: {len(table)} picks into run {run.name} as user {a.out_user}, session {a.out_session}"
              + (f"; objects added: {', '.join(added)}" if added else ""))
    return 0


COMMANDS = {"simulate": cmd_simulate, "masks": cmd_masks, "evaluate": cmd_evaluate,
            "train": cmd_train, "pick": cmd_pick, "classify": cmd_classify, "convert": cmd_convert,
            "copick-read": cmd_copick_read, "copick-write": cmd_copick_write, "model-info": cmd_model_info}


def _report_error(line):
    """Also write the error line where a caller (a Scipion protocol) asked for it."""
    path = os.environ.get("PICKER3D_ERROR_FILE")
    if path:
        try:
            with open(path, "w") as fh:
                fh.write(line + "\n")
        except OSError:
            pass


def _fail(msg):
    line = f"picker3d: error: {msg}"
    print(line, file=sys.stderr)
    _report_error(line)
    return 2


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except InputError as exc:     # a removed flag (_Removed)
        return _fail(exc)
    try:
        return COMMANDS[args.command](args)
    except (InputError, OSError, MemoryError) as exc:
        # bad input, a full disk, a missing permission, no memory: one line, no traceback
        if os.environ.get("PICKER3D_DEBUG"):
            raise
        if isinstance(exc, OSError) and not isinstance(exc, InputError):
            what = f"{exc.filename}: {exc.strerror}" if exc.filename else (exc.strerror or str(exc))
            msg = f"{what} (while running '{args.command}')"
        elif isinstance(exc, MemoryError):
            msg = f"out of memory while running '{args.command}'"
        else:
            msg = str(exc)
        return _fail(msg)
    except KeyboardInterrupt:
        print("picker3d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
