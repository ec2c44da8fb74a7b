"""The options of ``picker3d classify`` / :func:`picker3d.engine.classification.disca_on_boxes`
/ the classify protocol, each declared once (:class:`Option`)."""
from .base import BOOL, SEED, Option, at_least, between, k_range, options_class

INPUTS, K, A, C, V = "inputs", "clustering", "class averages", "compute", "advanced"
GROUPS = (INPUTS, K, A, C, V)


def _k_range(v, _values):
    return None if isinstance(v, range) else "must be MIN-MAX"


def _box(v, values):
    if v is not None and v // max(int(values.get("bin") or 1), 1) < 11:
        return f"{v} voxels binned by {values.get('bin')} leaves fewer than 11: lower --bin or enlarge the box"
    return None


CLASSIFY_OPTIONS = (
    Option("box", 32, group=INPUTS, check=_box, argparse={"type": int},
           help="sub-volume side in voxels, about 1.3 x the largest diameter (default 32)"),
    Option("out_of_volume", "pad", group=INPUTS, argparse={"choices": ("pad", "skip")},
           help="boxes reaching outside the tomogram: pad by mirroring the tomogram at its edge (default), or "
                "leave them out"),
    Option("k_range", "2-20", group=K, convert=k_range, check=_k_range,
           help="candidate numbers of classes, MIN-MAX (default 2-20)"),
    Option("iterations", 10, group=K, check=at_least(1), argparse={"type": int},
           help="maximum DISCA iterations (default 10)"),
    Option("epochs", 1, group=K, check=at_least(1), argparse={"type": int},
           help="network training passes per iteration (default 1)"),
    Option("bin", 2, group=K, check=at_least(1), argparse={"type": int},
           help="bin the boxes by this factor before clustering (default 2; 1 keeps full detail)"),
    Option("align", True, group=A, argparse=BOOL,
           help="align each class's members to one another (reference-free, missing wedge masked) before "
                "averaging; adds rot tilt psi shift_x shift_y shift_z to the table and the FSC of two half "
                "averages (default on; --no-align: plain averages)"),
    Option("merge", True, group=K, argparse=BOOL,
           help="after clustering, dissolve classes smaller than --min-class-size and merge two classes when a fifth "
                "of one's picks fit the other's aligned average better than their own and the two averages agree "
                "as well as the noisier class's half averages (default on; --no-merge: the clustering's classes)"),
    Option("refine", False, group=K, argparse=BOOL,
           help="after merging, move every pick to the class average it fits best, repeated until fewer than "
                "1 %% move (multi-reference refinement; default off: at SNR 0.05 it lowered the classes' purity)"),
    Option("min_class_size", 0, group=K, check=at_least(0, " (0: max(8, 2 % of the picks))"),
           argparse={"type": int},
           help="classes with fewer members are dissolved, their picks going to the class whose average they "
                "match best (default 0: max(8, 2 %% of the picks))"),
    Option("tilt_range", 60.0, group=A, check=between(0.001, 90, "an angle in degrees in"), argparse={"type": float},
           help="the tomograms' tilt range in degrees (+-), for the missing-wedge mask (default 60)"),
    Option("align_step", 30.0, group=A, check=between(5, 60, "in degrees"), argparse={"type": float},
           help="angular step of the global rotation search in degrees (default 30; a local search at a third "
                "of it follows)"),
    Option("device", "auto", group=C, help="auto (default), cpu, cuda or cuda:N"),
    SEED,
    Option("pca_dim", 8, group=V, check=at_least(1), argparse={"type": int},
           help="PCA components the mixture sees (default 8)"),
    Option("network_from", 1000, group=V, check=at_least(0), argparse={"type": int},
           help="train the DISCA network (YOPO) only from this many picks; fewer are clustered on their radial "
                "density profiles alone (default 1000)"),
    Option("shape_weight", 0.6, group=V, check=at_least(0, " (0: radial profiles only)"), argparse={"type": float},
           help="weight of each box's anisotropy features (spherical-harmonic energies per shell, inertia ratios) "
                "next to its radial density profile; they tell a rod from a globule of the same profile "
                "(default 0.6; 0: radial profiles only)"),
    Option("contrast_weight", 3.0, group=V, check=at_least(0, " (0: shape only)"), argparse={"type": float},
           help="weight of each box's contrast (log std, and density at the centre against the rim, in the "
                "tomogram's units) next to the shape features (default 3; 0: shape only)"),
    Option("split_separation", 3.0, group=V, check=at_least(0, " (0: no split)"), argparse={"type": float},
           help="after clustering, split a class in two where its boxes' centre density is bimodal with two "
                "Gaussians separated by Ashman's D of at least this (default 3; 0: no split)"),
)

ClassifyOptions = options_class(
    "ClassifyOptions", CLASSIFY_OPTIONS,
    "The options of a classification (``ClassifyOptions(k_range=range(2, 9), bin=1, ...)``).")
